"""Translations between our types and Binance's wire: order parameters from an
``OrderSpec``, ``BrokerOrder`` reports from Binance's order objects, trades and
executionReport events, traded volume from klines, and Binance's errors into the broker
taxonomy. Pure: no I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
from binance.exceptions import BinanceAPIException, BinanceRequestException

from producer.contract import Fill, OrderSpec, OrderType, WireDecimal, decimal_text

from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    Banned,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
    Volume,
)
from .filters import BINANCE_TYPE, binance_type, oco_legs, tidy, trailing_delta

STATUS = {
    "NEW": BrokerStatus.NEW,
    "PENDING_NEW": BrokerStatus.NEW,
    "PARTIALLY_FILLED": BrokerStatus.PARTIALLY_FILLED,
    "FILLED": BrokerStatus.FILLED,
    "CANCELED": BrokerStatus.CANCELLED,
    "PENDING_CANCEL": BrokerStatus.NEW,
    "REJECTED": BrokerStatus.REJECTED,
    "EXPIRED": BrokerStatus.EXPIRED,
    "EXPIRED_IN_MATCH": BrokerStatus.EXPIRED,
}
AUTH_CODES = frozenset({-1022, -2014, -2015})
RATE_CODES = frozenset({-1003, -1015})
TIMESTAMP_CODE = -1021
# -1007 "send status unknown; execution status unknown" (its backend gave up waiting after
# 10 s and may still execute the order), -1006 "unexpected response from the message bus.
# Execution status unknown." (errors.md), -1000 "unknown error": whatever their HTTP status.
UNKNOWN_CODES = frozenset({-1007, -1006, -1000})
NOT_FOUND_CODES = frozenset({-2011, -2013})
# -2010 NEW_ORDER_REJECTED with this text: the client id is on an order of ours already
# (errors.md: "Duplicate order sent." / "The clOrdId is already in use"). An order list
# whose listClientOrderId is in use is assumed to get the same answer [unverified]; ours
# does anyway, since its legs' ids are derived from it and they are then in use too.
NEW_ORDER_REJECTED = -2010
DUPLICATE_TEXT = "duplicate order sent"
_WITH_TIF = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT,
                       OrderType.LIMIT_IF_TOUCHED})


def amount(value: Decimal) -> str:
    """Binance's number grammar: fixed point, no exponent, no sign (never ``1e-05``)."""
    return decimal_text(value)


def order_params(client_order_id: str, order: OrderSpec) -> dict[str, str]:
    """The parameters of POST /api/v3/order for ``order`` (FULL answers: fills included).
    ``order`` passed ``filters.check``: its type is one Binance has (see ``binance_type``)."""
    kind = binance_type(order)
    assert kind is not None, order.type
    params = {
        "symbol": order.symbol,
        "side": order.side.upper(),
        "type": kind,
        "newClientOrderId": client_order_id,
        "newOrderRespType": "FULL",
    }
    if order.quantity is not None:
        params["quantity"] = amount(order.quantity)
    elif order.quote_quantity is not None:
        params["quoteOrderQty"] = amount(order.quote_quantity)
    if order.type in _WITH_TIF:
        params["timeInForce"] = order.time_in_force.upper()
    if order.price is not None:
        params["price"] = amount(order.price)
    if order.stop_price is not None:
        params["stopPrice"] = amount(order.stop_price)
    if order.display_quantity is not None:  # an iceberg (filters.check: a limit type, GTC)
        params["icebergQty"] = amount(order.display_quantity)
    if order.type is OrderType.TRAILING_STOP:
        params["trailingDelta"] = str(trailing_delta(order))
        if order.activation_price is not None:  # TAKE_PROFIT: tracking starts there
            params["stopPrice"] = amount(order.activation_price)
    return params


# An OCO's legs: ``<list id>-oA`` (above) and ``<list id>-oB`` (below), so a lookup or a
# redelivered request finds the same list and its legs; a list id too long for the suffix
# keeps 24 characters and 8 hex digits of its hash (36 in all, Binance's limit and ours).
LEG_SUFFIXES = ("-oA", "-oB")
_MAX_ID = 36


def leg_ids(client_order_id: str) -> tuple[str, str]:
    """The client ids of an OCO's above and below legs, derived from the list's."""
    base = client_order_id
    if len(base) + len(LEG_SUFFIXES[0]) > _MAX_ID:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = f"{base[:24]}-{digest}"
    above, below = (base + suffix for suffix in LEG_SUFFIXES)
    return above, below


