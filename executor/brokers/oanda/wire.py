"""Translations between our types and OANDA's v20 wire: the OrderRequest of an
``OrderSpec``, ``BrokerOrder`` reports from v20 transactions and orders, and v20's errors
in the broker taxonomy. Pure: no I/O.

Our client id is the order's ``clientExtensions.id`` (so ``@<client id>`` finds it) and,
for an order that opens a trade, the trade's ``tradeClientExtensions.id``: a second order
under our client id is refused CLIENT_ORDER_ID_ALREADY_EXISTS while the first is pending,
and CLIENT_TRADE_ID_ALREADY_EXISTS while the trade it opened is open.

Times are asked for and sent as UNIX seconds (``Accept-Datetime-Format: UNIX``); RFC 3339
is read too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from producer.contract import ContractError, Fill, OrderSpec, OrderType, TimeInForce, WireDecimal

from ...model.triggers import STOP_TYPES, TAKE_PROFIT_TYPES
from ..base import (
    EMULATED,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    NeedsEmulation,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
    refuse_conditional,
    refuse_display,
)
from .instruments import Instrument, fixed

# Our order types that v20 has: a stop is a STOP order at stop_price, a take-profit (a
# market order once the price reaches stop_price, in our favour) a MARKET_IF_TOUCHED.
OANDA_TYPE = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "STOP",
    OrderType.TAKE_PROFIT: "MARKET_IF_TOUCHED",
    OrderType.MARKET_IF_TOUCHED: "MARKET_IF_TOUCHED",
}
# Our market_if_touched is v20's MARKET_IF_TOUCHED at price = stop_price, triggered on the
# mid (our reference price) rather than v20's default side of the book. v20 decides its
# direction from the market at creation (initialMarketPrice): it fills when the price
# crosses ``price`` from that side. Ours is fixed by the side (a buy on a fall to
# stop_price), so it is sent only while the mid is strictly on that side (see
# ``check_touched``). limit_if_touched has no equivalent (v20's priceBound is a worst fill
# price for the market order, not a resting limit) and trailing stops exist only as a
# trade's dependent TRAILING_STOP_LOSS: those are refused, to be emulated.
NATIVE_CONDITIONAL = frozenset({OrderType.MARKET_IF_TOUCHED})
TOUCHED_TRIGGER = "MID"
# The time in force each accepts (v20.json); our day is OANDA's GFD (good for the day). A
# market order's default (ours: gtc, which a market order has no use for) is OANDA's own
# default, FOK.
TIME_IN_FORCE: dict[OrderType, dict[TimeInForce, str]] = {
    OrderType.MARKET: {TimeInForce.GTC: "FOK", TimeInForce.FOK: "FOK",
                       TimeInForce.IOC: "IOC"},
    OrderType.LIMIT: {TimeInForce.GTC: "GTC", TimeInForce.GTD: "GTD",
                      TimeInForce.DAY: "GFD", TimeInForce.FOK: "FOK",
                      TimeInForce.IOC: "IOC"},
    OrderType.STOP: {TimeInForce.GTC: "GTC", TimeInForce.GTD: "GTD",
                     TimeInForce.DAY: "GFD"},
    OrderType.TAKE_PROFIT: {TimeInForce.GTC: "GTC", TimeInForce.GTD: "GTD",
                            TimeInForce.DAY: "GFD"},
    OrderType.MARKET_IF_TOUCHED: {TimeInForce.GTC: "GTC", TimeInForce.GTD: "GTD",
                                  TimeInForce.DAY: "GFD"},
}
DUPLICATE_REASONS = frozenset({"CLIENT_ORDER_ID_ALREADY_EXISTS",
                               "CLIENT_TRADE_ID_ALREADY_EXISTS"})
# Cancel reasons (OrderCancelReason) of an order that ended because the market did not
# fill it in time, rather than because OANDA refused it.
EXPIRY_REASONS = frozenset({"TIME_IN_FORCE_EXPIRED", "INSUFFICIENT_LIQUIDITY"})
CLIENT_CANCEL_REASONS = frozenset({"CLIENT_REQUEST", "CLIENT_REQUEST_REPLACED"})


# TransactionRejectReason values that refuse an order's on-fill part (takeProfitOnFill,
# stopLossOnFill, trailingStopLossOnFill): the order itself was not placed.
ON_FILL_PREFIXES = ("TAKE_PROFIT_ON_FILL_", "STOP_LOSS_ON_FILL_", "TRAILING_STOP_LOSS_ON_FILL_")
ON_FILL_REFUSALS = frozenset({"ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS"})


class OnFillRefused(PermanentError):
    """OANDA refused an order for its on-fill orders (nothing was placed): the entry of a
    native list may go again as a plain order (on_fill.py)."""


def unix_time(ms: int) -> str:
    """Epoch milliseconds as v20's UNIX DateTime: ``"1767225600.250"``."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def epoch_ms(text: Any) -> int:
    """A v20 DateTime (UNIX ``seconds.fraction`` or RFC 3339) in epoch milliseconds; 0 when
    absent or unreadable."""
    if not text:
        return 0
    value = str(text)
    try:
        return int(Decimal(value) * 1000)
    except (ArithmeticError, ValueError):
        pass
    try:  # RFC 3339 with up to nanoseconds: datetime reads microseconds at most
        head, _, tail = value.rstrip("Z").partition(".")
        parsed = datetime.fromisoformat(head + "+00:00")
        return int(parsed.timestamp()) * 1000 + int((tail + "000")[:3] or 0)
    except ValueError:
        return 0


