"""What the emulator decides for one held order at one reference price. Pure.

A broker without a native order for a conditional type (trailing stop, if-touched) gets it
emulated: the worker holds the order (its record says ``emulation: held``) and, when the
reference price triggers it, releases a plain market or limit order under the same client
id. The triggers are the paper exchange's (model/triggers.py), so an order behaves alike
natively at the paper exchange and emulated anywhere:

- ``trailing_stop`` releases a market order; ``trailing_stop_limit`` a limit at trigger -/+
  ``limit_offset`` (rounded to the tick towards the trigger, never below one tick);
- ``market_if_touched`` a market order, ``limit_if_touched`` a limit at ``price``;
- a ``stop`` or ``take_profit`` (for a broker without one) a market order, a ``stop_limit``
  or ``take_profit_limit`` a limit at ``price``;
- an ``oco`` one of its legs, whichever the price reaches first: its limit leg as a limit
  at ``price`` once the price touches it (a resting limit's fill, less its place in the
  queue), its stop leg as a market order (or a limit at ``stop_limit_price``) once the
  price passes ``stop_price``; the other leg is never sent;
- a stop, take-profit or if-touched order already triggered at the price it is held at
  is refused ("would
  trigger immediately"), as the paper exchange refuses it, rather than sent at once;
- a good-till-date order expires when its ``expire_at`` comes while held; ``day`` and the
  auctions (``opg``, ``cls``) are not emulated (the worker does not know the broker's
  trading day).

The reference that starts a trail (or makes a new water mark) never fires it.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

from producer.contract import (
    TOUCHED_TYPES,
    TRAILING_TYPES,
    OrderSpec,
    OrderType,
    TimeInForce,
    TrailingOffsetType,
    WireDecimal,
    wire,
)

from . import triggers
from .triggers import STOP_TYPES, TAKE_PROFIT_TYPES, TrailState

WOULD_TRIGGER = "order would trigger immediately"
# As the paper exchange says them (brokers/paper/matching.py).
GTD_EXPIRED = "good-till-date: expire_at reached"
GTD_IN_PAST = "good-till-date: expire_at is not in the future"
# The worker does not know a broker's trading day or auctions: an order that lives by them
# is left to a broker that does.
UNEMULATED_TIME_IN_FORCE = frozenset({TimeInForce.DAY, TimeInForce.OPG, TimeInForce.CLS})


class Emulation(StrEnum):
    """Where an emulated order stands, in its record's ``emulation`` field."""

    HELD = "held"  # watched by the account's emulator
    TRIGGERED = "triggered"  # its release is being sent (the release token says by whom)
    RELEASED = "released"  # at the broker under its client id: the broker's from now on
    CANCELLED = "cancelled"  # cancelled while held: never sent
    EXPIRED = "expired"  # its expire_at (gtd) passed while held: never sent
    REFUSED = "refused"  # the broker refused its release for good: rejected


