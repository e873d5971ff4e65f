"""Event v2: an ``orders:events`` entry holds the events of one write of one order, one as an
object (as every v1 entry did) or several as an array in seq order; every reader takes
both, and the archive keeps a row per event with its place in the entry."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest
from fakeredis import FakeAsyncRedis

from executor.archive import rows
from executor.archive.rows import Entry, Known
from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.model.order import Context, apply_report, new_order
from producer.client import OrderClient
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderType,
    Side,
    decode_event,
    decode_events,
    encode,
    encode_events,
    split_events,
    wire,
)
from producer.keys import Keys

CTX = Context(now=1_000, worker="w1", request_id="1-0")


def spec() -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                     quantity=wire(Decimal("0.5")))


def filled_order() -> tuple[list[bytes], list[list[Event]]]:
    """The two writes of a market order as the worker makes them: created and
    pending_submit; then submitted and filled."""
    order, begun = new_order("c1", "1-0", spec(), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="B1", symbol="BTCUSDT",
                         status=BrokerStatus.FILLED, quantity=wire(Decimal("0.5")),
                         fills=[Fill(fill_id="f1", price=wire(Decimal("100")),
                                     quantity=wire(Decimal("0.5")),
                                     commission=wire(Decimal("0.05")),
                                     commission_asset="USDT", at=1_001)])
    finished = apply_report(order, report, CTX)
    return [encode_events(begun), encode_events(finished)], [list(begun), list(finished)]


def test_one_event_is_written_as_v1_wrote_it_several_as_an_array_in_order() -> None:
    datas, writes = filled_order()
    for data, events in zip(datas, writes, strict=True):
        assert len(events) == 2
        assert json.loads(data) == [json.loads(encode(e)) for e in events]
        assert decode_events(data) == events
    first = writes[0][0]
    assert encode_events([first]) == encode(first)
    assert decode_events(encode(first)) == [first]
    assert [e.seq for e in decode_events(datas[1])] == [3, 4]


def test_split_gives_each_events_json_exactly_as_the_entry_holds_it() -> None:
    datas, writes = filled_order()
    parts = split_events(datas[1])
    assert parts == [encode(e) for e in writes[1]]
    assert [decode_event(p) for p in parts] == writes[1]
    assert split_events(parts[0]) == [parts[0]]  # a v1 entry is its one event
    for bad in (b"[1", b"not json"):
        with pytest.raises(msgspec.DecodeError):
            decode_events(bad)
    with pytest.raises(msgspec.DecodeError):
        split_events(b"[1")


def test_the_archive_keeps_a_row_per_event_numbered_in_its_entry() -> None:
    datas, writes = filled_order()
    entries = [Entry(rows.EVENTS, f"{100 + n}-0", {b"data": d, b"client_order_id": b"c1"})
               for n, d in enumerate(datas, 1)]
    w = rows.fold(rows.decode("orders", entries), Known(),
                  {("a", "BTCUSDT"): ("BTC", "USDT")})
    assert [(e["entry_id"], e["entry_index"], e["seq"], e["state"]) for e in w.events] == [
        ("101-0", 0, 1, "created"), ("101-0", 1, 2, "pending_submit"),
        ("102-0", 0, 3, "submitted"), ("102-0", 1, 4, "filled")]
    # Each row's data is that event's JSON alone, not the whole entry.
    assert [e["data"].encode() for e in w.events] == [
        encode(e) for write in writes for e in write]
    (order,) = w.orders
    assert (order["state"], order["seq"], order["filled_quantity"]) == (
        "filled", 4, Decimal("0.5"))
    (f,) = w.fills
    assert f["entry_id"] == "102-0"
    (p,) = w.positions
    assert p["quantity"] == Decimal("0.5") and w.problems == []


def test_an_entry_that_is_not_events_is_one_row_kept_as_it_was() -> None:
    datas, _ = filled_order()
    broken = datas[1][:-1]  # an array cut short
    entries = [Entry(rows.EVENTS, "101-0", {b"data": broken, b"client_order_id": b"c1"}),
               Entry(rows.EVENTS, "102-0", {b"data": b'[{"x":1},"y"]',
                                            b"client_order_id": b"c2"})]
    w = rows.fold(rows.decode("orders", entries), Known(), {})
    assert [(e["entry_id"], e["entry_index"], e["data"]) for e in w.events] == [
        ("101-0", 0, broken.decode()), ("102-0", 0, '{"x":1}'), ("102-0", 1, '"y"')]
    assert w.orders == [] and w.fills == [] and len(w.problems) == 3


async def test_a_follower_gets_each_event_of_v1_and_v2_entries_in_order() -> None:
    datas, writes = filled_order()
    r = FakeAsyncRedis()
    events = Keys().events
    # A stream written before event v2 (one event per entry), then after it.
    await r.xadd(events, {"data": encode(writes[0][0]), "client_order_id": "c1"})
    await r.xadd(events, {"data": encode(writes[0][1]), "client_order_id": "c1"})
    await r.xadd(events, {"data": datas[1], "client_order_id": "c1"})
    follow = OrderClient(r).follow(results=False, events=True, since="0-0")
    got = [await anext(follow) for _ in range(4)]
    assert got == [(events, e) for write in writes for e in write]
