"""The emulator's pure decisions (executor/model/emulation.py): triggers at the exact
boundary prices, the plain order each type becomes, and the if-touched refusal."""

from __future__ import annotations

from decimal import Decimal

from executor.model.emulation import WOULD_TRIGGER, Held, first_seen, release_of, step, template
from executor.model.triggers import TrailState
from producer.contract import OrderSpec, OrderType, Side, TrailingOffsetType

D = Decimal
TICK = D("0.01")


def spec(type: OrderType, side: Side = Side.SELL, **kw: object) -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=side, type=type,
                     quantity=D("0.5"), reduce_only=True, **kw)  # type: ignore[arg-type]


def test_a_touched_buy_fires_at_its_stop_exactly_not_a_tick_above() -> None:
    order = spec(OrderType.MARKET_IF_TOUCHED, Side.BUY, stop_price=D("49900"))
    assert first_seen(order, D("50000")) == (Held(), None)
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
    assert first_seen(order, D("50000"))[1] == WOULD_TRIGGER
    assert first_seen(order, None) == (Held(), None)  # no price yet: held, decided later


def test_a_trailing_sell_follows_rises_and_fires_at_its_trigger_exactly() -> None:
    order = spec(OrderType.TRAILING_STOP, trailing_offset=D("100"))
    held, refused = first_seen(order, D("50000"), TICK)
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
    held, _ = first_seen(order, D("50000"), TICK)  # trigger 49500
    fired = step(order, held, D("49500"), 1, TICK)
    assert fired is not None and fired.release is not None
    # 49500 - 0.005 is 49499.995: rounded up to the tick, never worse than asked.
    assert (fired.release.type, fired.release.price) == (OrderType.LIMIT, D("49500.00"))
    assert fired.release.limit_offset is None and fired.release.trailing_offset_type is None


def test_an_activation_price_holds_the_trail_until_reached() -> None:
    order = spec(OrderType.TRAILING_STOP, trailing_offset=D("100"), activation_price=D("51000"))
    held, _ = first_seen(order, D("50000"), TICK)
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