class Held(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The emulator's state of one order, stored with its record (it survives a restart)."""

    trail: TrailState | None = None  # trailing types
    trigger_price: WireDecimal | None = None  # the reference that fired it
    release: OrderSpec | None = None  # what is sent once triggered
    triggered_at: int = 0


# What the emulator can hold: the conditional types, and the stops and take-profits some
# brokers lack (Alpaca's take-profit, OANDA's stop-limit, a crypto stop at Alpaca).
EMULABLE_TYPES = (TRAILING_TYPES | TOUCHED_TYPES | STOP_TYPES | TAKE_PROFIT_TYPES
                  | {OrderType.OCO})
# Sent as a limit at ``price`` once triggered.
_LIMIT_AT_PRICE = frozenset({OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT,
                             OrderType.LIMIT_IF_TOUCHED})


def emulable(spec: OrderSpec) -> bool:
    return spec.type in EMULABLE_TYPES


def release_of(spec: OrderSpec, limit: Decimal | None,
               time_in_force: TimeInForce | None = None) -> OrderSpec:
    """The plain order a triggered ``spec`` becomes: a market order, or a limit at
    ``limit``; every conditional field gone, everything else (quantity, time in force
    unless given, reduce_only, strategy, metadata) kept."""
    return msgspec.structs.replace(
        spec, type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        price=None if limit is None else wire(limit), stop_price=None,
        stop_limit_price=None, trailing_offset=None, trailing_offset_type=None,
        activation_price=None, limit_offset=None,
        time_in_force=time_in_force or spec.time_in_force)


def _oco_legs(spec: OrderSpec) -> tuple[OrderSpec, OrderSpec]:
    """An oco's two releases: its limit leg (a good-till-cancelled limit at ``price``, the
    contract's limit-maker leg) and its stop leg (a market order, or a limit at
    ``stop_limit_price`` with the oco's time in force, which is that leg's)."""
    return (release_of(spec, spec.price, TimeInForce.GTC),
            release_of(spec, spec.stop_limit_price))


def _oco_fired(spec: OrderSpec, ref: Decimal) -> OrderSpec | None:
    """Which leg of an oco ``ref`` releases: the limit leg once the price reaches it (a
    sell's above the market, a buy's below), the stop leg once it passes the stop the other
    way; None while between."""
    assert spec.price is not None and spec.stop_price is not None
    limit, stop = _oco_legs(spec)
    if triggers.touched(spec.side, spec.price, ref):
        return limit
    if triggers.stop_triggered(OrderType.STOP, spec.side, spec.stop_price, ref):
        return stop
    return None


def template(spec: OrderSpec) -> OrderSpec:
    """The release checked against the broker's rules when the order is accepted: the
    market order, or the limit at ``price``, that it will be. A trailing limit's price is
    only known once triggered; its market form is checked here, its limit when sent."""
    if spec.type in _LIMIT_AT_PRICE:
        return release_of(spec, spec.price)
    return release_of(spec, None)


def templates(spec: OrderSpec) -> tuple[OrderSpec, ...]:
    """Every order ``spec`` may be released as (an oco: either leg), each checked against
    the broker's rules when it is accepted."""
    if spec.type is OrderType.OCO:
        return _oco_legs(spec)
    return (template(spec),)


def expired(spec: OrderSpec, now: int) -> bool:
    """Whether a good-till-date order's ``expire_at`` has come."""
    return (spec.time_in_force is TimeInForce.GTD and spec.expire_at is not None
            and now >= spec.expire_at)


def first_seen(spec: OrderSpec, ref: Decimal | None, now: int,
               tick: Decimal | None = None) -> tuple[Held, str | None]:
    """The state an order is held in, from the reference at acceptance (None: none yet,
    the emulator starts from its first). Second: why it is refused instead."""
    if expired(spec, now):
        return Held(), GTD_IN_PAST
    if ref is None:
        return Held(), None
    if spec.type is OrderType.OCO:
        return Held(), (WOULD_TRIGGER if _oco_fired(spec, ref) is not None else None)
    if spec.type not in TRAILING_TYPES:
        assert spec.stop_price is not None
        if triggers.stop_triggered(spec.type, spec.side, spec.stop_price, ref):
            return Held(), WOULD_TRIGGER
        return Held(), None
    return Held(trail=_track(spec, TrailState(), ref, tick)), None


def _track(spec: OrderSpec, state: TrailState, ref: Decimal,
           tick: Decimal | None) -> TrailState:
    assert spec.trailing_offset is not None
    return triggers.track(state, spec.side, ref, spec.trailing_offset,
                          spec.trailing_offset_type or TrailingOffsetType.PRICE,
                          spec.activation_price, tick)


def step(spec: OrderSpec, held: Held, ref: Decimal, now: int,
         tick: Decimal | None = None) -> Held | None:
    """The state after seeing ``ref``: None when nothing changed (nothing to write), else
    a new one; a triggered one carries its ``release``."""
    if spec.type is OrderType.OCO:
        leg = _oco_fired(spec, ref)
        return None if leg is None else Held(trigger_price=wire(ref), release=leg,
                                             triggered_at=now)
    if spec.type not in TRAILING_TYPES:
        assert spec.stop_price is not None
        if not triggers.stop_triggered(spec.type, spec.side, spec.stop_price, ref):
            return None
        at = spec.price if spec.type in _LIMIT_AT_PRICE else None
        return Held(trigger_price=wire(ref), release=release_of(spec, at), triggered_at=now)
    before = held.trail or TrailState()
    trail = _track(spec, before, ref, tick)
    if not triggers.trailing_fired(spec.side, trail, ref):
        return None if trail is before and held.trail is not None else Held(trail=trail)
    limit: Decimal | None = None
    if spec.type is OrderType.TRAILING_STOP_LIMIT:
        assert trail.trigger is not None and spec.limit_offset is not None
        price = triggers.trailing_limit_price(spec.side, trail.trigger, spec.limit_offset,
                                              tick)
        limit = price if tick is None else max(price, tick)  # a sell's stays positive
    return Held(trail=trail, trigger_price=wire(ref), release=release_of(spec, limit),
                triggered_at=now)
