"""Reconciliation of an OANDA account's pending orders and open positions against our
records, as pure logic (orphans.py reads ``GET .../pendingOrders``, ``.../openPositions``
and our records, then acts on the ``Drift``).

Only entry orders (MARKET, LIMIT, STOP, MARKET_IF_TOUCHED) are compared: the dependent
orders of a trade (take-profit, stop-loss, trailing stop) are never orphans. Those an
entry of ours made on its fill (on_fill.py) are its exit's (``held``): an adopted exit is
pending there, not missing; one not adopted yet is OANDA's to hold until it is. An entry
order is ours when its ``clientExtensions.id`` has a record; any other pending entry order
is an orphan: one of our client ids we have no record of, or one placed by someone else
(another program, OANDA's web page, no client id at all). Our open records that OANDA does
not show pending are listed (``missing``): the tracker looks those up.

Positions: OANDA's net units per instrument (``net_units``: long + short, short negative)
against our net position in it. The account may hold positions from before orderstream, or
in instruments we do not trade, so they are not compared with zero: the first pass of a
process records per instrument the part OANDA holds beyond our positions (``beyond``: held
- recorded); later passes report the instruments where that part has changed
(``position_drift``): fills recorded that did not happen, fills that happened but were not
recorded, or trades made outside orderstream (another program, OANDA's web page, a
stop-loss or margin closeout). Decimal throughout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import decimal_text

from ...model.order import Order
from .on_fill import owner

ENTRY_TYPES = frozenset({"MARKET", "LIMIT", "STOP", "MARKET_IF_TOUCHED"})


class PositionDrift(msgspec.Struct, frozen=True):
    """An instrument whose units at OANDA differ from our position in it by another amount
    than at this process's first pass."""

    instrument: str
    held: Decimal  # net units at OANDA (long > 0, short < 0)
    recorded: Decimal  # our net position in it
    start: Decimal  # what OANDA held beyond our position at the first pass

    @property
    def beyond(self) -> Decimal:
        """What OANDA holds beyond our position now."""
        return self.held - self.recorded

    @property
    def change(self) -> Decimal:
        """How much more (or, negative, less) than at start: the units unexplained."""
        return self.beyond - self.start


class Drift(msgspec.Struct, kw_only=True):
    orphans: list[dict[str, Any]]  # v20 Order objects
    known: list[str]  # client ids pending at OANDA that we have records of
    missing: list[str]  # our open records (this account) not pending at OANDA
    positions: list[PositionDrift] = []  # open positions unlike ours (after the first pass)


def client_id(order: Mapping[str, Any]) -> str | None:
    cid = (order.get("clientExtensions") or {}).get("id")
    return str(cid) if cid else None


def entry_orders(reply: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pending entry orders of a ``pendingOrders`` reply."""
    return [dict(o) for o in reply.get("orders") or []
            if isinstance(o, Mapping) and o.get("type") in ENTRY_TYPES
            and o.get("state", "PENDING") == "PENDING"]


def held(reply: Mapping[str, Any]) -> set[str]:
    """The exits of ours whose on-fill orders are pending in a ``pendingOrders`` reply."""
    return {cid for o in reply.get("orders") or []
            if isinstance(o, Mapping) and o.get("state", "PENDING") == "PENDING"
            and (cid := owner(o)) is not None}


def compare(remote: Sequence[Mapping[str, Any]], local: Mapping[str, Order | None],
            account: str, native: Set[str] = frozenset()) -> Drift:
    """``remote``: OANDA's pending entry orders; ``local``: our record (or None) per client
    id of ``remote`` and of our open orders; ``native``: our exits pending there as on-fill
    orders (``held``)."""
    pending = ({client_id(o) for o in remote} | set(native)) - {None}
    orphans = [dict(o) for o in remote
               if (cid := client_id(o)) is None or local.get(cid) is None]
    known = sorted(cid for cid in pending if cid is not None and local.get(cid) is not None)
    missing = sorted(cid for cid, order in local.items()
                     if order is not None and order.spec.account == account
                     and cid not in pending)
    return Drift(orphans=orphans, known=known, missing=missing)


def specifier(order: Mapping[str, Any]) -> str:
    """How to name an orphan in a path: ``@<client id>``, else its order id."""
    cid = client_id(order)
    return f"@{cid}" if cid is not None else str(order["id"])


def describe(order: Mapping[str, Any]) -> str:
    """An orphan in a log line: its client id (or none), instrument, type, units, price and
    order id (never anything of the account)."""
    price = order.get("price")
    return (f"{client_id(order) or '(no client id)'} ({order.get('instrument')} "
            f"{order.get('type')} {order.get('units')}"
            + (f" at {price}" if price is not None else "") + f", order {order.get('id')})")


def net_units(reply: Mapping[str, Any]) -> dict[str, Decimal]:
    """Net units per instrument of an ``openPositions`` reply: long.units + short.units (a
    short side's units are negative); instruments netting to zero are left out."""
    out: dict[str, Decimal] = {}
    for position in reply.get("positions") or []:
        if not isinstance(position, Mapping) or not position.get("instrument"):
            continue
        units = sum((Decimal(str((position.get(side) or {}).get("units") or "0"))
                     for side in ("long", "short")), Decimal(0))
        name = str(position["instrument"])
        units += out.get(name, Decimal(0))
        if units:
            out[name] = units
        else:
            out.pop(name, None)
    return out


def beyond(held: Mapping[str, Decimal], recorded: Mapping[str, Decimal]
           ) -> dict[str, Decimal]:
    """Per instrument on either side, what OANDA holds beyond our position: held -
    recorded (negative while it holds less); instruments where they agree are left out."""
    out = {name: held.get(name, Decimal(0)) - recorded.get(name, Decimal(0))
           for name in sorted(set(held) | set(recorded))}
    return {name: amount for name, amount in out.items() if amount}


def position_drift(held: Mapping[str, Decimal], recorded: Mapping[str, Decimal],
                   start: Mapping[str, Decimal] | None) -> list[PositionDrift]:
    """``held``: OANDA's net units per instrument (``net_units``); ``recorded``: our net
    position per symbol of this account; ``start``: ``beyond`` at this process's first pass
    (None: this is the first pass, which reports nothing: what OANDA holds beyond our
    positions then is taken as it is). The instruments whose part beyond our positions
    differs from ``start``, by name."""
    if start is None:
        return []
    now = beyond(held, recorded)
    return [PositionDrift(name, held.get(name, Decimal(0)), recorded.get(name, Decimal(0)),
                          start.get(name, Decimal(0)))
            for name in sorted(set(now) | set(start))
            if now.get(name, Decimal(0)) != start.get(name, Decimal(0))]


def units(value: Decimal) -> str:
    """An amount of units in a log line: without trailing zeros or an exponent."""
    return decimal_text(value.normalize()) if value else "0"


def describe_drift(d: PositionDrift) -> str:
    """A position drift in a log line: the instrument and the amounts."""
    return (f"{d.instrument}: OANDA holds {units(d.held)} units, our positions add up to "
            f"{units(d.recorded)}: {units(d.beyond)} beyond them, {units(d.start)} at this "
            f"worker's start ({'+' if d.change > 0 else ''}{units(d.change)})")
