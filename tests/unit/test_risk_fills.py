"""What a page of events does to the risk state (safety/risk/fills.py): fills shrink reservations
and count as released at the reservation's price, ends release the rest once, the day's
realized PnL nets the commission; the script arguments expect what was read."""

from __future__ import annotations

from decimal import Decimal

from executor.model.positions import Position
from executor.safety.risk.book import Reservation
from executor.safety.risk.fills import RiskFold
from executor.safety.risk.state import open_by_symbol
from producer.contract import Side, WireDecimal, encode
from producer.keys import Keys

D = Decimal


def fold_with(qty: str = "6") -> tuple[RiskFold, bytes]:
    held = Reservation(request_id="1-0", symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal(qty), price=WireDecimal("100"))
    raw = encode(held)
    fold = RiskFold(stored={("a", "c1"): (raw, held), ("a", "old"): None},
                    sums={"a": {"BTCUSDT|buy|q+": D("6"), "BTCUSDT|buy|n+": D("600"),
                                "BTCUSDT|n": D(1)}})
    return fold, raw


def test_fills_shrink_then_the_end_releases_the_rest_once() -> None:
    fold, raw = fold_with()
    fold.fill("a", "c1", D("2"))
    assert fold.current[("a", "c1")] is not None
    assert fold.current[("a", "c1")].quantity == D("4")  # type: ignore[union-attr]
    fold.end("a", "c1")
    fold.end("a", "c1")  # a second end (or a late fill) finds nothing left
    fold.fill("a", "c1", D("1"))
    assert fold.current[("a", "c1")] is None
    assert fold.totals["a"] == {"BTCUSDT|buy|q-": D("6"), "BTCUSDT|buy|n-": D("600")}
    assert fold.counts["a"] == {"BTCUSDT|n": -1}
    after = open_by_symbol({**fold.sums["a"], **fold.totals["a"], "BTCUSDT|n": D(0)})
    assert (after["BTCUSDT"].buy_quantity, after["BTCUSDT"].buy_notional) == (0, 0)
    keys, ops = fold.script_args(Keys(), 4)
    assert keys[0] == "orders:risk:a:open"
    assert ops[:4] == ["expect", 4, "c1", raw]
    assert ops[4:8] == ["drop", 4, "c1", ""]
    assert ops[-4:] == ["bump", keys.index("orders:risk:a:v") + 4, "", ""]


def test_a_fill_past_the_reservation_releases_only_what_was_reserved() -> None:
    fold, _ = fold_with("1")
    fold.fill("a", "c1", D("3"))
    assert fold.totals["a"]["BTCUSDT|buy|q-"] == D("1")


def test_orders_without_a_reservation_change_nothing_but_the_version() -> None:
    fold, _ = fold_with()
    fold.fill("a", "old", D("1"))
    fold.end("a", "old")
    assert fold.current == {} and fold.totals == {} and fold.accounts == {"a"}


def test_the_day_pnl_is_realized_net_of_commission() -> None:
    fold, _ = fold_with()
    fold.day_pnl[("a", "20240101")] = D("-1")
    before = Position(account="a", symbol="BTCUSDT", realized_pnl=WireDecimal("5"),
                      commission=WireDecimal("1"))
    after = Position(account="a", symbol="BTCUSDT", realized_pnl=WireDecimal("8.5"),
                     commission=WireDecimal("1.25"))
    fold.realized("a", "20240101", before, after)
    assert fold.day_pnl[("a", "20240101")] == D("2.25")  # -1 + 3.5 - 0.25
