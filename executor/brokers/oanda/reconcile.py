"""Reconciliation of an OANDA account's pending orders against our records, as pure logic
(the broker reads ``GET .../pendingOrders`` and our records, then acts on the ``Drift``).

Only entry orders (MARKET, LIMIT, STOP, MARKET_IF_TOUCHED) are compared: the dependent
orders of a trade (take-profit, stop-loss, trailing stop) are not ours to send. An entry
order is ours when its ``clientExtensions.id`` has a record; any other pending entry order
is an orphan: one of our client ids we have no record of, or one placed by someone else
(another program, OANDA's web page, no client id at all). Our open records that OANDA does
not show pending are listed (``missing``): the tracker looks those up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ...model.order import Order

ENTRY_TYPES = frozenset({"MARKET", "LIMIT", "STOP", "MARKET_IF_TOUCHED"})


class Drift(msgspec.Struct, kw_only=True):
    orphans: list[dict[str, Any]]  # v20 Order objects
    known: list[str]  # client ids pending at OANDA that we have records of
    missing: list[str]  # our open records (this account) not pending at OANDA


def client_id(order: Mapping[str, Any]) -> str | None:
    cid = (order.get("clientExtensions") or {}).get("id")
    return str(cid) if cid else None


def entry_orders(reply: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pending entry orders of a ``pendingOrders`` reply."""
    return [dict(o) for o in reply.get("orders") or []
            if isinstance(o, Mapping) and o.get("type") in ENTRY_TYPES
            and o.get("state", "PENDING") == "PENDING"]


def compare(remote: Sequence[Mapping[str, Any]], local: Mapping[str, Order | None],
            account: str) -> Drift:
    """``remote``: OANDA's pending entry orders; ``local``: our record (or None) per client
    id of ``remote`` and of our open orders."""
    pending = {client_id(o) for o in remote} - {None}
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