def oco_params(client_order_id: str, order: OrderSpec) -> dict[str, str]:
    """The parameters of POST /api/v3/orderList/oco for an ``oco`` order: the list carries
    our client id, its legs ids derived from it (``leg_ids``); FULL answers."""
    assert order.quantity is not None
    params = {
        "symbol": order.symbol,
        "side": order.side.upper(),
        "quantity": amount(order.quantity),
        "listClientOrderId": client_order_id,
        "newOrderRespType": "FULL",
    }
    for (position, leg), cid in zip(oco_legs(order), leg_ids(client_order_id), strict=True):
        params.update(leg_params(position, leg, cid))
    return params


def leg_params(prefix: str, leg: OrderSpec, client_order_id: str) -> dict[str, str]:
    """One order of a list as Binance names its parameters there: ``<prefix>Type``,
    ``<prefix>ClientOrderId``, ``<prefix>Price``, ... (an OCO's ``above`` / ``below``, an
    OTO's ``pending``, an OTOCO's ``pendingAbove`` / ``pendingBelow``)."""
    params = {f"{prefix}Type": BINANCE_TYPE[leg.type],
              f"{prefix}ClientOrderId": client_order_id}
    if leg.price is not None:
        params[f"{prefix}Price"] = amount(leg.price)
    if leg.stop_price is not None:
        params[f"{prefix}StopPrice"] = amount(leg.stop_price)
    if leg.type in _WITH_TIF:
        params[f"{prefix}TimeInForce"] = leg.time_in_force.upper()
    return params


def combine(client_order_id: str, list_id: Any, symbol: str, quantity: Decimal,
            legs: Sequence[BrokerOrder]) -> BrokerOrder:
    """One report of an OCO list from its legs' reports. Only one leg can trade (the other
    expires when it does): the list is that leg's status once it has fills; before, open
    while a leg is open, else cancelled / rejected / expired as the legs ended."""
    fills = [f for leg in legs for f in leg.fills]
    filled = sum((leg.filled_quantity for leg in legs), Decimal(0))
    traded = [leg for leg in legs if leg.filled_quantity > 0]
    statuses = {leg.status for leg in legs}
    if traded:
        status = traded[0].status
        if status is BrokerStatus.FILLED and filled < quantity:
            status = BrokerStatus.PARTIALLY_FILLED
    elif statuses - FINAL_BROKER_STATUSES:
        status = BrokerStatus.NEW
    elif BrokerStatus.CANCELLED in statuses:
        status = BrokerStatus.CANCELLED
    elif BrokerStatus.REJECTED in statuses:
        status = BrokerStatus.REJECTED
    else:
        status = BrokerStatus.EXPIRED
    reasons = [leg.reason for leg in legs if leg.reason]
    return BrokerOrder(
        client_order_id=client_order_id, broker_order_id=f"list:{list_id}", symbol=symbol,
        status=status, quantity=WireDecimal(tidy(quantity)), filled_quantity=WireDecimal(
            tidy(filled)), fills=fills,
        reason=reasons[0] if status is BrokerStatus.REJECTED and reasons else None,
        updated_at=max((leg.updated_at for leg in legs), default=0))


def dec(text: Any) -> WireDecimal:
    """A Binance amount (``"0.01000000"``) without its trailing zeros (``"0.01"``)."""
    return WireDecimal(tidy(Decimal(str(text))))


def trade_fill(trade: Mapping[str, Any]) -> Fill:
    """A fill from a myTrades row."""
    return Fill(fill_id=str(trade["id"]), price=dec(trade["price"]), quantity=dec(trade["qty"]),
                commission=dec(trade["commission"]), commission_asset=trade["commissionAsset"],
                liquidity="maker" if trade.get("isMaker") else "taker",
                at=int(trade.get("time", 0)))


def response_fills(reply: Mapping[str, Any]) -> list[Fill]:
    """Fills of a FULL new-order reply: taken at placement, so taker fills."""
    at = int(reply.get("transactTime", 0))
    return [Fill(fill_id=str(f["tradeId"]), price=dec(f["price"]), quantity=dec(f["qty"]),
                 commission=dec(f["commission"]), commission_asset=f["commissionAsset"],
                 liquidity="taker", at=at) for f in reply.get("fills", [])]


