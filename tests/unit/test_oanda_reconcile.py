"""OANDA reconciliation's comparison: pending entry orders without a record of ours are
orphans (with or without a client id), dependent orders of trades are left out, and our
open records not pending at OANDA are listed for the tracker. Open positions: what OANDA
holds beyond our positions is taken at the first pass, and later passes report the
instruments where it has changed."""

from __future__ import annotations

from decimal import Decimal

from executor.brokers.oanda.reconcile import (
    PositionDrift,
    beyond,
    compare,
    describe,
    describe_drift,
    entry_orders,
    net_units,
    position_drift,
    specifier,
)
from executor.model.order import Context, new_order
from producer.contract import OrderSpec, OrderType, Side, WireDecimal


def record(cid: str, account: str = "fx") -> object:
    spec = OrderSpec(account=account, symbol="EUR_USD", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal(Decimal(100)), price=WireDecimal(Decimal("1.05")))
    order, _ = new_order(cid, "r-" + cid, spec, Context(now=1, worker="w"))
    return order


def pending(order_id: str, cid: str | None, kind: str = "LIMIT") -> dict[str, object]:
    order: dict[str, object] = {"id": order_id, "type": kind, "state": "PENDING",
                                "instrument": "EUR_USD", "units": "100", "price": "1.05"}
    if cid is not None:
        order["clientExtensions"] = {"id": cid}
    return order


def test_entry_orders_leave_dependent_ones_out() -> None:
    reply = {"orders": [pending("1", "a"), pending("2", None, "TAKE_PROFIT"),
                        pending("3", None, "STOP_LOSS"), pending("4", "b", "STOP")]}
    assert [o["id"] for o in entry_orders(reply)] == ["1", "4"]


def test_orphans_known_and_missing() -> None:
    remote = [pending("1", "ours"), pending("2", "unknown"), pending("3", None)]
    local = {"ours": record("ours"), "unknown": None, "gone": record("gone"),
             "elsewhere": record("elsewhere", account="other")}
    drift = compare(remote, local, "fx")  # type: ignore[arg-type]
    assert [o["id"] for o in drift.orphans] == ["2", "3"]
    assert drift.known == ["ours"]
    assert drift.missing == ["gone"]  # another account's record is not this one's


def test_an_orphan_is_named_by_client_id_else_by_order_id() -> None:
    assert specifier(pending("2", "x-1")) == "@x-1"
    assert specifier(pending("3", None)) == "3"
    assert describe(pending("3", None)) == "(no client id) (EUR_USD LIMIT 100 at 1.05, order 3)"


def d(**amounts: str) -> dict[str, Decimal]:
    return {name: Decimal(v) for name, v in amounts.items()}


def position(instrument: str, long: str, short: str) -> dict[str, object]:
    return {"instrument": instrument, "long": {"units": long}, "short": {"units": short},
            "pl": "0.0000"}


def test_net_units_are_long_plus_short_and_flat_instruments_are_left_out() -> None:
    reply = {"positions": [position("EUR_USD", "1000", "0"), position("USD_JPY", "0", "-250"),
                           position("XAU_USD", "1.50", "-0.25"),
                           position("GBP_USD", "300", "-300"), {"instrument": ""}]}
    assert net_units(reply) == d(EUR_USD="1000", USD_JPY="-250", XAU_USD="1.25")
    assert net_units({}) == {}


def test_the_first_pass_takes_what_is_held_beyond_our_positions_as_it_is() -> None:
    # Held from before orderstream (USD_JPY), more than ours (EUR_USD), ours alone (XAU_USD).
    held, ours = d(EUR_USD="1500", USD_JPY="-200"), d(EUR_USD="1000", XAU_USD="2", GBP_USD="0")
    assert position_drift(held, ours, None) == []
    assert beyond(held, ours) == d(EUR_USD="500", USD_JPY="-200", XAU_USD="-2")
    assert beyond(d(EUR_USD="1000"), d(EUR_USD="1000.00")) == {}


def test_unchanged_positions_are_no_drift() -> None:
    start = beyond(d(EUR_USD="1500", USD_JPY="-200"), d(EUR_USD="1000"))
    # We bought 300 more and OANDA shows them: the part beyond ours is the same.
    assert position_drift(d(EUR_USD="1800", USD_JPY="-200"), d(EUR_USD="1300"), start) == []
    # Both flat in EUR_USD now (closed through orderstream), -200 USD_JPY as before.
    assert position_drift(d(EUR_USD="500", USD_JPY="-200"), d(EUR_USD="0.0"), start) == []


def test_drift_up_and_down() -> None:
    start = beyond(d(EUR_USD="1500"), d(EUR_USD="1000"))  # 500 beyond
    # A trade of 200 made outside orderstream: 700 beyond.
    [up] = position_drift(d(EUR_USD="1700"), d(EUR_USD="1000"), start)
    assert up == PositionDrift("EUR_USD", Decimal(1700), Decimal(1000), Decimal(500))
    assert (up.beyond, up.change) == (Decimal(200 + 500), Decimal(200))
    # A fill of 300 recorded that did not happen: 200 beyond, 300 fewer than at start.
    [down] = position_drift(d(EUR_USD="1500"), d(EUR_USD="1300"), start)
    assert (down.held, down.recorded, down.start, down.change) == (
        Decimal(1500), Decimal(1300), Decimal(500), Decimal(-300))
    assert describe_drift(down) == ("EUR_USD: OANDA holds 1500 units, our positions add up "
                                    "to 1300: 200 beyond them, 500 at this worker's start "
                                    "(-300)")
    assert describe_drift(up).endswith("(+200)")


def test_instruments_on_one_side_only() -> None:
    start = beyond(d(USD_JPY="-200"), {})  # held before orderstream, not ours
    # Our position in XAU_USD that OANDA does not hold; OANDA's USD_JPY gone (closed at
    # OANDA); EUR_USD opened outside orderstream.
    found = position_drift(d(EUR_USD="100"), d(XAU_USD="0.50"), start)
    assert [(x.instrument, x.held, x.recorded, x.start) for x in found] == [
        ("EUR_USD", Decimal(100), Decimal(0), Decimal(0)),
        ("USD_JPY", Decimal(0), Decimal(0), Decimal(-200)),
        ("XAU_USD", Decimal(0), Decimal("0.50"), Decimal(0))]
    assert describe_drift(found[2]) == ("XAU_USD: OANDA holds 0 units, our positions add up "
                                        "to 0.5: -0.5 beyond them, 0 at this worker's start "
                                        "(-0.5)")
