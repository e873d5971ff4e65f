"""Amend by cancel-replace: the old order is cancelled, the new one placed with the changes
under an id derived from the amend, once even when a worker dies half-way; bad amends
change nothing."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.brokers.base import BrokerStatus
from executor.brokers.paper import PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.streams import positions_caught_up
from executor.operations.control import set_state
from executor.safety.breaker import Breaker
from executor.safety.risk.state import open_key
from executor.safety.trading import TradingState
from executor.worker import Worker
from producer.client import OrderClient, Submitted
from producer.contract import Action, OrderState, ReasonCode, ResultStatus
from producer.keys import Keys

from .conftest import events_in, running
from .test_risk import with_risk

K = Keys()


async def received(r: aioredis.Redis) -> list[str]:
    return [f[b"client_order_id"].decode()
            for _, f in await r.xrange(K.paper("default", "received"))]


async def raw(r: aioredis.Redis, request: dict[str, str]) -> Submitted:
    """A request as another language would publish it, past our client's own checks."""
    entry_id = await r.xadd(K.pending, {"data": json.dumps(request)})
    return Submitted(entry_id.decode(), request.get("client_order_id"))


async def state_of(r: aioredis.Redis, cid: str) -> str:
    return (await r.hget(K.order(cid), "state") or b"").decode()


async def test_amend_cancels_the_old_order_and_places_the_change(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()) as worker:
        old = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                 time_in_force="gtc")
        assert (await client.wait_result(old.request_id, 10)).status is ResultStatus.ACCEPTED
        amend = await client.amend(old.client_order_id or "", price="49500", quantity="0.003")
        result = await client.wait_result(amend.request_id, 10)
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        assert result.ok and result.action is Action.AMEND
        assert result.status is ResultStatus.ACCEPTED
        assert result.cancelled == [old.client_order_id]
        new_cid = result.client_order_id
        assert new_cid and new_cid != old.client_order_id
        stored = await paper.store.get(new_cid)
        assert stored is not None
        assert stored.spec.price == Decimal("49500") and stored.spec.quantity == Decimal("0.003")
    assert await state_of(redis_client, old.client_order_id or "") == "cancelled"
    assert await state_of(redis_client, new_cid) == "accepted"
    assert await received(redis_client) == [old.client_order_id, new_cid]
    old_events = await events_in(redis_client, old.client_order_id)
    assert [e.state for e in old_events][-2:] == [OrderState.PENDING_CANCEL,
                                                  OrderState.CANCELLED]
    assert old_events[-1].request_id == amend.request_id


async def test_bad_amends_change_nothing(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()):
        rest = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                  time_in_force="gtc")
        filled = await client.place("BTCUSDT", "buy", "market", "0.002")
        await client.wait_results([rest.request_id, filled.request_id], 10)
        rest_cid, filled_cid = rest.client_order_id or "", filled.client_order_id or ""
        before = await redis_client.xlen(K.events)
        cases = [
            (await client.amend("nope-1", price="1"), "not_found", "nope-1"),
            (await client.amend(filled_cid, quantity="0.003"), "not_cancellable", "final"),
            (await client.amend(rest_cid, price="49000.001"), "invalid", "price"),
            (await client.amend(rest_cid, stop_price="48000"), "invalid", "stop_price"),
            (await raw(redis_client, {"action": "amend", "client_order_id": rest_cid,
                                      "side": "sell", "price": "1"}), "invalid", "side"),
            (await raw(redis_client, {"action": "amend", "client_order_id": rest_cid}),
             "invalid", "at least one"),
        ]
        answers = await client.wait_results([c[0].request_id for c in cases], 10)
        for sub, code, words in cases:
            answer = answers[sub.request_id]
            assert answer.reason_code == code and words in (answer.reason or ""), answer
        assert await redis_client.xlen(K.events) == before
        assert await state_of(redis_client, rest_cid) == "accepted"
        # Each reached the exchange once (in either order: two lanes may take them).
        assert sorted(await received(redis_client)) == sorted([rest_cid, filled_cid])


async def test_an_amend_whose_worker_dies_after_persisting_is_finished_once(
    redis_url: str, make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    async with running(make_settings()):
        old = await client.place("ETHUSDT", "sell", "limit", "0.5", price="3100",
                                 time_in_force="gtc")
        await client.wait_result(old.request_id, 10)
    amend = await client.amend(old.client_order_id or "", price="3050")
    doomed = WorkerProcess(redis_url, "doomed", tmp_path / "doomed.log",
                           ORDERSTREAM_FAILPOINT="after_persist")
    assert await asyncio.to_thread(doomed.proc.wait, 60) == -signal.SIGKILL
    async with running(make_settings(consumer="w2", visibility_timeout_ms=300,
                                     lookup_window_ms=100)):
        result = await client.wait_result(amend.request_id, 15)
    assert result.ok and result.cancelled == [old.client_order_id]
    assert await state_of(redis_client, old.client_order_id or "") == "cancelled"
    assert await received(redis_client) == [old.client_order_id, result.client_order_id]
    assert await redis_client.xlen(K.completed) == 2



async def resting_buy(client: OrderClient) -> str:
    sub = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                             time_in_force="gtc")
    result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.ACCEPTED and result.client_order_id
    return result.client_order_id


