"""The archive's pure fold (executor/archive/rows.py): orders follow their events, a fill
seen twice is stored and folded once, positions are the workers' average-cost fold, and an
entry that does not decode is kept as it was without stopping anything."""

from __future__ import annotations

import json
from decimal import Decimal

from executor.archive import rows
from executor.archive.rows import Entry, Known
from executor.model.positions import Position, apply_trade
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    TrailingOffsetType,
    encode,
    wire,
)


def spec(side: str = "buy", quantity: str = "1") -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=Side(side), type=OrderType.MARKET,
                     quantity=Decimal(quantity), strategy_id="s1")  # type: ignore[arg-type]


def event(cid: str, seq: int, state: OrderState, **more: object) -> Event:
    return Event(client_order_id=cid, seq=seq, state=state, at=1_000 + seq, account="a",
                 symbol="BTCUSDT", request_id=f"r-{cid}", **more)  # type: ignore[arg-type]


def fill(fill_id: str, price: str, quantity: str, commission: str = "0") -> Fill:
    return Fill(fill_id=fill_id, price=Decimal(price), quantity=Decimal(quantity),  # type: ignore[arg-type]
                commission=Decimal(commission), commission_asset="USDT", at=5_000)  # type: ignore[arg-type]


def entries(*events: Event | bytes) -> list[Entry]:
    out = []
    for n, e in enumerate(events, 1):
        data = e if isinstance(e, bytes) else encode(e)
        cid = b"?" if isinstance(e, bytes) else e.client_order_id.encode()
        out.append(Entry(rows.EVENTS, f"{100 + n}-0", {b"data": data, b"client_order_id": cid}))
    return out


ASSETS = {("a", "BTCUSDT"): ("BTC", "USDT")}


def folded(*events: Event | bytes, known: Known | None = None) -> rows.Writes:
    return rows.fold(rows.decode("orders", entries(*events)), known or Known(), ASSETS)


def test_an_order_is_its_created_parameters_and_its_last_event() -> None:
    w = folded(
        event("c1", 1, OrderState.CREATED, order=spec("sell", "0.5")),
        event("c1", 2, OrderState.SUBMITTED, prev_state=OrderState.CREATED),
        event("c1", 3, OrderState.FILLED, broker_order_id="B7",
              fill=fill("f1", "100", "0.5", "0.05"),
              filled_quantity=Decimal("0.5"), average_price=Decimal("100"),
              commission=Decimal("0.05"), commissions={"USDT": Decimal("0.05")}))
    (order,) = w.orders
    assert (order["side"], order["quantity"], order["state"], order["seq"]) == (
        "sell", Decimal("0.5"), "filled", 3)
    assert (order["broker_order_id"], order["filled_quantity"], order["average_price"],
            order["commission"], order["strategy_id"]) == ("B7", Decimal("0.5"), Decimal("100"),
                                                           Decimal("0.05"), "s1")
    assert order["created_at"] == 1_001 and order["updated_at"] == 1_003
    assert [e["seq"] for e in w.events] == [1, 2, 3]
    assert [e["entry_ms"] for e in w.events] == [101, 102, 103]
    (f,) = w.fills
    assert (f["side"], f["price"], f["realized_pnl"], f["entry_id"]) == (
        "sell", Decimal("100"), Decimal("0"), "103-0")


def test_a_repeated_or_older_event_changes_no_order_but_is_kept_as_an_entry() -> None:
    stored = {"c1": {**folded(event("c1", 1, OrderState.CREATED, order=spec()),
                              event("c1", 2, OrderState.SUBMITTED)).orders[0]}}
    w = folded(event("c1", 2, OrderState.REJECTED, reason_code="x"), known=Known(orders=stored))
    assert w.orders == []
    assert len(w.events) == 1


def test_a_fill_seen_twice_is_stored_and_folded_once() -> None:
    f = fill("f1", "100", "1")
    created = event("c1", 1, OrderState.CREATED, order=spec("buy", "2"))
    w = folded(created, event("c1", 2, OrderState.PARTIALLY_FILLED, fill=f),
               event("c1", 3, OrderState.PARTIALLY_FILLED, fill=f))
    assert len(w.fills) == 1
    (p,) = w.positions
    assert p["quantity"] == Decimal("1") and p["entry_id"] == "102-0"
    # Stored by an earlier batch: neither stored nor folded again.
    again = folded(created, event("c1", 2, OrderState.PARTIALLY_FILLED, fill=f),
                   known=Known(fills={("a", "BTCUSDT", "f1")}))
    assert again.fills == [] and again.positions == []


def test_positions_are_the_workers_fold_and_each_fill_keeps_what_it_realized() -> None:
    trades = [("c1", "buy", "100", "2"), ("c2", "sell", "130", "3"), ("c3", "buy", "90", "0.5")]
    events: list[Event] = []
    expected = Position(account="a", symbol="BTCUSDT")
    realized = []
    for n, (cid, side, price, qty) in enumerate(trades):
        f = fill(f"f{n}", price, qty, "0.01")
        events += [event(cid, 1, OrderState.CREATED, order=spec(side, qty)),
                   event(cid, 2, OrderState.FILLED, fill=f)]
        before = expected
        expected = apply_trade(expected, Side(side), f, "BTC", "USDT")
        realized.append(expected.realized_pnl - before.realized_pnl)
    w = folded(*events)
    (p,) = w.positions
    assert rows.position_from_row(p) == expected
    assert [f["realized_pnl"] for f in w.fills] == realized
    assert realized[1] == Decimal("60")  # closes 2 bought at 100 at 130


