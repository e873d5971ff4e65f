"""``carried``: a snapshot as a write of this process leaves it. Carried for the next
speculative write (``cids`` None), it holds no reservation and is otherwise the snapshot
carried with the reservations it held, which a read just after the write would find."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from executor.safety.risk.book import Reservation
from executor.safety.risk.state import Snapshot, Write, carried, sum_field
from executor.safety.trading import TradingState
from producer.contract import Side, WireDecimal, encode


def reservation(request_id: str, quantity: str, price: str) -> Reservation:
    return Reservation(request_id=request_id, symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal(quantity), price=WireDecimal(price), at=1)


def test_carried_without_reservations_is_carried_with_them_less_them() -> None:
    held = reservation("1-0", "0.5", "50000")
    snap = Snapshot(version="7", reservations={"a": held}, open_orders=2,
                    sums={sum_field("BTCUSDT", Side.BUY, "q+"): Decimal("0.5"),
                          sum_field("BTCUSDT", Side.BUY, "n+"): Decimal("25000")},
                    day_orders=3, day_pnl=Decimal("0"), positions=[],
                    state=TradingState.ACTIVE, runtime=None, raw={"a": encode(held)},
                    full="11")
    new = reservation("2-0", "0.25", "50010")
    write = Write(put=[("b", new, True)], drop=[("a", held)])
    with_them = carried(snap, ["a", "b"], write)
    assert with_them.reservations == {"b": new} and with_them.raw == {"b": encode(new)}
    without = carried(snap, None, write)
    assert without == replace(with_them, reservations={}, raw={})
    assert (without.version, without.full, without.open_orders, without.day_orders) == (
        "8", "12", 2, 4)
    assert without.sums[sum_field("BTCUSDT", Side.BUY, "q+")] == Decimal("0.25")
    assert snap.reservations == {"a": held}  # the snapshot itself is left as it was
