"""Positions at average cost: worked examples by hand, then random fill sequences checked
against what is computed here independently (cash flows, and average cost replayed in exact
fractions)."""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.model.positions import (
    AVERAGE_DIGITS,
    Position,
    apply_fill,
    apply_trade,
    decode_position,
    unrealized,
)
from producer.contract import Fill, Side, WireDecimal, encode

B, S = Side.BUY, Side.SELL
D = Decimal
FLAT = Position(account="default", symbol="BTCUSDT")

Trade = tuple[Side, Decimal, Decimal, Decimal]  # side, quantity, price, commission


def replay(trades: list[Trade], start: Position = FLAT) -> Position:
    position = start
    for side, quantity, price, fee in trades:
        position = apply_fill(position, side, quantity, price, fee)
    return position


def state(p: Position) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return p.quantity, p.average_price, p.realized_pnl, p.commission


def test_long_add_moves_the_average_to_the_weighted_mean() -> None:
    p = replay([(B, D(1), D(100), D(0)), (B, D(3), D(104), D(0))])
    assert state(p) == (4, 103, 0, 0)
    assert unrealized(p, D(110)) == 28


def test_partial_reduce_realizes_at_the_average_and_keeps_it() -> None:
    p = replay([(B, D(1), D(100), D(0)), (B, D(3), D(104), D(0)), (S, D(1), D(110), D(0))])
    assert state(p) == (3, 103, 7, 0)
    assert unrealized(p, D(100)) == -9


def test_flip_long_to_short_closes_at_the_average_and_opens_at_the_price() -> None:
    long = replay([(B, D(3), D(103), D(0))])
    p = apply_fill(long, S, D(5), D(100))
    assert state(p) == (-2, 100, -9, 0)
    assert unrealized(p, D(90)) == 20  # a short gains as the price falls


def test_short_cover_in_two_steps_ends_flat() -> None:
    p = replay([(S, D(2), D(100), D(0)), (S, D(2), D("101.5"), D(0))])
    assert state(p) == (-4, D("100.75"), 0, 0)
    p = apply_fill(p, B, D(1), D(90))
    assert state(p) == (-3, D("100.75"), D("10.75"), 0)
    p = apply_fill(p, B, D(3), D(101))
    assert state(p) == (0, 0, D("10"), 0)  # 10.75 + (100.75 - 101) * 3
    assert p.cost_basis == 0 and unrealized(p, D(1000)) == 0


def test_commissions_add_up_apart_from_pnl_including_rebates() -> None:
    p = replay([(B, D(1), D(100), D("0.1")), (S, D(1), D(101), D("0.101")),
                (B, D(2), D(100), D("-0.02"))])
    assert state(p) == (2, 100, 1, D("0.181"))


def test_a_repeating_average_is_rounded_but_the_round_trip_realizes_exactly() -> None:
    p = replay([(B, D(1), D(1), D(0)), (B, D(2), D(2), D(0))])
    assert p.average_price == D("1." + "6" * (AVERAGE_DIGITS - 2) + "7")
    assert apply_fill(p, S, D(3), D(2)).realized_pnl == 1  # not 0.999...9


def test_a_tiny_price_keeps_its_digits() -> None:
    p = replay([(B, D(1), D("1.2345E-10"), D(0)), (B, D(1), D("1.2346E-10"), D(0))])
    assert p.average_price == D("1.23455E-10")


def test_a_position_crosses_the_wire_unchanged() -> None:
    p = replay([(B, D(1), D(1), D("0.00000001")), (B, D(2), D(2), D(0)),
                (S, D(5), D("1.5"), D(0))])
    data = encode(p)
    assert b'"quantity":"-2"' in data and b'"commission":"0.00000001"' in data
    assert decode_position(data) == p
    wide = apply_fill(FLAT, S, D("12345678901234567890.12345678901234567890"), D(3))
    assert decode_position(encode(wide)) == wide
    with pytest.raises(msgspec.ValidationError, match="decimal"):
        decode_position(data.replace(b'"-2"', b'"-2e0"'))


def test_a_position_with_a_long_average_and_cost_crosses_the_wire_unchanged() -> None:
    # An average of AVERAGE_DIGITS digits has more places than a request's amount may have,
    # and a reduce at it gives a cost basis and a realized PnL with more still.
    p = replay([(B, D(1), D("50000.01"), D(0)), (B, D(2), D("50000.02"), D(0)),
                (S, D("0.00001"), D("50001"), D(0))])
    assert len(str(p.average_price).split(".")[1]) > 20
    assert len(str(p.realized_pnl).split(".")[1]) > 20
    assert decode_position(encode(p)) == p


