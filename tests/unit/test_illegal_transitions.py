"""An illegal transition is refused, logged and counted in
``orderstream_illegal_transitions_total{from_state, to_state}``, wherever it is met: per
order in the submit step, per batch in the worker for anything else."""

from __future__ import annotations

import logging

import pytest
from fakeredis import FakeAsyncRedis

from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.config import load_settings
from executor.infra.metrics import Metrics
from executor.infra.store import Store
from executor.model.order import Context, new_order
from executor.model.states import IllegalTransition
from executor.pipeline.job import Job
from executor.pipeline.services import Services
from executor.pipeline.steps.submit import Submit
from executor.worker import Worker
from producer.contract import (
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    ResultStatus,
    Side,
    WireDecimal,
    encode,
)
from producer.keys import Keys

NOW = 1_700_000_000_000
SAMPLE = "orderstream_illegal_transitions_total"


def counted(metrics: Metrics, current: OrderState, target: OrderState) -> float | None:
    return metrics.registry.get_sample_value(
        SAMPLE, {"from_state": current.value, "to_state": target.value})


class ContradictoryBroker:
    """Fills ``bad`` completely yet calls it cancelled; every other order simply rests."""

    account = "default"

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if client_order_id != "bad":
            return BrokerOrder(client_order_id=client_order_id, broker_order_id="B-ok",
                               symbol=order.symbol, status=BrokerStatus.NEW,
                               quantity=order.quantity)
        fill = Fill(fill_id="f1", price=WireDecimal("100"), quantity=order.quantity)
        return BrokerOrder(client_order_id=client_order_id, broker_order_id="B-bad",
                           symbol=order.symbol, status=BrokerStatus.CANCELLED,
                           quantity=order.quantity, filled_quantity=order.quantity,
                           fills=[fill])


def place_job(client_order_id: str, entry: str) -> Job:
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal("1"), price=WireDecimal("100"))
    order, events = new_order(client_order_id, entry, spec, Context(now=NOW, worker="w1"))
    return Job(entry, {}, NOW, client_order_id=client_order_id, spec=spec, order=order,
               expected_seq=order.seq, events=events)


async def test_a_refused_broker_report_is_counted_and_leaves_only_its_order_pending(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, {"ORDERSTREAM_CONSUMER": "w1"})
    store = Store(FakeAsyncRedis(), Keys(), results_maxlen=100, order_ttl_ms=1000)
    metrics = Metrics()
    svc = Services(settings, store, {"default": ContradictoryBroker()},  # type: ignore[dict-item]
                   metrics, "w1", clock=lambda: NOW)
    bad, good = place_job("bad", f"{NOW}-0"), place_job("good", f"{NOW}-1")
    assert bad.order is not None
    before = encode(bad.order)

    with caplog.at_level(logging.ERROR):
        await Submit(svc)([bad, good])

    assert counted(metrics, OrderState.FILLED, OrderState.CANCELLED) == 1
    assert "illegal transition filled -> cancelled" in caplog.text
    assert bad.result is None and encode(bad.order) == before  # pending, nothing applied
    assert good.result is not None and good.result.status is ResultStatus.ACCEPTED


async def test_a_refusal_that_escapes_a_step_is_counted_for_the_batch() -> None:
    settings = load_settings(None, {"ORDERSTREAM_CONSUMER": "w1"})
    worker = Worker(settings, redis=FakeAsyncRedis(), brokers={})

    async def refuse(entries: object) -> None:
        raise IllegalTransition("c1", OrderState.CANCELLED, OrderState.PARTIALLY_FILLED)

    worker.process = refuse  # type: ignore[method-assign,assignment]
    await worker._process_safely([])
    await worker._process_safely([])
    assert counted(worker.metrics, OrderState.CANCELLED, OrderState.PARTIALLY_FILLED) == 2
    assert counted(worker.metrics, OrderState.FILLED, OrderState.CANCELLED) is None


def test_labels_are_order_states_only() -> None:
    metrics = Metrics()
    metrics.illegal_transition(IllegalTransition("any-client-id", OrderState.FILLED,
                                                 OrderState.CANCELLED))
    families = [f for f in metrics.registry.collect()
                if f.name == "orderstream_illegal_transitions"]
    (sample,) = [s for f in families for s in f.samples if s.name == SAMPLE]
    assert sample.labels == {"from_state": "filled", "to_state": "cancelled"}
    assert sample.value == 1.0
