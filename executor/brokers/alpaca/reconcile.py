"""Reconciliation of Alpaca's open orders against our records (pure: no I/O).

An orphan is an order open at Alpaca under a client id we have no record of: placed by
another program or by hand on the account, or by a deployment that lost its records. It
is reported (logged once per process, counted), never touched: Alpaca's own id and the
order's fields are what an operator needs to find it. The stop leg of an oco carries a
client id Alpaca made up, never ours: it is its parent's, found (or not) by the parent.
The legs of a bracket / oto entry of ours (bracket.py) carry Alpaca's client ids too: they
are the entry's exit, found by the entry's nested answer (``entries_of_legs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...model.order import Order
from .bracket import is_native, legs_of
from .wire import is_oco_leg


def orphans(remote: Sequence[Mapping[str, Any]], local: Mapping[str, Order | None]
            ) -> list[Mapping[str, Any]]:
    """``remote``: Alpaca's open orders; ``local``: our record (or None) per client id of
    ``remote``. The open orders without a record, in Alpaca's order (an oco's leg is
    never one by itself)."""
    return [o for o in remote if not is_oco_leg(o)
            and local.get(str(o.get("client_order_id", ""))) is None]


def entries_of_legs(nested: Sequence[Any]) -> dict[str, str]:
    """``nested``: orders read nested (GET /v2/orders?nested=true). The Alpaca id of each
    leg of a bracket / oto -> its entry's client id."""
    return {str(leg["id"]): str(entry.get("client_order_id", ""))
            for entry in nested if isinstance(entry, Mapping) and is_native(entry)
            for leg in legs_of(entry) or []}


def describe(orphan: Mapping[str, Any]) -> str:
    """What identifies an orphan in the log: its ids and what it trades, Alpaca's fields
    only."""
    size = (f"qty {orphan.get('qty')}" if orphan.get("qty") is not None
            else f"notional {orphan.get('notional')}")
    return (f"{orphan.get('client_order_id')} ({orphan.get('side')} {orphan.get('type')} "
            f"{orphan.get('symbol')} {size}, status {orphan.get('status')}, Alpaca id "
            f"{orphan.get('id')})")