async def events_of(r: aioredis.Redis, cid: str) -> list[OrderState]:
    return [e.state for e in await events_in(r, cid)]


async def assert_untouched(r: aioredis.Redis, worker: Worker, cid: str) -> None:
    """The old order of a refused amend: still working, here and at the exchange, never
    asked to cancel."""
    assert await state_of(r, cid) == "accepted"
    assert await events_of(r, cid) == [OrderState.CREATED, OrderState.PENDING_SUBMIT,
                                        OrderState.SUBMITTED, OrderState.ACCEPTED]
    paper = unwrap(worker.brokers["default"])
    assert isinstance(paper, PaperBroker)
    assert (await paper.get_order(cid, "BTCUSDT")).status is BrokerStatus.NEW
    assert await received(r) == [cid]


async def halt(r: aioredis.Redis, worker: Worker) -> None:
    await set_state(r, K, "global", TradingState.HALTED, "test")


async def reduce_only(r: aioredis.Redis, worker: Worker) -> None:
    # No position: a buy amend reduces nothing.
    await set_state(r, K, "default", TradingState.REDUCING, "test")


async def open_the_breaker(r: aioredis.Redis, worker: Worker) -> None:
    # An authentication failure opens it at once, for the whole cool-down (30 s).
    await Breaker(r, K, worker.settings.breaker).record("default", "X")


@pytest.mark.parametrize(("refuse", "code", "words"), [
    (halt, ReasonCode.HALTED, "halted"),
    (reduce_only, ReasonCode.HALTED, "is reducing"),
    (open_the_breaker, ReasonCode.CIRCUIT_OPEN, "circuit breaker"),
])
async def test_an_amend_refused_by_the_trading_state_or_the_breaker_changes_nothing(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    refuse: Callable[[aioredis.Redis, Worker], Awaitable[None]], code: str, words: str,
) -> None:
    async with running(make_settings()) as worker:
        cid = await resting_buy(client)
        await refuse(redis_client, worker)
        amend = await client.amend(cid, price="49500")
        result = await client.wait_result(amend.request_id, 10)
        assert result.reason_code == code and words in (result.reason or ""), result
        # The result names the old order, still working; nothing was cancelled.
        assert result.client_order_id == cid and result.cancelled == []
        assert result.order_state is OrderState.ACCEPTED
        await assert_untouched(redis_client, worker, cid)


async def test_an_amend_is_judged_as_replacing_its_old_order(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    # Room for one open order and 250 USDT of buys: the old order (0.002 x 49000 = 98)
    # and its replacement (0.004 x 49500 = 198) would break both if counted together.
    settings = with_risk(make_settings(), max_open_orders=1, balance=Decimal("250"))
    async with running(settings) as worker:
        cid = await resting_buy(client)
        amend = await client.amend(cid, price="49500", quantity="0.004")
        result = await client.wait_result(amend.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        assert result.cancelled == [cid]
        new_cid = result.client_order_id or ""
        assert await state_of(redis_client, cid) == "cancelled"
        # The old order's reservation goes once the projector has folded its cancel.
        assert await positions_caught_up(redis_client, K, 10)
        assert list(await redis_client.hgetall(open_key(K, "default"))) == [new_cid.encode()]
        # A new size that breaks a limit on its own (0.006 x 49000 = 294 > 250) is denied
        # before anything changes: the order keeps working.
        denied = await client.amend(new_cid, price="49000", quantity="0.006")
        refusal = await client.wait_result(denied.request_id, 10)
        assert refusal.status is ResultStatus.DENIED
        assert refusal.reason_code == "risk_denied:balance", refusal
        assert "notional 294" in (refusal.reason or "")
        assert refusal.client_order_id == new_cid and refusal.cancelled == []
        assert await state_of(redis_client, new_cid) == "accepted"
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        assert (await paper.get_order(new_cid, "BTCUSDT")).status is BrokerStatus.NEW
        assert await received(redis_client) == [cid, new_cid]
        assert list(await redis_client.hgetall(open_key(K, "default"))) == [new_cid.encode()]