def units(order: OrderSpec, inst: Instrument) -> str:
    """Signed units: positive to buy, negative to sell."""
    assert order.quantity is not None
    text = fixed(order.quantity, inst.units_precision)
    return text if order.side == "buy" else "-" + text


def order_request(client_order_id: str, order: OrderSpec, inst: Instrument
                  ) -> dict[str, Any]:
    """The body of POST /v3/accounts/{id}/orders for ``order``. ``ContractError`` naming
    ``type`` or ``time_in_force`` when v20 has no such order."""
    refuse_conditional(order, "oanda", NATIVE_CONDITIONAL)
    refuse_display(order, "oanda")
    kind = OANDA_TYPE.get(order.type)
    if kind is None and order.type in STOP_TYPES | TAKE_PROFIT_TYPES:
        raise NeedsEmulation(f"type {order.type} is not supported by OANDA natively (v20's "
                             "STOP and MARKET_IF_TOUCHED take no limit price after the "
                             f"trigger; {EMULATED})", "type")
    if order.type is OrderType.OCO:
        raise NeedsEmulation("type oco is not supported by OANDA natively (v20 links orders "
                             f"only to a trade; {EMULATED})", "type")
    if kind is None:
        raise ContractError(f"type {order.type} is not supported by OANDA (market, limit, "
                            "stop, take_profit, market_if_touched)", "type")
    tif = TIME_IN_FORCE[order.type].get(order.time_in_force)
    if tif is None:
        allowed = ", ".join(TIME_IN_FORCE[order.type])
        raise ContractError(f"time_in_force {order.time_in_force} is not supported by OANDA "
                            f"for a {order.type} order ({allowed})", "time_in_force")
    if order.quantity is None:
        raise ContractError("quote_quantity is not supported by OANDA: give quantity in "
                            "units", "quote_quantity")
    body: dict[str, Any] = {
        "type": kind,
        "instrument": inst.name,
        "units": units(order, inst),
        "timeInForce": tif,
        "positionFill": "REDUCE_ONLY" if order.reduce_only else "DEFAULT",
        "clientExtensions": {"id": client_order_id},
        "tradeClientExtensions": {"id": client_order_id},
    }
    trigger = order.price if order.type is OrderType.LIMIT else order.stop_price
    if order.type is not OrderType.MARKET:
        if trigger is None:
            field = "price" if order.type is OrderType.LIMIT else "stop_price"
            raise ContractError(f"{field} is required for a {order.type} order", field)
        body["price"] = fixed(trigger, inst.display_precision)
    if order.type is OrderType.MARKET_IF_TOUCHED:
        body["triggerCondition"] = TOUCHED_TRIGGER
    if tif == "GTD":
        if order.expire_at is None:
            raise ContractError("expire_at is required when time_in_force is gtd",
                                "expire_at")
        body["gtdTime"] = unix_time(order.expire_at)
    return {"order": body}