@pytest.mark.parametrize(("quantity", "price"), [(D(0), D(1)), (D(-1), D(1)), (D(1), D(0))])
def test_a_fill_without_quantity_or_price_is_refused(quantity: Decimal, price: Decimal) -> None:
    with pytest.raises(ValueError, match="positive"):
        apply_fill(FLAT, B, quantity, price)


# Random fill sequences. Prices and quantities are mostly small and round so that positions
# often go flat or flip exactly; some have the wire's full 20 + 20 digits.
_small = st.integers(1, 5000).map(lambda n: D(n).scaleb(-2))  # 0.01 to 50
_wide = st.integers(1, 10**40 - 1).map(lambda n: D(n).scaleb(-20))
amounts = st.one_of(_small, _small, _small, _wide)
fees = st.integers(-1000, 10_000).map(lambda n: D(n).scaleb(-4))  # rebates too
trades = st.tuples(st.sampled_from(Side), amounts, amounts, fees)
PROPERTY = settings(max_examples=150, deadline=None)


def signed(side: Side, quantity: Decimal) -> Fraction:
    return Fraction(quantity) if side is B else -Fraction(quantity)


class AverageCost:
    """Average cost replayed in exact fractions, straight from the method's definition."""

    def __init__(self) -> None:
        self.quantity = Fraction(0)
        self.average = Fraction(0)
        self.realized = Fraction(0)

    def fill(self, side: Side, quantity: Decimal, price: Decimal) -> None:
        q, p = signed(side, quantity), Fraction(price)
        held = self.quantity
        if held == 0 or (held > 0) == (q > 0):
            self.average = (self.average * abs(held) + p * abs(q)) / abs(held + q)
        else:
            closed = min(abs(q), abs(held))
            self.realized += (p - self.average) * closed * (1 if held > 0 else -1)
            if abs(q) >= abs(held):
                self.average = p if held + q != 0 else Fraction(0)
        self.quantity = held + q


def close_enough(got: Decimal, want: Fraction, scale: Fraction) -> bool:
    # The documented rounding: the average has AVERAGE_DIGITS significant digits, and what a
    # reduce realizes at the rounded average differs from the fraction by that much at most,
    # times the quantities involved: an add after a reduce averages a cost basis that the
    # rounded average moved, weighted by quantities that can differ by 10^7 (hypothesis found
    # 1.0006e-30 relative for 10^-30 allowed), so a generous factor.
    return abs(Fraction(got) - want) <= scale * Fraction(1, 10 ** (AVERAGE_DIGITS - 8))


@PROPERTY
@given(fills=st.lists(trades, max_size=12), marks=st.lists(amounts, min_size=1, max_size=3))
def test_pnl_equals_cash_flow_plus_the_position_at_every_price(
        fills: list[Trade], marks: list[Decimal]) -> None:
    position, cash, quantity, fees = FLAT, Fraction(0), Fraction(0), Fraction(0)
    for side, q, p, fee in fills:
        position = apply_fill(position, side, q, p, fee)
        cash -= signed(side, q) * Fraction(p)
        quantity += signed(side, q)
        fees += Fraction(fee)
        assert Fraction(position.quantity) == quantity
        assert Fraction(position.commission) == fees
        for mark in [p, *marks]:
            total = Fraction(position.realized_pnl) + Fraction(unrealized(position, mark))
            assert total == cash + quantity * Fraction(mark)
    if quantity == 0:
        assert Fraction(position.realized_pnl) == cash
        assert position.average_price == 0 and position.cost_basis == 0


@PROPERTY
@given(fills=st.lists(trades, max_size=12))
def test_average_and_realized_match_average_cost_recomputed_from_scratch(
        fills: list[Trade]) -> None:
    position, model, notional = FLAT, AverageCost(), Fraction(0)
    for side, q, p, fee in fills:
        position = apply_fill(position, side, q, p, fee)
        model.fill(side, q, p)
        notional += Fraction(q) * Fraction(p)
        assert close_enough(position.average_price, model.average, model.average)
        assert close_enough(position.realized_pnl, model.realized, notional)
        if model.quantity != 0:
            assert position.average_price > 0
            assert (position.cost_basis > 0) == (model.quantity > 0)


@PROPERTY
@given(before=st.lists(trades, max_size=6), whole=trades,
       cuts=st.lists(st.integers(1, 99), min_size=1, max_size=3))
def test_a_fill_split_into_parts_gives_the_same_position_as_the_whole(
        before: list[Trade], whole: Trade, cuts: list[int]) -> None:
    start = replay(before)
    side, quantity, price, fee = whole
    # Cut the quantity and the fee at the same percentages, exactly (hence the context).
    bounds = list(zip([0, *sorted(set(cuts))], [*sorted(set(cuts)), 100], strict=True))
    with decimal.localcontext(prec=200):
        parts = [(side, quantity * (b - a) / 100, price, fee * (b - a) / 100)
                 for a, b in bounds]
    assert sum(Fraction(part[1]) for part in parts) == Fraction(quantity)
    assert sum(Fraction(part[3]) for part in parts) == Fraction(fee)
    assert replay(parts, start) == apply_fill(start, side, quantity, price, fee)


