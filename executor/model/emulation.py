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
EMULABLE_TYPES = TRAILING_TYPES | TOUCHED_TYPES | STOP_TYPES | TAKE_PROFIT_TYPES
# Sent as a limit at ``price`` once triggered.
_LIMIT_AT_PRICE = frozenset({OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT,
                             OrderType.LIMIT_IF_TOUCHED})


def emulable(spec: OrderSpec) -> bool:
    return spec.type in EMULABLE_TYPES


def release_of(spec: OrderSpec, limit: Decimal | None) -> OrderSpec:
    """The plain order a triggered ``spec`` becomes: a market order, or a limit at
    ``limit``; every conditional field gone, everything else (quantity, time in force,
    reduce_only, strategy, metadata) kept."""
    return msgspec.structs.replace(
        spec, type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        price=None if limit is None else wire(limit), stop_price=None,
        trailing_offset=None, trailing_offset_type=None, activation_price=None,
        limit_offset=None)


def template(spec: OrderSpec) -> OrderSpec:
    """The release checked against the broker's rules when the order is accepted: the
    market order, or the limit at ``price``, that it will be. A trailing limit's price is
    only known once triggered; its market form is checked here, its limit when sent."""
    if spec.type in _LIMIT_AT_PRICE:
        return release_of(spec, spec.price)
    return release_of(spec, None)


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
