"""OANDA reconciliation's comparison: pending entry orders without a record of ours are
orphans (with or without a client id), dependent orders of trades are left out, and our
open records not pending at OANDA are listed for the tracker."""

from __future__ import annotations

from decimal import Decimal

from executor.brokers.oanda.reconcile import compare, describe, entry_orders, specifier
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
