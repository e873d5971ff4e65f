"""Native contingent lists at Alpaca: the entry of a list (an order with ``take_profit`` /
``stop_loss``, model/lists.py) sent as Alpaca's ``order_class`` ``bracket`` (both levels)
or ``oto`` (one), so that Alpaca holds the exit from the entry's fill on.

Alpaca's rules (alpaca-docs content/trading/orders.md "Bracket Orders", "OTO Orders",
"Threshold on stop price of stop-loss orders"; data/webapi/endpoints/orders.yaml POST
/v2/orders; alpaca-py alpaca/trading/requests.py ``TakeProfitRequest`` /
``StopLossRequest``, enums.py ``OrderClass``):

- a bracket is three orders: the entry, a take-profit limit at ``take_profit.limit_price``
  and a stop (a stop-limit with ``stop_loss.limit_price``) at ``stop_loss.stop_price``,
  both for the entry's quantity on the other side; an oto is the entry and one of them;
- the legs "won't be active until the first order is completely filled": until then they
  are ``held``. Once it has filled, the take-profit is ``new`` and the stop stays ``held``
  until its stop is reached (Alpaca's forum, "Bracket Order Exit Trades Not Executing");
  one filled cancels the other; a take-profit partly filled leaves the stop the rest;
- "If any one of the orders is canceled, any remaining open order in the group is
  canceled": an entry cancelled after a part fill takes its held legs with it (they are
  never placed for that part; the workers' exit is), and cancelling an open leg once the
  entry has filled cancels the other leg;
- time_in_force ``day`` or ``gtc``, no extended hours; equities only (crypto takes the
  simple class only: enums.py); the stop at least $0.01 beyond the base price (the entry's
  limit price when it is a limit, and the market price) and, for a buy, the take-profit
  above the stop (the reverse for a sell); trailing stops are not taken as legs;
- the request has no client id for a leg (``take_profit`` / ``stop_loss`` carry prices
  only): a leg's ``client_order_id`` is Alpaca's own. Legs are found as the entry's
  ``legs``, nested: GET /v2/orders/{entry's id}?nested=true. Each is also listed on its
  own by GET /v2/orders and has its own trade updates, with nothing naming its entry.

So an entry goes native only when it is a stock's ``market``, ``limit``, ``stop`` or
``stop_limit`` of whole shares, ``gtc`` (the legs take the entry's time in force: a
``day`` entry's legs would expire at the close, our exit is ``gtc``), ``oto_trigger``
``full`` (legs active only on the complete fill), not ``reduce_only``, not sent with
extended hours, its exit one Alpaca's oco class would take too (``wire.check``: whole
shares, a cent between the levels) and its stop a cent beyond the base price. Anything else
keeps the workers' exits.

The legs are the exit ``<entry>-x1`` the workers publish once the entry has ended
(``model.lists.exit_request``: the whole fill): the exit's oco is both legs, the take-profit
its limit (its "parent", as in our oco at Alpaca) and the stop its leg; a one-level exit is
its one leg. Pure: which entries go native, their request, and the adopted exit's report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import ContractError, Fill, OrderSpec, OrderType, OtoTrigger, Side
from producer.contract import TimeInForce as Tif

from ...model.lists import exit_request
from ...model.order import spec_from_request
from ..base import BrokerOrder
from .wire import (
    OCO_STOP_GAP,
    TIME_IN_FORCE,
    amount,
    check,
    is_crypto,
    order_body,
    report,
    report_oco,
)

BRACKET, OTO = "bracket", "oto"
NATIVE_CLASSES = frozenset({BRACKET, OTO})
ENTRY_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP,
                         OrderType.STOP_LIMIT})
_WITH_LIMIT = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
# What the broker's record of an adopted exit says its Alpaca id is: the entry's id behind
# this prefix (the legs are found from it; the exit has no order under its own client id).
ADOPTED_PREFIX = "legs-of:"


def native_exit(entry_id: str, order: OrderSpec, *, reference: Decimal | None = None,
                extended_hours: bool = False) -> OrderSpec | None:
    """The exit Alpaca would hold for the entry ``order`` sent as a bracket / oto, or None
    when it cannot be sent so (the module's docstring). ``reference``: the market price,
    when known (the stop must be a cent beyond it)."""
    if (order.oto_trigger is not OtoTrigger.FULL or order.type not in ENTRY_TYPES
            or (order.take_profit is None and order.stop_loss is None)
            or order.reduce_only or is_crypto(order.symbol) or order.quantity is None
            or order.quantity != order.quantity.to_integral_value()
            or order.time_in_force is not Tif.GTC
            or (extended_hours and order.type is OrderType.LIMIT)):
        return None
    exit_ = spec_from_request(exit_request(entry_id, order, order.quantity, 1), order.account)
    try:
        check(exit_)
    except ContractError:
        return None
    if order.stop_loss is not None:
        bases = [p for p in (order.price if order.type in _WITH_LIMIT else None, reference)
                 if p is not None]
        sell_stop = order.side is Side.BUY
        if any((b - order.stop_loss if sell_stop else order.stop_loss - b) < OCO_STOP_GAP
               for b in bases):
            return None
    return exit_


def body(entry_id: str, order: OrderSpec) -> dict[str, Any]:
    """The JSON body of POST /v2/orders for an entry ``native_exit`` took: the entry's own
    body with ``order_class`` and its levels (the stop a plain stop: our exit's is)."""
    out = order_body(entry_id, order)
    out["time_in_force"] = TIME_IN_FORCE[order.time_in_force]
    both = order.take_profit is not None and order.stop_loss is not None
    out["order_class"] = BRACKET if both else OTO
    if order.take_profit is not None:
        out["take_profit"] = {"limit_price": amount(order.take_profit)}
    if order.stop_loss is not None:
        out["stop_loss"] = {"stop_price": amount(order.stop_loss)}
    return out


def is_native(reply: Mapping[str, Any]) -> bool:
    """Whether an order object is of a bracket or oto (the entry or one of its legs)."""
    return reply.get("order_class") in NATIVE_CLASSES


def legs_of(entry: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The legs of an entry's nested answer, the take-profit (a limit) first; None when the
    answer nests none (not a bracket / oto, or not read nested)."""
    legs = entry.get("legs")
    if not is_native(entry) or not isinstance(legs, list) or not legs:
        return None
    found = [leg for leg in legs if isinstance(leg, Mapping) and "id" in leg]
    return sorted(found, key=lambda leg: leg.get("type") != "limit") or None


def fits(legs: Sequence[Mapping[str, Any]], exit_: OrderSpec) -> bool:
    """Whether the legs are what the exit ``exit_`` would be: both for an oco, the
    take-profit for a limit, the stop for a stop."""
    kinds = [leg.get("type") == "limit" for leg in legs]
    if exit_.type is OrderType.OCO:
        return kinds == [True, False]
    return kinds == [exit_.type is OrderType.LIMIT]


def held(legs: Sequence[Mapping[str, Any]]) -> Decimal:
    """What the legs were given: the entry's quantity (the take-profit's; a stop's own
    shrinks to what a part-filled take-profit left)."""
    return max(Decimal(str(leg.get("qty") or 0)) for leg in legs)


def traded(legs: Sequence[Mapping[str, Any]]) -> bool:
    return any(Decimal(str(leg.get("filled_qty") or 0)) > 0 for leg in legs)


def exit_report(client_order_id: str, entry: Mapping[str, Any],
                legs: Sequence[Mapping[str, Any]], known: Sequence[Fill] = ()
                ) -> BrokerOrder:
    """The adopted exit's report, from its legs: an oco's as our oco's at Alpaca (the
    take-profit its parent, the stop its leg: ``wire.report_oco``), a one-level exit's
    its leg's. Its Alpaca id names the entry (``ADOPTED_PREFIX``), whose nested lookup
    finds the legs again."""
    if len(legs) == 2:
        found = report_oco({**legs[0], "legs": [legs[1]]}, client_order_id, known)
    else:
        found = report(legs[0], client_order_id, known)
    return msgspec.structs.replace(found, broker_order_id=ADOPTED_PREFIX + str(entry["id"]))


def adopted_entry(broker_order_id: str | None) -> str | None:
    """The entry's Alpaca id of an adopted exit's record (its ``broker_order_id``)."""
    if broker_order_id is None or not broker_order_id.startswith(ADOPTED_PREFIX):
        return None
    return broker_order_id[len(ADOPTED_PREFIX):]