def check_touched(order: OrderSpec, mid: Decimal) -> None:
    """Refuse, naming ``stop_price``, a market_if_touched that v20 would take the other
    way: v20's direction comes from the market at creation, ours from the side, so the mid
    (``mid``, just read) must be strictly above a buy's stop_price (below a sell's). At or
    past it, ours would trigger at once (the paper exchange refuses that too)."""
    if order.type is not OrderType.MARKET_IF_TOUCHED:
        return
    assert order.stop_price is not None
    buy = order.side == "buy"
    waits = mid > order.stop_price if buy else mid < order.stop_price
    if not waits:
        where = "at or below" if buy else "at or above"
        raise ContractError(
            f"stop_price {order.stop_price}: the price ({mid}) is already {where} it, so "
            f"this {order.side} market_if_touched would trigger at once (OANDA would take it "
            "as a stop the other way)", "stop_price")


def dec(text: Any) -> WireDecimal:
    """A v20 decimal string as a wire decimal, without its sign or trailing zeros."""
    value = abs(Decimal(str(text)))
    return WireDecimal(value.normalize() if value else Decimal(0))


def fill_of(tx: Mapping[str, Any], currency: str | None) -> Fill | None:
    """The fill of an ORDER_FILL transaction (its commission is in the account's home
    currency); None for no units."""
    quantity = dec(tx.get("units", "0"))
    if not quantity:
        return None
    price = tx.get("fullVWAP") or tx.get("price")
    return Fill(fill_id=str(tx["id"]), price=dec(price), quantity=quantity,
                commission=dec(tx.get("commission") or "0"),
                commission_asset=currency, liquidity="taker", at=epoch_ms(tx.get("time")))


def _ended(reason: str | None, filled: Decimal) -> tuple[BrokerStatus, str | None]:
    """Status and reason of an order OANDA cancelled for ``reason``."""
    if reason in CLIENT_CANCEL_REASONS:
        return BrokerStatus.CANCELLED, None
    if filled or reason in EXPIRY_REASONS:
        return BrokerStatus.EXPIRED, f"oanda: {reason}" if reason else None
    return BrokerStatus.REJECTED, f"oanda: {reason or 'cancelled'}"


def _report(cid: str, order_id: Any, symbol: str, quantity: WireDecimal, *,
            filled_state: bool, fill_tx: Mapping[str, Any] | None,
            cancel_tx: Mapping[str, Any] | None, cancelled: bool, currency: str | None,
            updated_at: int) -> BrokerOrder:
    fill = None if fill_tx is None else fill_of(fill_tx, currency)
    fills = [] if fill is None else [fill]
    filled = sum((f.quantity for f in fills), Decimal(0))
    reason = None
    if cancelled or cancel_tx is not None:
        status, reason = _ended(None if cancel_tx is None else cancel_tx.get("reason"),
                                filled)
    elif filled_state or (quantity and filled >= quantity):
        status = BrokerStatus.FILLED
    elif filled:
        status = BrokerStatus.PARTIALLY_FILLED
    else:
        status = BrokerStatus.NEW
    return BrokerOrder(client_order_id=cid, broker_order_id=str(order_id), symbol=symbol,
                       status=status, quantity=quantity,
                       filled_quantity=WireDecimal(filled.normalize() if filled else 0),
                       fills=fills, reason=reason, updated_at=updated_at)


def create_report(cid: str, reply: Mapping[str, Any], currency: str | None) -> BrokerOrder:
    """The report of a 201 create reply: its orderCreateTransaction, and the fill and the
    cancel OANDA made at once (a FOK order it could not fill is a 201 with a cancel)."""
    created = reply["orderCreateTransaction"]
    fill_tx = reply.get("orderFillTransaction")
    cancel_tx = reply.get("orderCancelTransaction")
    latest = cancel_tx or fill_tx or created
    return _report(cid, created["id"], str(created["instrument"]), dec(created["units"]),
                   filled_state=False, fill_tx=fill_tx, cancel_tx=cancel_tx,
                   cancelled=cancel_tx is not None, currency=currency,
                   updated_at=epoch_ms(latest.get("time")))


def order_report(cid: str, order: Mapping[str, Any], fill_tx: Mapping[str, Any] | None,
                 cancel_tx: Mapping[str, Any] | None, currency: str | None,
                 symbol: str = "") -> BrokerOrder:
    """The report of a v20 Order (GET orders/@id) with the transactions that filled or
    cancelled it (GET transactions/{id}), where it names them. ``symbol``: the instrument
    of an order that names none (a trade's dependent order). An order sent with on-fill
    orders is marked ``native_exits``, as its create's report was."""
    state = order.get("state", "PENDING")
    at = order.get("cancelledTime") or order.get("filledTime") or order.get("createTime")
    report = _report(cid, order["id"], str(order.get("instrument") or symbol),
                     dec(order.get("units", "0")), filled_state=state == "FILLED",
                     fill_tx=fill_tx, cancel_tx=cancel_tx, cancelled=state == "CANCELLED",
                     currency=currency, updated_at=epoch_ms(at))
    if any(order.get(key) for key in ("takeProfitOnFill", "stopLossOnFill",
                                      "trailingStopLossOnFill")):
        report = msgspec.structs.replace(report, native_exits=True)
    return report


