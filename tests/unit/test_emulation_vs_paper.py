"""The emulator against the paper exchange's native conditional orders, on random price
paths (hypothesis): both refuse the same orders at placement, fire at the same price of the
path (or neither does), and a limit release has the limit the exchange would rest. This is
what lets the paper exchange stand in for the emulator in tests, and the emulator for the
exchange at a broker without these orders."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.brokers.paper import PaperAccount
from executor.brokers.paper.matching import Book, advance, submit
from executor.model.emulation import first_seen, step
from producer.contract import OrderSpec, OrderType, Side, TrailingOffsetType

CONFIG = PaperAccount()
SYM = CONFIG.symbols["BTCUSDT"]
TICK = SYM.tick_size
START = Decimal("50000")

# Prices on the tick within 2% of the start: enough to cross every trigger drawn below.
prices = st.integers(-1_000, 1_000).map(lambda n: START + n * Decimal("1.00"))
paths = st.lists(prices, min_size=1, max_size=40)
sides = st.sampled_from([Side.BUY, Side.SELL])
offsets = st.integers(1, 800).map(lambda n: Decimal(n) / 2)  # 0.5 .. 400, on the tick


@st.composite
def orders(draw: st.DrawFn) -> OrderSpec:
    side = draw(sides)
    type = draw(st.sampled_from([OrderType.TRAILING_STOP, OrderType.TRAILING_STOP_LIMIT,
                                 OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT_IF_TOUCHED,
                                 OrderType.STOP, OrderType.STOP_LIMIT,
                                 OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT,
                                 OrderType.OCO]))
    fields: dict[str, object] = {}
    if type is OrderType.OCO:
        # The contract's shape (producer/validation.py): a sell's limit leg above its stop
        # leg, a buy's below.
        stop, gap = draw(prices), draw(offsets) * 2
        fields["stop_price"] = stop
        fields["price"] = stop + gap if side is Side.SELL else stop - gap
        if draw(st.booleans()):
            fields["stop_limit_price"] = draw(prices)
    elif type in (OrderType.TRAILING_STOP, OrderType.TRAILING_STOP_LIMIT):
        kind = draw(st.sampled_from(list(TrailingOffsetType)))
        fields["trailing_offset_type"] = kind
        fields["trailing_offset"] = draw(offsets) if kind is TrailingOffsetType.PRICE \
            else Decimal(draw(st.integers(1, 150)))
        if draw(st.booleans()):
            fields["activation_price"] = draw(prices)
        if type is OrderType.TRAILING_STOP_LIMIT:
            fields["limit_offset"] = draw(offsets)
    else:
        fields["stop_price"] = draw(prices)
        if type in (OrderType.LIMIT_IF_TOUCHED, OrderType.STOP_LIMIT,
                    OrderType.TAKE_PROFIT_LIMIT):
            fields["price"] = draw(prices)
    return OrderSpec(account="a", symbol="BTCUSDT", side=side, type=type,
                     quantity=Decimal("0.01"), **fields)  # type: ignore[arg-type]


def native(spec: OrderSpec, path: list[Decimal]) -> tuple[str | None, int | None,
                                                         Decimal | None]:
    """The paper exchange: (its refusal, the index of the price that fired it, the limit it
    executes at)."""
    order = submit("c", "b", spec, Book(START, SYM, CONFIG), SYM, CONFIG, 0)
    if order.reason is not None:
        return order.reason, None, None
    for index, ref in enumerate(path):
        moved = advance(order, Book(ref, SYM, CONFIG), SYM, CONFIG, index + 1)
        if moved is not None:
            order = moved
        if order.triggered:
            limit = order.limit_price if spec.type in (
                OrderType.TRAILING_STOP_LIMIT, OrderType.OCO) else spec.price
            return None, index, limit
    return None, None, None


def emulated(spec: OrderSpec, path: list[Decimal]) -> tuple[str | None, int | None,
                                                           Decimal | None]:
    held, refused = first_seen(spec, START, 0, TICK)
    if refused is not None:
        return refused, None, None
    for index, ref in enumerate(path):
        moved = step(spec, held, ref, index + 1, TICK)
        if moved is None:
            continue
        if moved.release is not None:
            return None, index, moved.release.price
        held = moved
    return None, None, None


@settings(max_examples=400, deadline=None)
@given(orders(), paths)
def test_the_emulator_fires_where_the_paper_exchange_fires(
        spec: OrderSpec, path: list[Decimal]) -> None:
    assert emulated(spec, path) == native(spec, path)


def test_the_comparison_sees_both_fire_and_both_wait() -> None:
    """Not vacuous: a trailing sell fires on the same tick either way, and waits alike."""
    spec = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL,
                     type=OrderType.TRAILING_STOP, quantity=Decimal("0.01"),
                     trailing_offset=Decimal("100"))
    path = [Decimal("50500"), Decimal("50450"), Decimal("50400"), Decimal("50000")]
    assert native(spec, path) == emulated(spec, path) == (None, 2, None)
    assert native(spec, path[:2]) == emulated(spec, path[:2]) == (None, None, None)


def test_an_oco_fires_its_limit_leg_or_its_stop_leg_alike() -> None:
    """A sell oco (limit leg 50500, stop leg 49500 as a stop-limit at 49400): the rise
    fills the limit leg at its price, the fall fires the stop leg's limit; both alike."""
    spec = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL, type=OrderType.OCO,
                     quantity=Decimal("0.01"), price=Decimal("50500"),
                     stop_price=Decimal("49500"), stop_limit_price=Decimal("49400"))
    up = [Decimal("50200"), Decimal("50500")]
    down = [Decimal("49800"), Decimal("49500")]
    assert native(spec, up) == emulated(spec, up) == (None, 1, Decimal("50500"))
    assert native(spec, down) == emulated(spec, down) == (None, 1, Decimal("49400"))
    at_once = msgspec.structs.replace(spec, price=Decimal("49900"),
                                      stop_price=Decimal("49000"))
    assert native(at_once, up)[0] == emulated(at_once, up)[0] == "order would trigger " \
        "immediately"
