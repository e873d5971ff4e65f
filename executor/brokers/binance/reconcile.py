"""Reconciliation at start: Binance's open orders and balances against our records.

``compare`` is pure: it sorts Binance's open orders into ours (known) and orphans (open at
Binance under a client id we have no record of), and lists our open records that Binance
does not show as open (the tracker looks those up and records how they ended). ``adoption``
builds the record and events that make an orphan ours, when the account adopts orphans.
``shortfalls`` compares balances with our positions: a spot account cannot hold less of an
asset than the long positions we recorded in it (it may hold more: deposits, holdings from
before orderstream), nor be short at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import Event, OrderSpec, Side, TimeInForce

from ...order import Context, Order, apply_report, new_order
from ..base import BrokerOrder
from .filters import BINANCE_TYPE
from .wire import dec, report

OUR_TYPE = {name: ours for ours, name in BINANCE_TYPE.items()}
ADOPTED = "adopted"  # the request id of an adopted order: no request of ours made it


class Shortfall(msgspec.Struct, frozen=True):
    """An asset Binance holds less of than our positions in it add up to."""

    asset: str
    held: Decimal  # free + locked at Binance
    recorded: Decimal  # the sum of our long positions in symbols of this base asset
    symbols: tuple[str, ...]


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


def spec_of(remote: Mapping[str, Any], account: str) -> OrderSpec | None:
    """Our spec of a Binance order, or None when our contract cannot say it."""
    kind = OUR_TYPE.get(remote.get("type", ""))
    if kind is None:
        return None
    price, stop = Decimal(remote.get("price", "0")), Decimal(remote.get("stopPrice", "0"))
    tif = remote.get("timeInForce", "GTC").lower()
    return OrderSpec(account=account, symbol=remote["symbol"], side=Side(remote["side"].lower()),
                     type=kind, quantity=dec(remote["origQty"]),
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


def shortfalls(positions: Mapping[str, Decimal], balances: Mapping[str, tuple[Decimal, Decimal]],
               base_of: Mapping[str, str]) -> list[Shortfall]:
    """``positions``: our net quantity per symbol of this account; ``balances``: asset ->
    (free, locked) at Binance; ``base_of``: symbol -> base asset. A short position counts
    as held below zero (spot cannot be short). Symbols Binance does not list are skipped."""
    recorded: dict[str, Decimal] = {}
    symbols: dict[str, list[str]] = {}
    for symbol, quantity in sorted(positions.items()):
        asset = base_of.get(symbol)
        if asset is None or quantity == 0:
            continue
        recorded[asset] = recorded.get(asset, Decimal(0)) + quantity
        symbols.setdefault(asset, []).append(symbol)
    out = []
    for asset, total in sorted(recorded.items()):
        free, locked = balances.get(asset, (Decimal(0), Decimal(0)))
        held = free + locked
        if held < total or total < 0:
            out.append(Shortfall(asset, held, total, tuple(symbols[asset])))
    return out
