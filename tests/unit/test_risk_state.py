"""The checks' totals: what one compare-and-set writes to the ``+`` fields and counts."""

from __future__ import annotations

from decimal import Decimal

from executor.safety.risk.book import Reservation
from executor.safety.risk.state import Write, sum_changes
from producer.contract import Side, WireDecimal


def _r(symbol: str, side: Side, quantity: str, price: str) -> Reservation:
    return Reservation(request_id="1-0", symbol=symbol, side=side,
                       quantity=WireDecimal(quantity), price=WireDecimal(price))


def test_totals_add_puts_and_subtract_drops_per_symbol_and_side_exactly() -> None:
    sums = {"BTCUSDT|buy|q+": Decimal("1.5"), "BTCUSDT|buy|n+": Decimal("75000.00"),
            "BTCUSDT|n": Decimal(3)}
    write = Write(
        put=[("a", _r("BTCUSDT", Side.BUY, "0.001", "50000.10"), True),
             ("b", _r("BTCUSDT", Side.BUY, "0.0010", "50000"), True),
             ("c", _r("ETHUSDT", Side.SELL, "2", "3000"), False)],
        drop=[("d", _r("BTCUSDT", Side.BUY, "1.5", "50000"))])
    totals, counts = sum_changes(sums, write)
    # 1.5 + 0.001 + 0.0010 - 1.5; 75000.00 + 50.00010 + 50.0000 - 75000.0: the text keeps
    # the finest exponent, as adding one reservation at a time does.
    assert totals == {"BTCUSDT|buy|q+": "0.0020", "BTCUSDT|buy|n+": "100.00010",
                      "ETHUSDT|sell|q+": "2", "ETHUSDT|sell|n+": "6000"}
    assert counts == {"BTCUSDT|n": 1, "ETHUSDT|n": 1}


def test_a_symbol_dropped_to_nothing_writes_zero_and_a_zero_count_change() -> None:
    sums = {"BTCUSDT|sell|q+": Decimal("2"), "BTCUSDT|sell|n+": Decimal("100000")}
    totals, counts = sum_changes(sums, Write(drop=[
        ("a", _r("BTCUSDT", Side.SELL, "1", "50000")),
        ("b", _r("BTCUSDT", Side.SELL, "1", "50000"))]))
    assert totals == {"BTCUSDT|sell|q+": "0", "BTCUSDT|sell|n+": "0"}
    assert counts == {"BTCUSDT|n": -2}


def test_the_totals_are_made_once_per_write_and_sums_and_again_when_either_moves() -> None:
    sums = {"BTCUSDT|buy|q+": Decimal("1")}
    write = Write(put=[("a", _r("BTCUSDT", Side.BUY, "1", "10"), True)])
    first = sum_changes(sums, write)
    assert sum_changes(sums, write)[0] is first[0]  # the call's and carried's: made once
    assert first[0]["BTCUSDT|buy|q+"] == "2"
    # Other sums (an equal copy is another read): made again on them.
    other = sum_changes({"BTCUSDT|buy|q+": Decimal("5")}, write)
    assert other[0]["BTCUSDT|buy|q+"] == "6"
    # The write grown since: made again, with the new reservation.
    write.put.append(("b", _r("BTCUSDT", Side.BUY, "2", "10"), True))
    assert sum_changes(sums, write) == ({"BTCUSDT|buy|q+": "4", "BTCUSDT|buy|n+": "30"},
                                        {"BTCUSDT|n": 2})