def test_a_position_starts_from_what_the_archive_holds() -> None:
    held = Position(account="a", symbol="BTCUSDT", quantity=Decimal("1"),  # type: ignore[arg-type]
                    average_price=Decimal("100"), cost_basis=Decimal("100"))  # type: ignore[arg-type]
    w = folded(event("c9", 1, OrderState.CREATED, order=spec("sell", "1")),
               event("c9", 2, OrderState.FILLED, fill=fill("f9", "110", "1")),
               known=Known(positions={("a", "BTCUSDT"): held}))
    (p,) = w.positions
    assert p["quantity"] == Decimal("0") and p["realized_pnl"] == Decimal("10")


def test_an_undecodable_entry_is_kept_as_it_was_and_stops_nothing() -> None:
    w = folded(b"{not json", event("c1", 1, OrderState.CREATED, order=spec()))
    assert w.events[0]["data"] == "{not json"
    assert w.events[0]["client_order_id"] == "?" and w.events[0]["seq"] is None
    assert len(w.orders) == 1
    assert any("does not decode" in p for p in w.problems)


def test_a_fill_of_an_order_whose_created_event_was_never_archived_moves_no_position() -> None:
    w = folded(event("old", 5, OrderState.FILLED, fill=fill("f1", "100", "1")))
    (f,) = w.fills
    assert f["side"] is None and f["realized_pnl"] is None
    assert w.positions == []
    (order,) = w.orders
    assert order["side"] is None and order["state"] == "filled"
    assert any("side is unknown" in p for p in w.problems)


def test_results_keep_their_stream_and_fields() -> None:
    from producer.contract import Action, Result, ResultStatus

    result = Result(request_id="1-0", action=Action.PLACE, status=ResultStatus.REJECTED,
                    client_order_id="c1", account="a", symbol="BTCUSDT", reason_code="risk",
                    completed_at=77)
    batch = rows.decode("orders", [Entry(rows.FAILED, "5-1", {b"data": encode(result)}),
                                   Entry(rows.COMPLETED, "6-0", {b"data": b"\xff",
                                                                 b"client_order_id": b"c2"})])
    w = rows.fold(batch, Known(), ASSETS)
    first, second = w.results
    assert (first["stream"], first["status"], first["reason_code"], first["completed_at"]) == (
        "failed", "rejected", "risk", 77)
    assert second["status"] is None and second["client_order_id"] == "c2"
    assert batch.last_ids() == {"failed": "5-1", "completed": "6-0"}


def test_audit_entries_are_kept_and_the_latest_risk_limits_of_each_account_win() -> None:
    def action(entry_id: str, scope: str, by: str, limit: int) -> Entry:
        data = (b'{"kind":"risk_set","scope":"%s","at":9,"by":"%s","details":{"limits":'
                b'{"max_open_orders":%d},"new_field":1}}' % (scope.encode(), by.encode(), limit))
        return Entry(rows.AUDIT, entry_id, {b"data": data})

    batch = rows.decode("orders", [
        action("1-0", "a", "ana", 1), action("2-0", "b", "ben", 2), action("3-0", "a", "cy", 3),
        Entry(rows.AUDIT, "4-0", {b"data": b"[]"}),
        Entry(rows.AUDIT, "5-0", {b"data": b'{"kind":"kill","scope":"global","at":10}'})])
    w = rows.fold(batch, Known(), ASSETS)
    assert [a["entry_id"] for a in w.actions] == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert [a["kind"] for a in w.actions] == ["risk_set"] * 3 + [None, "kill"]
    assert sorted((r["account"], r["set_by"], r["limits"], r["entry_ms"]) for r in w.risk_limits) \
        == [("a", "cy", '{"max_open_orders":3}', 3), ("b", "ben", '{"max_open_orders":2}', 2)]
    assert any("audit entry 4-0 does not decode" in p for p in w.problems)


def test_what_a_fill_realized_is_exact_past_the_default_28_digits() -> None:
    q = Decimal("12345678901234567890.12345678901234567890")
    held = Position(account="a", symbol="BTCUSDT", quantity=q, average_price=Decimal(1),  # type: ignore[arg-type]
                    cost_basis=q)  # type: ignore[arg-type]
    w = folded(event("big", 1, OrderState.CREATED, order=spec("sell", str(q))),
               event("big", 2, OrderState.FILLED, fill=fill("fb", "3", str(q))),
               known=Known(positions={("a", "BTCUSDT"): held}))
    (f,) = w.fills
    assert f["realized_pnl"] == Decimal("24691357802469135780.24691357802469135780")


def test_a_trailing_stops_parameters_reach_the_archive() -> None:
    trailing = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL,
                         type=OrderType.TRAILING_STOP_LIMIT, quantity=wire(Decimal("1")),
                         trailing_offset=wire(Decimal("1.5")),
                         trailing_offset_type=TrailingOffsetType.PERCENT,
                         activation_price=wire(Decimal("51000")),
                         limit_offset=wire(Decimal("10")))
    (order,) = folded(event("t1", 1, OrderState.CREATED, order=trailing)).orders
    assert order["type"] == "trailing_stop_limit"
    assert json.loads(order["params"]) == json.loads(encode(trailing))
    assert json.loads(order["params"])["trailing_offset"] == "1.5"
