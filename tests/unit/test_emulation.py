"""The emulator's pure decisions (executor/model/emulation.py): triggers at the exact
boundary prices, the plain order each type becomes, and the if-touched refusal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.model.emulation import (
    GTD_IN_PAST,
    WOULD_TRIGGER,
    Held,
    expired,
    first_seen,
    release_of,
    step,
    template,
    templates,
)
from executor.model.triggers import TrailState
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, TrailingOffsetType

D = Decimal
TICK = D("0.01")


def spec(type: OrderType, side: Side = Side.SELL, **kw: object) -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=side, type=type,
                     quantity=D("0.5"), reduce_only=True, **kw)  # type: ignore[arg-type]


def test_a_touched_buy_fires_at_its_stop_exactly_not_a_tick_above() -> None:
    order = spec(OrderType.MARKET_IF_TOUCHED, Side.BUY, stop_price=D("49900"))
    assert first_seen(order, D("50000"), 0) == (Held(), None)
    assert step(order, Held(), D("49900.01"), 1) is None
    fired = step(order, Held(), D("49900"), 7)
    assert fired is not None and fired.release is not None
    assert (fired.trigger_price, fired.triggered_at) == (D("49900"), 7)
    assert fired.release.type is OrderType.MARKET and fired.release.price is None
    assert fired.release.stop_price is None and fired.release.reduce_only


def test_a_touched_limit_sell_releases_a_limit_at_its_price() -> None:
    order = spec(OrderType.LIMIT_IF_TOUCHED, stop_price=D("50300"), price=D("50250"))
    assert step(order, Held(), D("50299.99"), 1) is None
    fired = step(order, Held(), D("50300"), 1)
    assert fired is not None and fired.release is not None
    assert (fired.release.type, fired.release.price) == (OrderType.LIMIT, D("50250"))
    assert template(order) == fired.release


def test_an_if_touched_order_already_touched_is_refused() -> None:
    order = spec(OrderType.MARKET_IF_TOUCHED, Side.BUY, stop_price=D("50000"))
    assert first_seen(order, D("50000"), 0)[1] == WOULD_TRIGGER
    assert first_seen(order, None, 0) == (Held(), None)  # no price yet: held, decided later


def test_a_trailing_sell_follows_rises_and_fires_at_its_trigger_exactly() -> None:
    order = spec(OrderType.TRAILING_STOP, trailing_offset=D("100"))
    held, refused = first_seen(order, D("50000"), 0, TICK)
    assert refused is None and held.trail == TrailState(active=True, water=D("50000"),
                                                          trigger=D("49900"))
    up = step(order, held, D("50500"), 1, TICK)
    assert up is not None and up.release is None and up.trail is not None
    assert up.trail.trigger == D("50400")
    assert step(order, up, D("50400.01"), 2, TICK) is None  # a dip above it: nothing
    fired = step(order, up, D("50400"), 3, TICK)
    assert fired is not None and fired.release is not None
    assert fired.release.type is OrderType.MARKET
    assert fired.release.trailing_offset is None and fired.release.quantity == D("0.5")


def test_a_trailing_stop_limit_releases_its_limit_on_the_tick_towards_the_trigger() -> None:
    order = spec(OrderType.TRAILING_STOP_LIMIT, trailing_offset=D("1"),
                 trailing_offset_type=TrailingOffsetType.PERCENT, limit_offset=D("0.005"))
    held, _ = first_seen(order, D("50000"), 0, TICK)  # trigger 49500
    fired = step(order, held, D("49500"), 1, TICK)
    assert fired is not None and fired.release is not None
    # 49500 - 0.005 is 49499.995: rounded up to the tick, never worse than asked.
    assert (fired.release.type, fired.release.price) == (OrderType.LIMIT, D("49500.00"))
    assert fired.release.limit_offset is None and fired.release.trailing_offset_type is None


def test_an_activation_price_holds_the_trail_until_reached() -> None:
    order = spec(OrderType.TRAILING_STOP, trailing_offset=D("100"), activation_price=D("51000"))
    held, _ = first_seen(order, D("50000"), 0, TICK)
    assert held.trail == TrailState()
    assert step(order, held, D("40000"), 1, TICK) is None  # not active: never fires
    active = step(order, held, D("51000"), 2, TICK)
    assert active is not None and active.trail is not None and active.trail.active
    assert active.release is None


def test_release_of_keeps_everything_but_the_conditional_fields() -> None:
    order = spec(OrderType.TRAILING_STOP, trailing_offset=D("100"), strategy_id="s1")
    plain = release_of(order, None)
    assert (plain.strategy_id, plain.reduce_only, plain.time_in_force) == (
        "s1", True, order.time_in_force)


def test_a_good_till_date_order_expires_at_its_expire_at_not_a_ms_before() -> None:
    order = spec(OrderType.MARKET_IF_TOUCHED, Side.BUY, stop_price=D("49900"),
                 time_in_force=TimeInForce.GTD, expire_at=1_000)
    assert not expired(order, 999) and expired(order, 1_000)
    assert first_seen(order, D("50000"), 999) == (Held(), None)
    assert first_seen(order, D("50000"), 1_000)[1] == GTD_IN_PAST
    assert not expired(spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1")), 10**15)


@pytest.mark.parametrize(("type", "side", "fires", "holds"), [
    (OrderType.STOP, Side.SELL, "99", "99.01"),  # a sell stop on a fall
    (OrderType.STOP, Side.BUY, "101", "100.99"),  # a buy stop on a rise
    (OrderType.TAKE_PROFIT, Side.SELL, "101", "100.99"),  # a sell take-profit on a rise
    (OrderType.TAKE_PROFIT, Side.BUY, "99", "99.01"),
])
def test_stops_and_take_profits_fire_at_their_stop_exactly(
        type: OrderType, side: Side, fires: str, holds: str) -> None:
    stop = D("99") if fires == "99" else D("101")
    order = spec(type, side, stop_price=stop)
    assert first_seen(order, D("100"), 0) == (Held(), None)
    assert first_seen(order, D(fires), 0)[1] == WOULD_TRIGGER  # already there: refused
    assert step(order, Held(), D(holds), 1) is None
    fired = step(order, Held(), D(fires), 1)
    assert fired is not None and fired.release is not None
    assert fired.release.type is OrderType.MARKET and fired.release.stop_price is None


def test_a_stop_limit_releases_a_limit_at_its_price() -> None:
    order = spec(OrderType.STOP_LIMIT, stop_price=D("99"), price=D("98.5"))
    fired = step(order, Held(), D("98.7"), 1)
    assert fired is not None and fired.release is not None
    assert (fired.release.type, fired.release.price) == (OrderType.LIMIT, D("98.5"))
    assert template(order) == fired.release


def test_an_oco_releases_the_leg_the_price_reaches_first_and_never_the_other() -> None:
    order = spec(OrderType.OCO, price=D("101"), stop_price=D("99"),
                 time_in_force=TimeInForce.FOK, stop_limit_price=D("98.5"))
    assert first_seen(order, D("100"), 0) == (Held(), None)
    assert first_seen(order, D("101"), 0)[1] == WOULD_TRIGGER
    assert first_seen(order, D("99"), 0)[1] == WOULD_TRIGGER
    assert step(order, Held(), D("100.99"), 1) is None
    assert step(order, Held(), D("99.01"), 1) is None
    up = step(order, Held(), D("101"), 1)
    assert up is not None and up.release is not None
    # The limit leg: a good-till-cancelled limit (the oco's time in force is its stop's).
    assert (up.release.type, up.release.price, up.release.time_in_force) == (
        OrderType.LIMIT, D("101"), TimeInForce.GTC)
    down = step(order, Held(), D("99"), 1)
    assert down is not None and down.release is not None
    assert (down.release.type, down.release.price, down.release.time_in_force) == (
        OrderType.LIMIT, D("98.5"), TimeInForce.FOK)
    assert down.release.stop_limit_price is None and down.release.stop_price is None
    assert templates(order) == (up.release, down.release)


def test_a_buy_oco_without_a_stop_limit_stops_out_at_market() -> None:
    order = spec(OrderType.OCO, Side.BUY, price=D("99"), stop_price=D("101"))
    fired = step(order, Held(), D("101.5"), 1)
    assert fired is not None and fired.release is not None
    assert fired.release.type is OrderType.MARKET and fired.release.price is None
