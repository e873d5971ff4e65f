"""open_by_symbol folds the checks' sums into per-symbol totals exactly: the same totals as
adding each reserved and subtracting each released amount one by one in exact arithmetic,
whatever the fields and their order."""

from __future__ import annotations

import decimal
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from executor.safety.risk.book import EXACT, SymbolBook
from executor.safety.risk.state import count_field, open_by_symbol, sum_field
from producer.contract import Side

amounts = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=12,
                      allow_nan=False, allow_infinity=False)
fields = st.one_of(
    st.builds(sum_field, st.sampled_from(["BTCUSDT", "ETHUSDT", "EUR_USD"]),
              st.sampled_from(list(Side)), st.sampled_from(["q+", "q-", "n+", "n-"])),
    st.builds(count_field, st.sampled_from(["BTCUSDT", "ETHUSDT", "EUR_USD"])))


def one_by_one(sums: dict[str, Decimal]) -> dict[str, SymbolBook]:
    """The oracle: each field applied to its book in exact arithmetic, spelled out."""
    books: dict[str, SymbolBook] = {}
    with decimal.localcontext(EXACT):
        for name, value in sums.items():
            parts = name.split("|")
            book = books.setdefault(parts[0], SymbolBook())
            if len(parts) == 2:
                book.orders = int(value)
                continue
            side, what = parts[1], parts[2]
            attr = ("buy_" if side == Side.BUY else "sell_") + (
                "quantity" if what[0] == "q" else "notional")
            setattr(book, attr, getattr(book, attr) + (value if what[1] == "+" else -value))
    return books


@given(st.dictionaries(fields, amounts, max_size=24))
def test_the_totals_are_the_exact_sums_of_the_fields(sums: dict[str, Decimal]) -> None:
    assert open_by_symbol(sums) == one_by_one(sums)


def test_released_amounts_come_off_what_was_reserved() -> None:
    books = open_by_symbol({
        sum_field("BTCUSDT", Side.BUY, "q+"): Decimal("0.3"),
        sum_field("BTCUSDT", Side.BUY, "q-"): Decimal("0.1"),
        sum_field("BTCUSDT", Side.SELL, "n+"): Decimal("100.000000000000000000000000001"),
        count_field("BTCUSDT"): Decimal(2)})
    btc = books["BTCUSDT"]
    assert btc.buy_quantity == Decimal("0.2") and btc.sell_quantity == 0
    # Beyond the default context's 28 digits: exact, not rounded.
    assert btc.sell_notional == Decimal("100.000000000000000000000000001")
    assert btc.orders == 2
