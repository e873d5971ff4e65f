"""What a request dead-lettered as poison says and leaves: the order it made is found from
its (possibly hostile) data, moved from pending_submit to submitted with an event, and
reported to the producer with its client id and state; the producer reads the order's
record with OrderClient.order."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fakeredis import FakeAsyncRedis

from executor.background import poison
from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.model.order import Context, Order, apply_report, new_order
from producer.client import OrderClient
from producer.contract import (
    Action,
    Fill,
    OrderSpec,
    OrderState,
    OrderStatus,
    OrderType,
    ReasonCode,
    ResultStatus,
    Side,
    decode_order_status,
    encode,
)
from producer.ids import client_order_id_for_entry
from producer.keys import Keys

ENTRY = "1700000000000-3"
NOW = 1_700_000_060_000
SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=Decimal("0.010"))


def persisted(cid: str = "c-1", request_id: str = ENTRY) -> Order:
    order, _ = new_order(cid, request_id, SPEC, Context(now=NOW - 1000, worker="w0",
                                                        request_id=request_id))
    order.state = OrderState.PENDING_SUBMIT
    order.seq = 2
    return order


def fields(data: bytes) -> dict[bytes, bytes]:
    return {b"data": data}


@pytest.mark.parametrize("data", [
    b"{not json",
    b"[1, 2]",
    b'{"symbol": 5}',
    b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_unreadable_data_names_no_order(data: bytes) -> None:
    assert poison.read(fields(data)) is None


def test_ids_are_read_past_what_made_a_request_poison() -> None:
    named = poison.read(fields(b'{"quantity": 1e9999999999, "symbol": "BTCUSDT", '
                               b'"side": "buy", "type": "market"}'))
    assert named == poison.Named(symbol="BTCUSDT", side="buy")
    assert poison.read({b"sig": b"00"}) is None


def test_the_order_a_request_made() -> None:
    place = poison.Named(client_order_id="c-1", symbol="BTCUSDT", side="buy")
    assert poison.order_id(place, ENTRY, None) == "c-1"
    generated = poison.Named(symbol="BTCUSDT", side="buy")
    assert poison.order_id(generated, ENTRY, None) == client_order_id_for_entry(
        "BTCUSDT", "buy", ENTRY)
    amend = poison.Named(action="amend", client_order_id="old-1")
    assert poison.old_order_id(amend) == "old-1"
    assert poison.order_id(amend, ENTRY, persisted("old-1", "1-1")) == \
        client_order_id_for_entry("BTCUSDT", Side.BUY, ENTRY)
    assert poison.order_id(amend, ENTRY, None) is None  # no old order: nothing placed
    for action in ("cancel", "cancel_all"):
        assert poison.order_id(poison.Named(action=action, client_order_id="c-1"), ENTRY,
                               None) is None
    assert poison.old_order_id(place) is None
    assert poison.order_id(None, ENTRY, None) is None


def test_a_pending_submit_order_is_handed_to_the_tracker_as_submitted() -> None:
    order = persisted()
    named = poison.Named(client_order_id="c-1")
    result, events = poison.with_order(ENTRY, 6, named, order, "w1", NOW)
    assert [(e.prev_state, e.state, e.seq) for e in events] == [
        (OrderState.PENDING_SUBMIT, OrderState.SUBMITTED, 3)]
    assert events[0].request_id == ENTRY and "dead-lettered" in (events[0].reason or "")
    assert order.state is OrderState.SUBMITTED and order.seq == 3
    assert result.reason_code == ReasonCode.POISON and not result.ok
    assert result.status is ResultStatus.SUBMITTED
    assert result.order_state is OrderState.SUBMITTED
    assert result.client_order_id == "c-1" and result.request_id == ENTRY
    assert result.action is Action.PLACE and result.symbol == "BTCUSDT"
    reason = result.reason or ""
    assert "delivered 6 times" in reason and "do not place it again" in reason
    assert "orderstream order c-1" in reason and "raw:<field>" in reason


def test_an_order_past_pending_submit_is_reported_as_it_is() -> None:
    order = persisted()
    fill = Fill(fill_id="f1", price=Decimal("50000"), quantity=Decimal("0.010"))
    apply_report(order, BrokerOrder(client_order_id="c-1", broker_order_id="b1",
                                    symbol="BTCUSDT", status=BrokerStatus.FILLED,
                                    quantity=Decimal("0.010"),
                                    filled_quantity=Decimal("0.010"), fills=[fill]),
                 Context(now=NOW, worker="w0"))
    seq = order.seq
    result, events = poison.with_order(ENTRY, 6, None, order, "w1", NOW)
    assert events == [] and order.seq == seq
    assert result.status is ResultStatus.FILLED and result.reason_code == ReasonCode.POISON
    assert result.order_state is OrderState.FILLED and result.fills == [fill]
    assert result.filled_quantity == Decimal("0.010")
    assert "is filled, final" in (result.reason or "")


def test_a_request_that_made_no_order_is_plain_poison() -> None:
    result = poison.plain(ENTRY, 6, "w1", NOW, poison.Named(action="cancel"))
    assert result.reason_code == ReasonCode.POISON
    assert result.status is ResultStatus.FAILED and result.action is Action.CANCEL
    assert result.client_order_id is None and result.order_state is None
    assert result.enqueued_at == 1700000000000 and result.completed_at == NOW


def test_a_producer_reads_the_record_the_workers_write() -> None:
    order = persisted()
    apply_report(order, BrokerOrder(client_order_id="c-1", broker_order_id="b1",
                                    symbol="BTCUSDT", status=BrokerStatus.FILLED,
                                    quantity=Decimal("0.010"),
                                    filled_quantity=Decimal("0.010"),
                                    fills=[Fill(fill_id="f1", price=Decimal("50000"),
                                                quantity=Decimal("0.010"))]),
                 Context(now=NOW, worker="w0"))
    status = decode_order_status(encode(order))
    for name in OrderStatus.__struct_fields__:
        assert getattr(status, name) == getattr(order, name), name


async def test_order_client_reads_one_order() -> None:
    client = OrderClient(FakeAsyncRedis())
    try:
        assert await client.order("c-1") is None
        order = persisted()
        await client.redis.hset(Keys().order("c-1"),
                                mapping={"state": "pending_submit", "record": encode(order)})
        found = await client.order("c-1")
        assert found is not None and found.state is OrderState.PENDING_SUBMIT
        assert found.request_id == ENTRY and found.spec == SPEC
    finally:
        await client.aclose()
