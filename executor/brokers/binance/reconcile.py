"""Reconciliation at start: Binance's open orders and balances against our records.

``compare`` is pure: it sorts Binance's open orders into ours (known) and orphans (open at
Binance under a client id we have no record of), and lists our open records that Binance
does not show as open (the tracker looks those up and records how they ended).
``counted`` says what one open record of ours adds to the MAX_NUM_ORDERS count of its
symbol (from the records every worker shares). ``adoption``
builds the record and events that make an orphan ours, when the account adopts orphans.
``shortfalls`` compares balances with our positions. An account may hold more of an asset
than our positions in it (deposits, holdings from before orderstream), and may have sold
some of what it held before, which makes our position negative: what it cannot do is hold
less than its balance at start plus what we recorded since. So the first pass of a process
checks only that it holds at least our long positions, and records per asset the part of
the balance our positions do not explain (``baseline``: held - recorded); later passes
check that this part has not shrunk: if it has, fills were recorded that did not happen, or
assets moved out of the account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import (
    Event,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    TrailingOffsetType,
)

from ...model.order import Context, Order, apply_report, new_order
from ...model.states import is_terminal
from ..base import BrokerOrder
from .filters import BINANCE_TYPE
from .wire import dec, report

OUR_TYPE = {name: ours for ours, name in BINANCE_TYPE.items()}
ADOPTED = "adopted"  # the request id of an adopted order: no request of ours made it


class Shortfall(msgspec.Struct, frozen=True):
    """An asset Binance holds less of than our positions in it (and what it held beyond
    them at start) add up to."""

    asset: str
    held: Decimal  # free + locked at Binance
    recorded: Decimal  # the sum of our positions in symbols of this base asset
    symbols: tuple[str, ...]
    expected: Decimal  # the least it should hold: recorded + its baseline at start


class Drift(msgspec.Struct, kw_only=True):
    orphans: list[dict[str, Any]]  # Binance order objects
    known: list[str]  # client ids open at Binance that we have records of
    missing: list[str]  # our open records (this account) not open at Binance
    shortfalls: list[Shortfall] = []  # balances below our recorded positions


def compare(remote: Sequence[Mapping[str, Any]], local: Mapping[str, Order | None],
            account: str) -> Drift:
    """``remote``: Binance's open orders; ``local``: our record (or None) per client id of
    ``remote`` and of our open orders."""
    open_at_binance = {o["clientOrderId"] for o in remote}
    orphans = [dict(o) for o in remote if local.get(o["clientOrderId"]) is None]
    known = sorted(cid for cid in open_at_binance if local.get(cid) is not None)
    missing = sorted(cid for cid, order in local.items()
                     if order is not None and order.spec.account == account
                     and cid not in open_at_binance)
    return Drift(orphans=orphans, known=known, missing=missing)


class Counted(msgspec.Struct, frozen=True, gc=False):
    """What one open record of ours adds to MAX_NUM_ORDERS of its symbol at Binance."""

    symbol: str | None  # None: another account's order, or no record (yet)
    orders: int  # open orders at Binance: an OCO is two until one leg has traded
    settled: bool  # True: stays so while the order is open; False: read the record again


def counted(record: Order | None, account: str) -> Counted:
    """An OCO counts two orders until one leg has traded (the other expires then), anything
    else one. An order still ``pending_submit`` counts none: it may be waiting for the rate
    limiter, not at Binance (one in flight is left to Binance's own check). Read again next
    time: a record not written yet, one pending submission, an OCO's."""
    if record is None or is_terminal(record.state) or record.state is OrderState.PENDING_SUBMIT:
        return Counted(None, 0, False)
    spec = record.spec
    if spec.account != account:
        return Counted(None, 0, True)
    if spec.type is OrderType.OCO:
        return Counted(spec.symbol, 1 if record.state is OrderState.PARTIALLY_FILLED else 2,
                       False)
    return Counted(spec.symbol, 1, True)


def spec_of(remote: Mapping[str, Any], account: str) -> OrderSpec | None:
    """Our spec of a Binance order, or None when our contract cannot say it."""
    kind = OUR_TYPE.get(remote.get("type", ""))
    if kind is None:
        return None
    price, stop = Decimal(remote.get("price", "0")), Decimal(remote.get("stopPrice", "0"))
    tif = remote.get("timeInForce", "GTC").lower()
    trailing: dict[str, Any] = {}
    if remote.get("trailingDelta"):
        # Only the two shapes our trailing_stop is sent as (filters.CONDITIONAL_TYPE); any
        # other trailing order (a STOP_LOSS with a stopPrice, a *_LIMIT) our contract cannot
        # say.
        shape = (remote["type"], bool(stop))
        if shape not in (("STOP_LOSS", False), ("TAKE_PROFIT", True)):
            return None
        kind = OrderType.TRAILING_STOP
        trailing = {"trailing_offset": dec(remote["trailingDelta"]),
                    "trailing_offset_type": TrailingOffsetType.BPS,
                    "activation_price": dec(stop) if stop else None}
        stop = Decimal(0)
    return OrderSpec(account=account, symbol=remote["symbol"], side=Side(remote["side"].lower()),
                     type=kind, quantity=dec(remote["origQty"]), **trailing,
                     price=dec(price) if price else None,
                     stop_price=dec(stop) if stop else None,
                     time_in_force=TimeInForce(tif) if tif in ("gtc", "ioc", "fok")
                     else TimeInForce.GTC,
                     metadata={"adopted_from": "binance"})


def adoption(remote: Mapping[str, Any], account: str, ctx: Context
             ) -> tuple[Order, list[Event], BrokerOrder] | None:
    """The record and events that make a Binance order ours (None: not representable)."""
    spec = spec_of(remote, account)
    if spec is None:
        return None
    cid = remote["clientOrderId"]
    order, events = new_order(cid, ADOPTED, spec, ctx)
    broker = report(remote, (), cid)
    # Fills before adoption are not replayed as ours: the tracker's lookups add them.
    broker = msgspec.structs.replace(broker, fills=[])
    events += apply_report(order, broker, ctx)
    return order, events, broker


def _recorded(positions: Mapping[str, Decimal], base_of: Mapping[str, str]
              ) -> tuple[dict[str, Decimal], dict[str, list[str]]]:
    """Our net quantity per base asset, and the symbols it comes from."""
    recorded: dict[str, Decimal] = {}
    symbols: dict[str, list[str]] = {}
    for symbol, quantity in sorted(positions.items()):
        asset = base_of.get(symbol)
        if asset is None or quantity == 0:
            continue
        recorded[asset] = recorded.get(asset, Decimal(0)) + quantity
        symbols.setdefault(asset, []).append(symbol)
    return recorded, symbols


def _held(balances: Mapping[str, tuple[Decimal, Decimal]], asset: str) -> Decimal:
    free, locked = balances.get(asset, (Decimal(0), Decimal(0)))
    return free + locked


def baseline(positions: Mapping[str, Decimal], balances: Mapping[str, tuple[Decimal, Decimal]],
             base_of: Mapping[str, str]) -> dict[str, Decimal]:
    """Per base asset of a listed symbol (and per asset held), what the account holds
    beyond our positions in it: held - recorded (negative while it holds less)."""
    recorded, _ = _recorded(positions, base_of)
    assets = set(base_of.values()) | set(balances) | set(recorded)
    return {a: _held(balances, a) - recorded.get(a, Decimal(0)) for a in sorted(assets)}


def shortfalls(positions: Mapping[str, Decimal], balances: Mapping[str, tuple[Decimal, Decimal]],
               base_of: Mapping[str, str], start: Mapping[str, Decimal] | None = None
               ) -> list[Shortfall]:
    """``positions``: our net quantity per symbol of this account; ``balances``: asset ->
    (free, locked) at Binance; ``base_of``: symbol -> base asset; ``start``: the
    ``baseline`` of this process's first pass (None: this is the first pass). An asset is
    short when it holds less than our recorded quantity plus its baseline at start (0 on
    the first pass, where a negative position, holdings from before sold, is never short).
    Symbols Binance does not list are skipped."""
    recorded, symbols = _recorded(positions, base_of)
    out = []
    for asset, total in sorted(recorded.items()):
        held = _held(balances, asset)
        floor = total + (start.get(asset, Decimal(0)) if start is not None else Decimal(0))
        if held < floor:
            out.append(Shortfall(asset, held, total, tuple(symbols[asset]), floor))
    return out
