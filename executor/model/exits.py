"""Stop-loss and take-profit on a position (``orderstream sl-tp``): when they fire. Pure.

An exit belongs to one account and symbol and follows whatever position is there: a long
one is closed by a sell when the price falls to ``stop_loss`` or rises to ``take_profit``
(or falls ``trailing_offset`` from its best since the exit was set); a short one by a buy,
mirrored. The closing order is ``reduce_only`` and as large as the position when it fires,
so it follows the position as it grows or shrinks; a market order, or a limit at the level
that fired (``close = "limit"``). The triggers are model/triggers.py's, as for every
conditional order: a stop-loss is a stop, a take-profit a touched order, the trail a
trailing stop of the closing side.

One closing order at a time: an exit that fired waits for that order to end (and for the
positions fold to have counted its fills) before it may fire again, for what is left.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Literal

import msgspec

from producer.contract import OrderType, Side, TrailingOffsetType, WireDecimal, wire

from . import triggers
from .triggers import TrailState

Close = Literal["market", "limit"]
_EXACT = Context(prec=100)
# Why an exit cannot be set where requests must be signed.
UNSIGNABLE = ("requests must be signed ([auth] keys) and a worker cannot sign the closing "
              "order: sl-tp is not available with signed requests yet")


class Exit(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The stop-loss / take-profit of one position, stored in ``Keys.exits(account)``."""

    stop_loss: WireDecimal | None = None
    take_profit: WireDecimal | None = None
    trailing_offset: WireDecimal | None = None
    trailing_offset_type: TrailingOffsetType = TrailingOffsetType.PRICE
    close: Close = "market"
    set_at: int = 0
    set_by: str = ""
    generation: int = 0  # closing orders sent so far: the next one's client id
    fired: str | None = None  # the client id of the closing order in flight
    trail: TrailState | None = None
    long: bool | None = None  # the position's direction the trail follows
    # A closing order that ended without closing (denied, rejected, cancelled): the next
    # one not before this (epoch ms), so a refusal is not repeated every pass.
    not_before: int = 0


