"""The trigger model of conditional orders (executor/model/triggers.py): trailing stops'
water marks and triggers, exact Decimal and on the tick, and touched orders."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.model.triggers import (
    TrailState,
    follow,
    offset_amount,
    touched,
    track,
    trailing_fired,
    trailing_limit_price,
    trailing_trigger,
)
from producer.contract import Side, TrailingOffsetType

PRICE, BPS, PERCENT = TrailingOffsetType.PRICE, TrailingOffsetType.BPS, TrailingOffsetType.PERCENT
TICK = D("0.01")


def test_offsets_are_read_from_the_water_mark_exactly() -> None:
    assert offset_amount(D("50000"), D("100"), PRICE) == D("100")
    assert offset_amount(D("50000"), D("25"), BPS) == D("125")  # 50000 * 25 / 10000
    assert offset_amount(D("50000"), D("1.5"), PERCENT) == D("750")
    # 40 significant digits: the default 28-digit context would round this.
    water = D("12345678901234567890.12345678901234567891")
    assert offset_amount(water, D("1"), PERCENT) == D("123456789012345678.9012345678901234567891")


def test_a_trigger_is_rounded_to_the_tick_away_from_the_market() -> None:
    # 50000.07 -/+ 0.3% = 49850.06979 / 50150.07021: a sell rounds down (fires later), a
    # buy up.
    assert trailing_trigger(Side.SELL, D("50000.07"), D("0.3"), PERCENT, TICK) == D("49850.06")
    assert trailing_trigger(Side.BUY, D("50000.07"), D("0.3"), PERCENT, TICK) == D("50150.08")
    assert trailing_trigger(Side.SELL, D("100"), D("1"), PRICE, TICK) == D("99")


def test_a_sell_trails_up_and_never_down() -> None:
    state = TrailState()
    state = track(state, Side.SELL, D("100"), D("5"), PRICE)
    assert state == TrailState(active=True, water=D("100"), trigger=D("95"))
    risen = track(state, Side.SELL, D("110"), D("5"), PRICE)
    assert (risen.water, risen.trigger) == (D("110"), D("105"))
    # A dip changes nothing: the very same state, which a caller need not write back.
    assert track(risen, Side.SELL, D("107"), D("5"), PRICE) is risen
    assert not trailing_fired(Side.SELL, risen, D("107"))
    assert trailing_fired(Side.SELL, risen, D("105"))


def test_a_buy_trails_down() -> None:
    state, fired = follow(Side.BUY, [D("100"), D("90"), D("94"), D("95")], D("5"), PRICE)
    assert (state.water, state.trigger, fired) == (D("90"), D("95"), 3)


def test_activation_waits_for_the_price() -> None:
    sell = follow(Side.SELL, [D("100"), D("90"), D("104")], D("5"), PRICE, D("105"))
    assert sell == (TrailState(), None)  # 90 is under any trigger, yet nothing tracked
    state, fired = follow(Side.SELL, [D("100"), D("105"), D("101"), D("100")], D("5"), PRICE,
                          D("105"))
    assert (state.water, state.trigger, fired) == (D("105"), D("100"), 3)
    buy, fired = follow(Side.BUY, [D("100"), D("95"), D("99"), D("100")], D("5"), PRICE,
                        D("95"))
    assert (buy.water, buy.trigger, fired) == (D("95"), D("100"), 3)


def test_the_reference_that_activates_never_fires() -> None:
    state, fired = follow(Side.SELL, [D("100")], D("99.99"), PRICE, tick=TICK)
    assert fired is None and state.trigger == D("0.01")


def test_the_limit_price_is_never_worse_than_asked() -> None:
    assert trailing_limit_price(Side.SELL, D("95"), D("0.5"), TICK) == D("94.5")
    assert trailing_limit_price(Side.SELL, D("95"), D("0.005"), TICK) == D("95.00")
    assert trailing_limit_price(Side.BUY, D("95"), D("0.005"), TICK) == D("95.00")
    assert trailing_limit_price(Side.BUY, D("95"), D("0"), TICK) == D("95")


@pytest.mark.parametrize(("side", "stop", "ref", "fired"), [
    (Side.BUY, D("100"), D("100"), True),  # a buy on a dip, at the boundary
    (Side.BUY, D("100"), D("100.01"), False),
    (Side.SELL, D("100"), D("100"), True),  # a sell on a rise
    (Side.SELL, D("100"), D("99.99"), False),
])
def test_touched_is_the_mirror_of_a_stop(side: Side, stop: D, ref: D, fired: bool) -> None:
    assert touched(side, stop, ref) is fired


# -- properties ------------------------------------------------------------------------------

prices = st.integers(1, 10**9).map(lambda n: D(n) * TICK)  # 0.01 .. 10,000,000.00
paths = st.lists(prices, min_size=1, max_size=40)
offsets = st.one_of(
    st.tuples(st.integers(1, 10**6).map(lambda n: D(n) * TICK), st.just(PRICE)),
    st.tuples(st.integers(1, 9_999).map(D), st.just(BPS)),
    st.tuples(st.integers(1, 9_999).map(lambda n: D(n) / 100), st.just(PERCENT)),
)


@settings(max_examples=300, deadline=None)
@given(path=paths, offset=offsets, activation=st.none() | prices)
def test_a_sell_trigger_never_decreases_and_stays_under_the_water_mark(
        path: list[D], offset: tuple[D, TrailingOffsetType], activation: D | None) -> None:
    state = TrailState()
    previous: D | None = None
    seen: list[D] = []  # the references since activation
    for ref in path:
        state = track(state, Side.SELL, ref, *offset, activation, TICK)
        if seen or activation is None or ref >= activation:
            seen.append(ref)
        if state.trigger is None:
            assert not seen
            continue
        assert state.water is not None and state.trigger < state.water == max(seen)
        assert state.trigger == (state.trigger / TICK).to_integral_value() * TICK
        if previous is not None:
            assert state.trigger >= previous
        previous = state.trigger


@settings(max_examples=300, deadline=None)
@given(path=paths, offset=offsets)
def test_a_sell_fires_exactly_at_its_trigger_and_not_a_tick_before(
        path: list[D], offset: tuple[D, TrailingOffsetType]) -> None:
    state, fired = follow(Side.SELL, path, *offset, tick=TICK)
    if fired is not None or state.trigger is None or state.trigger <= 0:
        return
    # After the path, a fall to one tick above the trigger does not fire; to it does.
    above = track(state, Side.SELL, state.trigger + TICK, *offset, tick=TICK)
    assert above is state and not trailing_fired(Side.SELL, above, state.trigger + TICK)
    at = track(state, Side.SELL, state.trigger, *offset, tick=TICK)
    assert at is state and trailing_fired(Side.SELL, at, state.trigger)


@settings(max_examples=200, deadline=None)
@given(path=paths, offset=offsets)
def test_a_buy_trigger_never_increases_and_stays_over_the_water_mark(
        path: list[D], offset: tuple[D, TrailingOffsetType]) -> None:
    state = TrailState()
    previous: D | None = None
    for ref in path:
        state = track(state, Side.BUY, ref, *offset, tick=TICK)
        assert state.water is not None and state.trigger is not None
        assert state.trigger > state.water and state.water <= ref
        if previous is not None:
            assert state.trigger <= previous
        previous = state.trigger
