"""Native contingent lists at Binance: the entry of a list (an order with ``take_profit`` /
``stop_loss``, model/lists.py) sent together with its exit as one order list, ``POST
/api/v3/orderList/otoco`` (both levels: the exit is an oco) or ``/oto`` (one level: a limit
or a stop), so that Binance places the exit itself the moment the entry has fully filled.

Binance's rules (rest-api.md "New Order list - OTO" / "OTOCO"): the working order is LIMIT
or LIMIT_MAKER; the pending orders are placed only once it is FULLY filled (an entry
cancelled or expired after a part fill expires them unplaced, OTO_PHASE_ONE_EXPIRED);
cancelling any order of the list cancels the rest; the symbol's exchangeInfo says
``otoAllowed``. So an entry goes native only when it is a ``limit`` or ``limit_maker``,
``oto_trigger`` ``full`` (``partial`` wants an exit per part: emulated), not
``reduce_only``, not an iceberg, on a symbol that allows OTO, and its exit passes the
filters as the workers' exit would; anything else keeps the workers' exits.

The pending orders are exactly the exit the workers publish once the entry has ended
(``model.lists.exit_request``: the whole entry's quantity) under that exit's client ids:
an OTOCO's pending pair are the legs of the exit oco ``<entry>-x1`` (``wire.leg_ids``) and
the list's listClientOrderId is ``<entry>-x1``, so the exit's OCO lookups by its id find
them; an OTO's pending order is the exit ``<entry>-x1`` itself (the list is named
``<entry>-xL``: an order list's id and an order's are kept apart). When the workers' exit
reaches the adapter, what Binance holds under those ids is taken as it (broker.py
``_adopt``), never sent a second time.

Pure: which entries go native, their parameters, and which orders of a list are the
exit's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from producer.contract import ContractError, OrderSpec, OrderType, OtoTrigger, TimeInForce
from producer.ids import derived_id

from ...model.lists import exit_id, exit_request
from ...model.order import spec_from_request
from ..native_lists import entry_of as entry_of
from ..native_lists import first_exit_id as first_exit_id
from .filters import BINANCE_TYPE, Rules, check, oco_legs
from .wire import amount, leg_ids, leg_params

WORKING = frozenset({OrderType.LIMIT, OrderType.LIMIT_MAKER})
_WORKING_TIF = frozenset({TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK})


def native_exit(entry_id: str, order: OrderSpec, rules: Rules, *,
                reference: Decimal | None = None, open_orders: int | None = None
                ) -> OrderSpec | None:
    """The exit Binance would hold for the entry ``order`` sent as one list, or None when
    it cannot be sent so (see the module's docstring). The exit is checked against the
    filters, with the last price when known (an oco's legs must bracket it) and the open
    orders the list adds to (MAX_NUM_ORDERS)."""
    if (order.oto_trigger is not OtoTrigger.FULL or order.type not in WORKING
            or (order.take_profit is None and order.stop_loss is None)
            or order.reduce_only or order.display_quantity is not None
            or order.quantity is None or order.price is None or not rules.oto
            or order.time_in_force not in _WORKING_TIF):
        return None
    exit_ = spec_from_request(exit_request(entry_id, order, order.quantity, 1), order.account)
    try:
        check(exit_, rules, reference=reference,
              open_orders=None if open_orders is None else open_orders + 1)
    except ContractError:
        return None
    return exit_


def oto_list_id(entry_id: str) -> str:
    """The listClientOrderId of an entry's OTO (one pending order, the exit itself)."""
    return derived_id(entry_id, "-xL")


def list_params(entry_id: str, entry: OrderSpec, exit_: OrderSpec) -> tuple[str, dict[str, str]]:
    """The endpoint (``otoco`` or ``oto``) and parameters of the list of ``entry`` (working)
    and ``exit_`` (pending; ``native_exit``'s), FULL answers."""
    assert entry.quantity is not None and entry.price is not None
    assert exit_.quantity is not None
    exit_cid = exit_id(entry_id, 1)
    both = exit_.type is OrderType.OCO
    params = {
        "symbol": entry.symbol,
        "listClientOrderId": exit_cid if both else oto_list_id(entry_id),
        "newOrderRespType": "FULL",
        "workingType": BINANCE_TYPE[entry.type],
        "workingSide": entry.side.upper(),
        "workingClientOrderId": entry_id,
        "workingPrice": amount(entry.price),
        "workingQuantity": amount(entry.quantity),
    }
    if entry.type is OrderType.LIMIT:
        params["workingTimeInForce"] = entry.time_in_force.upper()
    params["pendingSide"] = exit_.side.upper()
    params["pendingQuantity"] = amount(exit_.quantity)
    if not both:
        params.update(leg_params("pending", exit_, exit_cid))
        return "oto", params
    for (position, leg), cid in zip(oco_legs(exit_), leg_ids(exit_cid), strict=True):
        params.update(leg_params(f"pending{position.capitalize()}", leg, cid))
    return "otoco", params


def pending_ids(entry_id: str) -> frozenset[str]:
    """The client ids the pending orders of ``entry_id``'s native list carry: the exit
    ``<entry>-x1`` (an OTO) and its legs (an OTOCO)."""
    exit_cid = exit_id(entry_id, 1)
    return frozenset({exit_cid, *leg_ids(exit_cid)})


def exit_orders(found: Mapping[str, Any], key: str = "orders") -> list[Mapping[str, Any]]:
    """The orders (``found[key]``: ``orders`` or ``orderReports``) of a list object that
    are an oco's under its listClientOrderId: all of an OCO's; of an OTOCO of ours
    (listClientOrderId ``<entry>-x1``) its pending pair, without the working order (the
    entry, an order of its own)."""
    orders: Iterable[Mapping[str, Any]] = found.get(key) or []
    if found.get("contingencyType") != "OTO":
        return list(orders)
    legs = set(leg_ids(str(found.get("listClientOrderId", ""))))
    return [o for o in orders
            if (o.get("origClientOrderId") or o.get("clientOrderId")) in legs]


def working_of(found: Mapping[str, Any]) -> str | None:
    """The working order's client id of an OTO / OTOCO list of ours (an entry sent with its
    exits: the other orders carry ``pending_ids`` of it), else None."""
    if found.get("contingencyType") != "OTO":
        return None
    ids = [str(o.get("clientOrderId", "")) for o in found.get("orders") or []]
    for cid in ids:
        if all(other == cid or other in pending_ids(cid) for other in ids):
            return cid
    return None