class AutoExit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[exits.<account>]``: the exit every position of the account gets when it opens,
    in percent of its average price (a long's stop-loss below it, a short's above)."""

    stop_loss_percent: Decimal | None = None
    take_profit_percent: Decimal | None = None
    trailing_percent: Decimal | None = None
    close: Close = "market"

    def __post_init__(self) -> None:
        values = {"stop_loss_percent": self.stop_loss_percent,
                  "take_profit_percent": self.take_profit_percent,
                  "trailing_percent": self.trailing_percent}
        if all(v is None for v in values.values()):
            raise ValueError("give stop_loss_percent, take_profit_percent or "
                             "trailing_percent")
        for name, value in values.items():
            if value is not None and (not value.is_finite() or not 0 < value < 100):
                raise ValueError(f"{name} must be above 0 and below 100, got {value}")
        if self.close == "limit" and self.trailing_percent is not None:
            raise ValueError("close = \"limit\" takes no trailing_percent (its limit would "
                             "be the moving trigger)")


def auto_exit(auto: AutoExit, quantity: Decimal, average_price: Decimal, now: int,
              tick: Decimal | None = None) -> Exit:
    """The exit ``auto`` gives a position of ``quantity`` (signed) opened at
    ``average_price``: levels at the percentages, on the tick, each rounded away from the
    price (a stop-loss never nearer than asked, nor a take-profit)."""
    long = quantity > 0
    hundred = Decimal(100)

    def level(percent: Decimal | None, above: bool) -> WireDecimal | None:
        if percent is None:
            return None
        factor = (hundred + percent) / hundred if above else (hundred - percent) / hundred
        value = _EXACT.multiply(average_price, factor)
        if tick is not None:
            value = _EXACT.multiply(
                _EXACT.divide(value, tick).to_integral_value(
                    ROUND_CEILING if above else ROUND_FLOOR, _EXACT), tick)
        return wire(value)
    return Exit(stop_loss=level(auto.stop_loss_percent, above=not long),
                take_profit=level(auto.take_profit_percent, above=long),
                trailing_offset=None if auto.trailing_percent is None else wire(
                    auto.trailing_percent),
                trailing_offset_type=TrailingOffsetType.PERCENT, close=auto.close,
                set_at=now, set_by="auto", long=long)


class Closing(msgspec.Struct, frozen=True, kw_only=True):
    """The order that closes a position: which level fired it, at what price."""

    why: Literal["stop_loss", "take_profit", "trailing_stop"]
    side: Side
    quantity: WireDecimal
    type: OrderType
    price: WireDecimal | None  # a limit's
    trigger: WireDecimal  # the reference that fired it


def closing_side(quantity: Decimal) -> Side:
    return Side.SELL if quantity > 0 else Side.BUY


def check_levels(exit: Exit, quantity: Decimal, ref: Decimal | None) -> str | None:
    """Why these levels cannot protect this position now (None: they can): a stop-loss or
    take-profit on the wrong side of the price would close it at once."""
    if quantity == 0:
        return "there is no position to protect"
    side = closing_side(quantity)
    if ref is None:
        return None
    if exit.stop_loss is not None and triggers.stop_triggered(
            OrderType.STOP, side, exit.stop_loss, ref):
        return (f"stop_loss {exit.stop_loss} is already reached at the price {ref} "
                f"({'long' if quantity > 0 else 'short'} position)")
    if exit.take_profit is not None and triggers.touched(side, exit.take_profit, ref):
        return (f"take_profit {exit.take_profit} is already reached at the price {ref} "
                f"({'long' if quantity > 0 else 'short'} position)")
    return None


def closable(quantity: Decimal, step: Decimal | None) -> Decimal:
    """What of a position (signed) an order can close: its size rounded down to the
    broker's quantity step (a fee taken in the base asset leaves digits no order takes);
    0: only dust is left."""
    size = abs(quantity)
    if step is None:
        return size
    return _EXACT.multiply(_EXACT.divide(size, step).to_integral_value(ROUND_FLOOR, _EXACT),
                           step)


def decide(exit: Exit, quantity: Decimal, ref: Decimal, now: int,
           tick: Decimal | None = None,
           step: Decimal | None = None) -> tuple[Exit | None, Closing | None]:
    """What ``ref`` does to an exit of a position of ``quantity`` (signed): its new state
    (None: unchanged) and the closing order it fires (None: none), for as much of the
    position as the broker's ``step`` lets an order close. Nothing while flat or while a
    closing order is in flight."""
    if quantity == 0 or exit.fired is not None or now < exit.not_before:
        return None, None
    side = closing_side(quantity)
    long = quantity > 0
    state = exit
    if exit.long is not long:  # a new position, or the other way round: trail afresh
        state = msgspec.structs.replace(exit, long=long, trail=None)
    fired: Literal["stop_loss", "take_profit", "trailing_stop"] | None = None
    level: Decimal | None = None
    if state.trailing_offset is not None:
        before = state.trail or TrailState()
        trail = triggers.track(before, side, ref, state.trailing_offset,
                               state.trailing_offset_type, None, tick)
        if trail is not before:
            state = msgspec.structs.replace(state, trail=trail)
        if triggers.trailing_fired(side, trail, ref):
            fired, level = "trailing_stop", trail.trigger
    if fired is None and state.stop_loss is not None and triggers.stop_triggered(
            OrderType.STOP, side, state.stop_loss, ref):
        fired, level = "stop_loss", state.stop_loss
    if fired is None and state.take_profit is not None and triggers.touched(
            side, state.take_profit, ref):
        fired, level = "take_profit", state.take_profit
    changed = None if state is exit else state
    if fired is None:
        return changed, None
    assert level is not None
    limit = exit.close == "limit"
    closing = Closing(why=fired, side=side, quantity=wire(closable(quantity, step)),
                      type=OrderType.LIMIT if limit else OrderType.MARKET,
                      price=wire(level) if limit else None, trigger=wire(ref))
    return state, closing


def closing_id(account: str, symbol: str, exit: Exit) -> str:
    """The client id of an exit's next closing order: the same for every try of one
    firing (a request published twice is a duplicate, never a second order), a new one
    for the next firing or a new exit. 31 characters, within every broker's limit."""
    digest = hashlib.sha256(f"{account}|{symbol}|{exit.set_at}".encode()).hexdigest()[:24]
    return f"sltp{exit.generation}-{digest}"