def report(reply: Mapping[str, Any], fills: Iterable[Fill] = (),
           client_order_id: str | None = None) -> BrokerOrder:
    """A report from an order object (new-order RESULT/FULL reply, GET or DELETE order)."""
    cid = client_order_id or reply.get("origClientOrderId") or reply["clientOrderId"]
    status = STATUS.get(reply.get("status", "NEW"), BrokerStatus.NEW)
    return BrokerOrder(
        client_order_id=cid, broker_order_id=str(reply["orderId"]), symbol=reply["symbol"],
        status=status, quantity=dec(reply.get("origQty", "0")),
        filled_quantity=dec(reply.get("executedQty", "0")), fills=list(fills),
        reason=f"binance: {reply['status']}" if status is BrokerStatus.REJECTED else None,
        updated_at=int(reply.get("updateTime") or reply.get("transactTime") or 0),
    )


def event_report(event: Mapping[str, Any]) -> BrokerOrder:
    """A report from an executionReport event; its fill, if it carries one (x = TRADE)."""
    fills = []
    if event.get("x") == "TRADE":
        fills.append(Fill(fill_id=str(event["t"]), price=dec(event["L"]),
                          quantity=dec(event["l"]), commission=dec(event.get("n") or "0"),
                          commission_asset=event.get("N"),
                          liquidity="maker" if event.get("m") else "taker",
                          at=int(event.get("T", 0))))
    status = STATUS.get(event["X"], BrokerStatus.NEW)
    reason = event.get("r")
    return BrokerOrder(
        client_order_id=event.get("C") or event["c"], broker_order_id=str(event["i"]),
        symbol=event["s"], status=status, quantity=dec(event["q"]),
        filled_quantity=dec(event["z"]), fills=fills,
        reason=f"binance: {reason}" if status is BrokerStatus.REJECTED else None,
        updated_at=int(event.get("T") or event.get("E") or 0),
    )


def closed_volume(klines: Sequence[Sequence[Any]], since: int, now: int) -> Volume:
    """The base-asset volume (index 5) of the klines, oldest first, that are closed, from
    ``since`` up to the end of the last one counted (its close time, index 6, + 1), or
    ``since`` when none is. A kline is closed when a later one follows it or, the last one,
    when it ended by ``now`` (the exchange's time as we estimate it): the last one may be
    the bucket still filling, which is counted by a later call once closed. A kline that
    opens (index 0) before ``since`` or before the end of one counted already is skipped:
    nothing is counted twice, even from a server that ignored ``startTime``."""
    total, until = Decimal(0), since
    for i, k in enumerate(klines):
        opened, closes = int(k[0]), int(k[6])
        if opened < until:
            continue
        if i == len(klines) - 1 and closes + 1 > now:
            break
        total += Decimal(k[5])
        until = closes + 1
    return Volume(total, until)


def retry_after(exc: BinanceAPIException) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    try:
        return float(headers["Retry-After"])
    except (KeyError, TypeError, ValueError):
        return None


def describe(exc: BinanceAPIException) -> str:
    """Code and message only: ``str(exc)`` carries the request (and its signature)."""
    return f"binance HTTP {exc.status_code} code {exc.code}: {exc.message}"


def map_error(exc: BaseException, *, sends: bool) -> BrokerError:
    """``exc`` from python-binance or aiohttp in the broker taxonomy. ``sends``: the call
    creates or changes something (submit, cancel), so a reply lost after sending is an
    unknown outcome rather than a retryable failure."""
    if isinstance(exc, BinanceAPIException):
        status, code, text = int(exc.status_code), int(exc.code), describe(exc)
        if status == 418:
            return Banned(text, retry_after(exc))
        if status == 429 or code in RATE_CODES:
            return RateLimited(text, retry_after(exc))
        if code in AUTH_CODES:
            return AuthenticationFailed(text)
        if code == TIMESTAMP_CODE:
            return RetryableError(text)  # refused before the matching engine
        if status >= 500 or code in UNKNOWN_CODES:
            return UnknownOutcome(text) if sends else RetryableError(text)
        if code in NOT_FOUND_CODES:
            return OrderNotFound(text)
        if (sends and code == NEW_ORDER_REJECTED
                and DUPLICATE_TEXT in str(exc.message).lower()):
            # An earlier send of ours landed: look it up, never "rejected".
            return DuplicateClientId(text)
        return PermanentError(text)
    if isinstance(exc, BinanceRequestException):  # a 2xx whose body is not JSON
        text = f"binance: unreadable reply ({exc.message})"
        return UnknownOutcome(text) if sends else RetryableError(text)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused before anything was sent
        return RetryableError(f"binance unreachable: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        text = f"binance: no reply ({type(exc).__name__})"
        return UnknownOutcome(text) if sends else RetryableError(text)
    raise exc