def mid_of(price: Mapping[str, Any]) -> Decimal | None:
    """The mid of the best bid and ask of one v20 ClientPrice (a pricing reply's entry, or
    a PRICE line of the pricing stream), the closeout prices where a side has no level;
    None when a side is missing. The one definition of our reference price at OANDA."""
    bids, asks = price.get("bids") or [], price.get("asks") or []
    bid = bids[0].get("price") if bids else price.get("closeoutBid")
    ask = asks[0].get("price") if asks else price.get("closeoutAsk")
    if bid is None or ask is None:
        return None
    # v20 sends prices as strings; str() of a Decimal (a stream line decoded with
    # float_hook=Decimal) is exact too. Never a float.
    return (Decimal(str(bid)) + Decimal(str(ask))) / 2


def mid_price(reply: Mapping[str, Any], instrument: str) -> Decimal | None:
    """``mid_of`` the price of ``instrument`` in a pricing reply; None when absent."""
    for price in reply.get("prices", []):
        if price.get("instrument") == instrument:
            return mid_of(price)
    return None


def streamed_mid(line: Mapping[str, Any]) -> tuple[str, Decimal | None] | None:
    """A PRICE line of the pricing stream as (instrument, mid): the mid None when the
    instrument is not tradeable now (``tradeable: false``: halted, closed for the weekend),
    so it is not taken as a current price. None for any other line."""
    if line.get("type") != "PRICE" or not isinstance(line.get("instrument"), str):
        return None
    if line.get("tradeable") is False:
        return line["instrument"], None
    try:
        return line["instrument"], mid_of(line)
    except (ArithmeticError, ValueError, TypeError, AttributeError, IndexError):
        return line["instrument"], None


def reject_reason(body: Mapping[str, Any]) -> str | None:
    """The reason v20 gave for refusing: the reject transaction's, else ``errorCode``."""
    for key in ("orderRejectTransaction", "orderCancelRejectTransaction"):
        tx = body.get(key)
        if isinstance(tx, Mapping) and tx.get("rejectReason"):
            return str(tx["rejectReason"])
    code = body.get("errorCode")
    return None if code is None else str(code)


def describe(status: int, body: Mapping[str, Any]) -> str:
    """Status, reason and OANDA's message only: never a header, the token or the URL."""
    reason = reject_reason(body)
    message = str(body.get("errorMessage") or "")[:200]
    return " ".join(p for p in (f"oanda HTTP {status}", reason and f"{reason}:", message) if p)


def map_error(status: int, body: Mapping[str, Any], *, sends: bool,
              retry_after: float | None = None) -> BrokerError:
    """A v20 error reply in the broker taxonomy. ``sends``: the call creates or changes
    something (submit, cancel), so a reply that may come after it acted is an unknown
    outcome rather than a retryable failure."""
    text = describe(status, body)
    if status in (401, 403):
        return AuthenticationFailed(text)
    if status == 429:
        return RateLimited(text, retry_after)
    if status >= 500:
        return UnknownOutcome(text) if sends else RetryableError(text)
    reason = reject_reason(body)
    if sends and reason in DUPLICATE_REASONS:
        # An earlier send of ours landed: look it up, never "rejected".
        return DuplicateClientId(text)
    if status == 404 or reason == "ORDER_DOESNT_EXIST":
        return OrderNotFound(text)
    if sends and reason is not None and (reason in ON_FILL_REFUSALS
                                         or reason.startswith(ON_FILL_PREFIXES)):
        return OnFillRefused(text)
    return PermanentError(text)


def transport_error(exc: BaseException, *, sends: bool) -> BrokerError:
    """An aiohttp failure or timeout: named by its type only (its text can carry the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused before anything was sent
        return RetryableError(f"oanda unreachable: {type(exc).__name__}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError | ValueError):
        text = f"oanda: no reply ({type(exc).__name__})"
        return UnknownOutcome(text) if sends else RetryableError(text)
    raise exc
