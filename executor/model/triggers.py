"""When conditional orders trigger: trailing stops and touched (if-touched) orders.

Pure (Decimal only, no I/O, no clock): the paper exchange calls these on every match pass,
and the emulator (for brokers without these types) will call the same functions, so an
order behaves alike wherever it is trailed.

Trailing stop (``trailing_stop``, ``trailing_stop_limit``):
- Activation: with ``activation_price``, tracking starts the first time the reference
  reaches it (sell: ref >= activation, buy: ref <= activation); without, at the first
  reference price seen (the one at submission).
- Water mark: the best reference since activation for the holder of the stop: the highest
  for a sell, the lowest for a buy (activation's own reference included).
- Trigger: a sell's is ``water - offset``, a buy's ``water + offset``, the offset read from
  the water mark (``bps``: water * bp / 10000, ``percent``: water * pct / 100, ``price``:
  itself). It only ever moves towards the market: up for a sell, down for a buy.
- Rounding to the tick, always away from the market, so the order never triggers before
  the exact trigger was reached: a sell's trigger is rounded down (it fires when ref <=
  trigger: a lower trigger fires later), a buy's up.
- Triggered when the reference crosses it: sell ref <= trigger, buy ref >= trigger. The
  water mark is updated from a reference before the trigger is checked against it, so the
  reference that activates an order (or makes a new water mark) never fires it.
- Then ``trailing_stop`` executes as a market order; ``trailing_stop_limit`` as a limit at
  trigger - ``limit_offset`` (sell) or trigger + ``limit_offset`` (buy), rounded to the
  tick towards the trigger, so the limit is never worse than the order asked.

Stops (``stop``, ``stop_limit``) trigger when the price moves through ``stop_price``
against the holder: a buy's on a rise (ref >= stop), a sell's on a fall (ref <= stop).
Take-profits and touched orders (``market_if_touched``, ``limit_if_touched``), the mirror
of a stop: a buy triggers when ref <= ``stop_price`` (buying a dip), a sell when ref >=
``stop_price``; then a market order, or a limit at ``price``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal

import msgspec

from producer.contract import OrderType, Side, TrailingOffsetType, WireDecimal, wire

# Prices and offsets have at most 20 integer and 20 fraction digits each, so a product
# has at most 80 digits: this context computes every trigger exactly.
_EXACT = Context(prec=100)
_BPS = Decimal(10_000)
_PERCENT = Decimal(100)


class TrailState(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Where a trailing stop stands, stored with the order (it must survive a restart):
    whether tracking started, the water mark since, and the trigger made from it."""

    active: bool = False
    water: WireDecimal | None = None
    trigger: WireDecimal | None = None


def offset_amount(water: Decimal, offset: Decimal, offset_type: TrailingOffsetType) -> Decimal:
    """The offset in price units at the water mark ``water``, exact."""
    if offset_type is TrailingOffsetType.PRICE:
        return offset
    scale = _BPS if offset_type is TrailingOffsetType.BPS else _PERCENT
    return _EXACT.divide(_EXACT.multiply(water, offset), scale)


def _to_tick(value: Decimal, tick: Decimal | None, rounding: str) -> Decimal:
    if tick is None:
        return value
    steps = _EXACT.divide(value, tick).to_integral_value(rounding, _EXACT)
    return _EXACT.multiply(steps, tick)


def trailing_trigger(side: Side, water: Decimal, offset: Decimal,
                     offset_type: TrailingOffsetType, tick: Decimal | None = None) -> Decimal:
    """The trigger a water mark makes, rounded to ``tick`` away from the market (sell down,
    buy up: never an earlier trigger than the exact one)."""
    amount = offset_amount(water, offset, offset_type)
    if side is Side.SELL:
        return _to_tick(_EXACT.subtract(water, amount), tick, ROUND_FLOOR)
    return _to_tick(_EXACT.add(water, amount), tick, ROUND_CEILING)


def reaches_activation(side: Side, ref: Decimal, activation: Decimal | None) -> bool:
    """Whether a reference starts the tracking (always, without an activation price)."""
    if activation is None:
        return True
    return ref >= activation if side is Side.SELL else ref <= activation


def track(state: TrailState, side: Side, ref: Decimal, offset: Decimal,
          offset_type: TrailingOffsetType, activation: Decimal | None = None,
          tick: Decimal | None = None) -> TrailState:
    """The state after seeing ``ref``: ``state`` itself when nothing changed (so a caller
    can skip writing it), else a new one."""
    if not state.active:
        if not reaches_activation(side, ref, activation):
            return state
        water = ref
    else:
        assert state.water is not None
        better = ref > state.water if side is Side.SELL else ref < state.water
        if not better:
            return state
        water = ref
    trigger = trailing_trigger(side, water, offset, offset_type, tick)
    if state.trigger is not None:  # it only moves towards the market
        trigger = max(trigger, state.trigger) if side is Side.SELL \
            else min(trigger, state.trigger)
    return TrailState(active=True, water=wire(water), trigger=wire(trigger))


def trailing_fired(side: Side, state: TrailState, ref: Decimal) -> bool:
    """Whether ``ref`` crosses the trigger of an active trailing stop."""
    if not state.active or state.trigger is None:
        return False
    return ref <= state.trigger if side is Side.SELL else ref >= state.trigger


def trailing_limit_price(side: Side, trigger: Decimal, limit_offset: Decimal,
                         tick: Decimal | None = None) -> Decimal:
    """A triggered ``trailing_stop_limit``'s limit price, rounded to ``tick`` towards the
    trigger: never a worse price than trigger -/+ limit_offset."""
    if side is Side.SELL:
        return _to_tick(_EXACT.subtract(trigger, limit_offset), tick, ROUND_CEILING)
    return _to_tick(_EXACT.add(trigger, limit_offset), tick, ROUND_FLOOR)


STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})
TAKE_PROFIT_TYPES = frozenset({OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})


def stop_triggered(type: OrderType, side: Side, stop_price: Decimal, ref: Decimal) -> bool:
    """Whether a stop, take-profit or if-touched order triggers at ``ref``: a stop when the
    price moves against the holder through ``stop_price`` (a buy's on a rise, a sell's on a
    fall), a take-profit or if-touched order on a move in their favour."""
    if type in STOP_TYPES:
        return ref >= stop_price if side is Side.BUY else ref <= stop_price
    return touched(side, stop_price, ref)


def touched(side: Side, stop_price: Decimal, ref: Decimal) -> bool:
    """Whether a market- or limit-if-touched order triggers at ``ref``: a buy on a fall to
    ``stop_price``, a sell on a rise to it (the mirror of a stop)."""
    return ref <= stop_price if side is Side.BUY else ref >= stop_price


def follow(side: Side, path: Iterable[Decimal], offset: Decimal,
           offset_type: TrailingOffsetType, activation: Decimal | None = None,
           tick: Decimal | None = None,
           state: TrailState | None = None) -> tuple[TrailState, int | None]:
    """A trailing stop along a path of reference prices: its state after the path (or at
    the price that fired it) and the index of that price (None: it did not fire)."""
    state = state or TrailState()
    for index, ref in enumerate(path):
        state = track(state, side, ref, offset, offset_type, activation, tick)
        if trailing_fired(side, state, ref):
            return state, index
    return state, None
