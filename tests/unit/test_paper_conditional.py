"""The paper exchange's matching model for conditional orders: if-touched orders, trailing
stops (their state advanced pass by pass) and a triggered trailing stop-limit's partial
fills. Expected prices are worked out by hand: the default book has its best level at the
reference, levels 1 bp apart, 5 BTC each; tick 0.01."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from executor.brokers.base import BrokerStatus
from executor.brokers.paper.config import PaperAccount
from executor.brokers.paper.matching import (
    WOULD_TRIGGER,
    Book,
    Direction,
    advance,
    check,
    submit,
    watch,
)
from executor.brokers.paper.records import PaperOrder, decode_order, encode_order
from executor.model.triggers import TrailState
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderType,
    Side,
    TrailingOffsetType,
    wire,
)

D = Decimal
CONFIG = PaperAccount()
BTC = CONFIG.symbols["BTCUSDT"]
NOW = 1_700_000_000_000
T = OrderType


def spec(type_: OrderType, side: Side = Side.SELL, quantity: str = "1", **kw: Any) -> OrderSpec:
    amounts = {k: v if isinstance(v, TrailingOffsetType) or not isinstance(v, str)
               else wire(D(v)) for k, v in kw.items()}
    return OrderSpec(account="default", symbol="BTCUSDT", side=side, type=type_,
                     quantity=wire(D(quantity)), **amounts)


def place(order: OrderSpec, ref: str = "50000") -> PaperOrder:
    sym = check(order, CONFIG)
    return submit("c1", "B1", order, Book(D(ref), sym, CONFIG), sym, CONFIG, NOW)


def step(order: PaperOrder, ref: str, now: int = NOW + 1) -> PaperOrder | None:
    return advance(order, Book(D(ref), BTC, CONFIG), BTC, CONFIG, now)


def trades(order: PaperOrder) -> list[tuple[Decimal, Decimal]]:
    return [(f.price, f.quantity) for f in order.fills]


# -- if-touched ------------------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "side", "stop", "direction", "before"), [
    (T.MARKET_IF_TOUCHED, Side.BUY, "49900", Direction.DOWN, "49900.01"),
    (T.MARKET_IF_TOUCHED, Side.SELL, "50100", Direction.UP, "50099.99"),
])
def test_market_if_touched_fires_at_its_stop_and_not_a_tick_before(
        type_: OrderType, side: Side, stop: str, direction: Direction, before: str) -> None:
    order = place(spec(type_, side, stop_price=stop))
    assert order.status is BrokerStatus.NEW and watch(order, BTC) == (direction, int(D(stop) * 100))
    assert step(order, before) is None
    fired = step(order, stop)
    assert fired is not None and fired.triggered and fired.status is BrokerStatus.FILLED
    assert trades(fired) == [(D(stop), D(1))]  # a market order at the best level


@pytest.mark.parametrize(("type_", "side", "stop"), [
    (T.MARKET_IF_TOUCHED, Side.BUY, "50000"),  # inclusive
    (T.MARKET_IF_TOUCHED, Side.SELL, "49900"),
    (T.LIMIT_IF_TOUCHED, Side.BUY, "50100"),
])
def test_if_touched_met_at_submission_is_rejected(type_: OrderType, side: Side,
                                                  stop: str) -> None:
    price = stop if type_ is T.LIMIT_IF_TOUCHED else None
    order = place(spec(type_, side, stop_price=stop, price=price))
    assert order.status is BrokerStatus.REJECTED and order.reason == WOULD_TRIGGER


def test_limit_if_touched_rests_as_a_limit_at_its_price_once_triggered() -> None:
    order = place(spec(T.LIMIT_IF_TOUCHED, Side.BUY, stop_price="49900", price="49890"))
    assert step(order, "49900.01") is None
    fired = step(order, "49900")
    # The book's asks start at 49900, above the limit: nothing fills, it rests at 49890.
    assert fired is not None and fired.triggered and fired.fills == []
    assert fired.status is BrokerStatus.NEW and watch(fired, BTC) == (Direction.DOWN, 4_989_000)
    assert step(fired, "49890.01") is None
    filled = step(fired, "49890")
    assert filled is not None and filled.status is BrokerStatus.FILLED
    assert trades(filled) == [(D("49890"), D(1))]
    assert filled.fills[0].liquidity == "maker"


# -- trailing stops --------------------------------------------------------------------------


def test_a_sell_trailing_stop_follows_the_price_up_and_fires_at_its_trigger() -> None:
    order = place(spec(T.TRAILING_STOP, trailing_offset="100",
                       trailing_offset_type=TrailingOffsetType.PRICE))
    assert order.status is BrokerStatus.NEW and not order.triggered
    assert order.trail == TrailState(active=True, water=D("50000"), trigger=D("49900"))
    assert watch(order, BTC) == (Direction.EVERY, 0)
    assert step(order, "50000") is None and step(order, "49950") is None  # nothing moved
    risen = step(order, "50200")
    assert risen is not None and risen.version == order.version + 1 and not risen.triggered
    assert risen.trail == TrailState(active=True, water=D("50200"), trigger=D("50100"))
    assert risen.fills == []
    assert step(risen, "50100.01") is None  # one tick before
    fired = step(risen, "50100")
    assert fired is not None and fired.triggered and fired.status is BrokerStatus.FILLED
    assert trades(fired) == [(D("50100"), D(1))]  # a market sell at the best bid
    assert watch(fired, BTC) is None


def test_a_buy_trailing_stop_in_bps_follows_the_price_down() -> None:
    order = place(spec(T.TRAILING_STOP, Side.BUY, trailing_offset="20",
                       trailing_offset_type=TrailingOffsetType.BPS))
    assert order.trail is not None and order.trail.trigger == D("50100")  # 50000 + 0.2%
    fallen = step(order, "49000")
    assert fallen is not None and fallen.trail is not None
    assert fallen.trail.trigger == D("49098")  # 49000 * 1.002
    assert step(fallen, "49097.99") is None
    fired = step(fallen, "49098")
    assert fired is not None and fired.status is BrokerStatus.FILLED


def test_a_trigger_off_the_tick_is_rounded_so_it_never_fires_early() -> None:
    # 50001 - 0.333% = 49834.49667: a sell's trigger rounds down, to 49834.49
    order = place(spec(T.TRAILING_STOP, trailing_offset="0.333",
                       trailing_offset_type=TrailingOffsetType.PERCENT), "50001")
    assert order.trail is not None and order.trail.trigger == D("49834.49")
    assert step(order, "49834.50") is None
    assert step(order, "49834.49") is not None


def test_an_activation_price_holds_the_tracking_back() -> None:
    order = place(spec(T.TRAILING_STOP, trailing_offset="100", activation_price="51000"))
    assert order.trail == TrailState()
    assert step(order, "49000") is None  # far below any trigger, but not active
    assert step(order, "50999.99") is None
    active = step(order, "51000")
    assert active is not None and active.trail == TrailState(
        active=True, water=D("51000"), trigger=D("50900"))
    fired = step(active, "50900")
    assert fired is not None and fired.status is BrokerStatus.FILLED


def test_a_triggered_trailing_stop_limit_fills_in_part_then_rests_at_its_limit() -> None:
    order = place(spec(T.TRAILING_STOP_LIMIT, quantity="12", trailing_offset="100",
                       limit_offset="5"))
    assert step(order, "49900.01") is None
    fired = step(order, "49900")
    # Limit 49900 - 5 = 49895. Bids at 49900: 49900 and 49900 * 0.9999 = 49895.01 (5 each);
    # the next, 49890.02, is under the limit.
    assert fired is not None and fired.triggered and fired.limit_price == D("49895")
    assert trades(fired) == [(D("49900"), D(5)), (D("49895.01"), D(5))]
    assert fired.status is BrokerStatus.PARTIALLY_FILLED
    assert watch(fired, BTC) == (Direction.UP, 4_989_500)
    assert step(fired, "49894.99") is None
    rest = step(fired, "49895")
    assert rest is not None and rest.status is BrokerStatus.FILLED
    assert trades(rest)[2:] == [(D("49895"), D(2))] and rest.fills[2].liquidity == "maker"


def test_the_trail_survives_the_record_codec() -> None:
    order = place(spec(T.TRAILING_STOP_LIMIT, trailing_offset="0.5",
                       trailing_offset_type=TrailingOffsetType.PERCENT, limit_offset="1",
                       activation_price="49000"))
    risen = step(order, "49000")
    assert risen is not None
    again = decode_order(encode_order(risen))
    assert again == risen and again.trail is not None and again.trail.active


@pytest.mark.parametrize(("order", "field"), [
    (spec(T.TRAILING_STOP), "trailing_offset"),
    (spec(T.TRAILING_STOP_LIMIT, trailing_offset="1"), "limit_offset"),
    (spec(T.MARKET_IF_TOUCHED), "stop_price"),
    (spec(T.LIMIT_IF_TOUCHED, stop_price="1"), "price"),
    (spec(T.LIMIT_IF_TOUCHED, stop_price="1", price="1.001"), "price"),
])
def test_the_paper_exchange_refuses_an_incomplete_order_naming_the_field(
        order: OrderSpec, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        check(order, CONFIG)
    assert caught.value.field == field
