"""Native contingent lists at OANDA: the entry of a list (an order with ``take_profit`` /
``stop_loss``, model/lists.py) sent with ``takeProfitOnFill`` / ``stopLossOnFill``, so
that OANDA attaches the exits to the trade the entry opens, in the fill's own batch. Pure:
which entries go native, their on-fill fields, the ids of the dependent orders, and the
report of the exit they make.

What v20 says (oanda/v20-openapi @70324cf, ``json/v20.json``; oanda/v20-python
``src/v20/order.py``, ``transaction.py``):
- ``MarketOrderRequest`` and ``LimitOrderRequest`` take ``takeProfitOnFill``
  (TakeProfitDetails: ``price``, ``timeInForce`` GTC/GTD/GFD, ``gtdTime``,
  ``clientExtensions``), ``stopLossOnFill`` (StopLossDetails: ``price`` or ``distance``,
  the same times in force, ``clientExtensions``, ``guaranteed``) and
  ``trailingStopLossOnFill`` (TrailingStopLossDetails: ``distance`` in price units only);
  they are made "when an Order is filled that opens a Trade".
- An order is filled once: ``Order.fillingTransactionID`` is one id, ``OrderState`` is
  PENDING, FILLED, TRIGGERED or CANCELLED (no partial state), and the fill's
  ``OrderFillTransaction.tradeOpened`` is one ``TradeOpen``. So an entry, a limit as much
  as a market order, opens at most one trade and its on-fill orders are made at most once:
  their client ids never need to differ per trade, and an entry with ``oto_trigger``
  ``partial`` has one part, the whole fill (both triggers go native).
- The fill first reduces trades of the other side (``tradesClosed``, ``tradeReduced``):
  only the rest opens the trade, and the dependent orders close that trade whole
  (TakeProfitOrder / StopLossOrder have ``tradeID`` and ``clientTradeID``, no units).
  OANDA sizes them per trade; the workers' exit is the fill capped by the position, the
  same amount unless the position was reduced otherwise (then it replaces them, below).
- The dependent orders are TAKE_PROFIT / STOP_LOSS orders (transactions
  TAKE_PROFIT_ORDER / STOP_LOSS_ORDER, reason ON_FILL, ``orderFillTransactionID``), found
  by ``@<client id>`` like any order; one that fills closes the trade (ORDER_FILL, reason
  TAKE_PROFIT_ORDER / STOP_LOSS_ORDER, its ``clientOrderID``), which cancels the others
  (ORDER_CANCEL, reason LINKED_TRADE_CLOSED): v20's one-cancels-other.
- Refusals: at create, a 400 ``orderRejectTransaction`` with a reason naming the on-fill
  part (``TAKE_PROFIT_ON_FILL_*``, ``STOP_LOSS_ON_FILL_*``, ``TRAILING_STOP_LOSS_ON_FILL_*``,
  ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS: nothing placed, wire.py ``OnFillRefused``); at
  fill, the entry cancelled with an ``OrderCancelReason`` such as
  TAKE_PROFIT_ON_FILL_CLIENT_ORDER_ID_ALREADY_EXISTS or TAKE_PROFIT_ON_FILL_LOSS (a
  take-profit on the losing side of the fill price).

Decisions:
- Native: ``market`` and ``limit`` entries (the request types we send that take on-fill
  details and open a trade at once or at their price), not ``reduce_only`` (REDUCE_ONLY
  opens no trade), with the exit's prices at the instrument's precision and, for a limit,
  on the winning side of its price (else OANDA would cancel the entry at its fill).
  Anything else keeps the workers' exits. Our lists' stop-loss is a price (the contract
  has no trailing stop-loss for a list), so ``trailingStopLossOnFill`` is never sent.
- The exit ``<entry>-x1`` (model.lists ``exit_id``) is one order of ours; its native
  form is the trade's take-profit ``<exit>-tp`` and stop-loss ``<exit>-sl``
  (``dependent_ids``), both levels or one, time in force GTC. ``<exit>`` itself is never
  given to OANDA's orders: it stays free for the workers' own exit should the native ones
  be replaced. The trade carries the entry's id (``tradeClientExtensions``), so a
  dependent order names its exit (``owner``).
- An adopted exit's report is its dependent orders' (``combine``), its broker order id
  ``on-fill:<trade id>`` (``ADOPTED``): that is how its record says it is native.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import ContractError, OrderSpec, OrderType, Side, WireDecimal
from producer.ids import derived_id

from ...model.lists import exit_id, exit_request
from ...model.order import spec_from_request
from ..base import FINAL_BROKER_STATUSES, BrokerOrder, BrokerStatus
from .instruments import Instrument, check, fixed

ENTRY_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT})
DEPENDENT_TYPES = frozenset({"TAKE_PROFIT", "STOP_LOSS", "TRAILING_STOP_LOSS"})
TAKE_PROFIT_TAIL, STOP_LOSS_TAIL = "-tp", "-sl"
ADOPTED = "on-fill:"


def native_exit(entry_id: str, order: OrderSpec, inst: Instrument) -> OrderSpec | None:
    """The exit OANDA would hold for the entry ``order`` sent with on-fill orders, or None
    when it cannot be sent so (see the module's docstring)."""
    tp, sl = order.take_profit, order.stop_loss
    if (order.oto_trigger is None or (tp is None and sl is None)
            or order.type not in ENTRY_TYPES or order.reduce_only
            or order.quantity is None or order.display_quantity is not None):
        return None
    if order.type is OrderType.LIMIT:
        if order.price is None:
            return None
        buy = order.side is Side.BUY
        if tp is not None and (tp <= order.price if buy else tp >= order.price):
            return None
        if sl is not None and (sl >= order.price if buy else sl <= order.price):
            return None
    exit_ = spec_from_request(exit_request(entry_id, order, order.quantity, 1), order.account)
    try:
        check(exit_, inst)
    except ContractError:
        return None
    return exit_


def dependent_ids(exit_cid: str) -> tuple[str, str]:
    """The client ids of the take-profit and the stop-loss that are the exit ``exit_cid``
    at OANDA."""
    return derived_id(exit_cid, TAKE_PROFIT_TAIL), derived_id(exit_cid, STOP_LOSS_TAIL)


def first_exit_id(entry_id: str) -> str:
    """The client id of the entry's first exit: what its on-fill orders are named after."""
    return exit_id(entry_id, 1)


def fields(entry_id: str, order: OrderSpec, inst: Instrument) -> dict[str, Any]:
    """The on-fill fields of the entry ``order`` (``native_exit``'s), added to its
    OrderRequest: prices as strings at the instrument's precision, GTC."""
    tp_id, sl_id = dependent_ids(first_exit_id(entry_id))
    out: dict[str, Any] = {}
    if order.take_profit is not None:
        out["takeProfitOnFill"] = {
            "price": fixed(order.take_profit, inst.display_precision),
            "timeInForce": "GTC", "clientExtensions": {"id": tp_id}}
    if order.stop_loss is not None:
        out["stopLossOnFill"] = {
            "price": fixed(order.stop_loss, inst.display_precision),
            "timeInForce": "GTC", "clientExtensions": {"id": sl_id}}
    return out


def owner(order: Mapping[str, Any]) -> str | None:
    """The exit a dependent order of ours is (its trade's client id is our entry's, its
    own client id one of ``dependent_ids`` of the entry's first exit), else None."""
    if order.get("type") not in DEPENDENT_TYPES:
        return None
    entry = order.get("clientTradeID")
    cid = (order.get("clientExtensions") or {}).get("id")
    if not entry or not cid:
        return None
    first = first_exit_id(str(entry))
    return first if cid in dependent_ids(first) else None


def is_exit_id(cid: str) -> bool:
    """Whether ``cid`` may be an exit of a list (``<entry>-x<n>``): only those are looked
    up as adopted exits."""
    head, sep, n = cid.rpartition("-x")
    return bool(head) and bool(sep) and n.isdigit()


def combine(cid: str, trade_id: str, symbol: str, quantity: Decimal,
            legs: Sequence[BrokerOrder]) -> BrokerOrder:
    """One report of the exit ``cid`` from its dependent orders' (``legs``): filled by the
    one that filled (it closed the trade, which cancels the other); ended when all ended
    without a fill (cancelled: an order that was working is never rejected, whatever
    OANDA's cancel reason); else working."""
    fills = [f for leg in legs for f in leg.fills]
    filled = sum((f.quantity for f in fills), Decimal(0))
    reason = None
    if filled or any(leg.status is BrokerStatus.FILLED for leg in legs):
        status = BrokerStatus.FILLED
    elif legs and all(leg.status in FINAL_BROKER_STATUSES for leg in legs):
        status = BrokerStatus.CANCELLED
        reason = next((leg.reason for leg in legs if leg.reason), None)
    else:
        status = BrokerStatus.NEW
    return BrokerOrder(client_order_id=cid, broker_order_id=ADOPTED + trade_id,
                       symbol=symbol, status=status, quantity=WireDecimal(quantity),
                       filled_quantity=WireDecimal(filled.normalize() if filled else 0),
                       fills=fills, reason=reason,
                       updated_at=max((leg.updated_at for leg in legs), default=0))


def native(report: BrokerOrder) -> BrokerOrder:
    """An entry's report marked as sent with its exits (``native_exits``)."""
    return msgspec.structs.replace(report, native_exits=True)