def test_a_reduce_to_dust_keeps_the_average_of_what_remains() -> None:
    # 1 @ 100 then 2 @ 101: the average 100.666... is rounded when stored.
    position = apply_fill(FLAT, Side.BUY, Decimal("1"), Decimal("100"))
    position = apply_fill(position, Side.BUY, Decimal("2"), Decimal("101"))
    average = position.average_price
    assert average != Fraction(302, 3)  # really rounded
    dust = Decimal("1e-20")
    position = apply_fill(position, Side.SELL, Decimal("3") - dust, Decimal("102"))
    assert position.quantity == dust
    assert position.average_price == average
    # The rounding went to realized PnL, not into the cost of what remains.
    assert Fraction(position.cost_basis) == Fraction(dust) * Fraction(average)
    position = apply_fill(position, Side.BUY, dust, Decimal("1e-10"))
    want = (Fraction(average) + Fraction(Decimal("1e-10"))) / 2
    assert close_enough(position.average_price, want, want)


# -- commissions by the asset they are charged in ----------------------------------------

BASE, QUOTE = "BTC", "USDT"
charged_in = st.sampled_from([BASE, QUOTE, None, "BNB", "ETH"])
charged = st.tuples(st.sampled_from(Side), amounts, amounts, fees, charged_in)


@given(fills=st.lists(charged, max_size=12), marks=st.lists(amounts, min_size=1, max_size=3))
@settings(max_examples=400)
def test_fees_in_base_quote_and_third_assets_against_an_independent_count(
        fills: list[tuple[Side, Decimal, Decimal, Decimal, str | None]],
        marks: list[Decimal]) -> None:
    """Counted here apart from positions.py: the base asset the account gains and loses
    (fills, less fees charged in it), the quote asset it pays and receives (less fees in it,
    or in no named asset), and fees in other assets per asset. The position must hold the
    first, its net result at any price must be the second plus the first valued at that
    price, exactly, and the third must be kept as charged."""
    position = FLAT
    held, cash = Decimal(0), Decimal(0)
    others: dict[str, Decimal] = {}
    with decimal.localcontext(decimal.Context(prec=500, traps=[decimal.Inexact])):
        for n, (side, quantity, price, fee, asset) in enumerate(fills):
            fill = Fill(fill_id=str(n), quantity=WireDecimal(quantity), price=WireDecimal(price),
                        commission=WireDecimal(fee), commission_asset=asset)
            position = apply_trade(position, side, fill, BASE, QUOTE)
            held += quantity if side is B else -quantity
            cash += -quantity * price if side is B else quantity * price
            if asset == BASE:
                held -= fee
            elif asset in (QUOTE, None):
                cash -= fee
            else:
                assert asset is not None
                others[asset] = others.get(asset, Decimal(0)) + fee
        assert position.quantity == held
        assert position.other_commissions == others
        for mark in marks:
            net = position.realized_pnl - position.commission + unrealized(position, mark)
            assert net == cash + held * mark


def test_a_buy_charged_in_the_base_asset_holds_the_net_quantity() -> None:
    fill = Fill(fill_id="1", quantity=WireDecimal("1"), price=WireDecimal("50000"),
                commission=WireDecimal("0.001"), commission_asset=BASE)
    p = apply_trade(FLAT, B, fill, BASE, QUOTE)
    assert p.quantity == D("0.999")  # what the account holds, and what a flatten may sell
    assert p.average_price == D("50000")
    assert p.commission == D("50")  # the fee, valued at the price it was charged at
    assert p.realized_pnl == 0 and p.other_commissions == {}
    # Without the base asset known, a fee in it cannot be told from a third asset's.
    unknown = apply_trade(FLAT, B, fill, None, QUOTE)
    assert unknown.quantity == D("1") and unknown.other_commissions == {BASE: D("0.001")}


def test_a_fee_in_bnb_is_kept_apart_and_never_in_the_quote_amounts() -> None:
    fill = Fill(fill_id="1", quantity=WireDecimal("2"), price=WireDecimal("100"),
                commission=WireDecimal("0.0003"), commission_asset="BNB")
    p = apply_trade(apply_trade(FLAT, B, fill, BASE, QUOTE), S,
                    msgspec.structs.replace(fill, fill_id="2", price=WireDecimal("110")),
                    BASE, QUOTE)
    assert p.quantity == 0 and p.realized_pnl == D("20") and p.commission == 0
    assert p.other_commissions == {"BNB": D("0.0006")}
    assert decode_position(encode(p)) == p
