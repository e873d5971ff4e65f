"""Translations between our types and Alpaca's trading API v2: the POST /v2/orders body from
an ``OrderSpec`` (and what Alpaca would refuse, as a ``ContractError`` naming our field),
our client ids within Alpaca's length, ``BrokerOrder`` reports from Alpaca's order objects,
and Alpaca's HTTP errors in the broker taxonomy. Pure: no I/O.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from producer.contract import (
    ContractError,
    Fill,
    OrderSpec,
    OrderType,
    Side,
    TimeInForce,
    TrailingOffsetType,
    wire,
)

from ...model.triggers import STOP_TYPES, TAKE_PROFIT_TYPES
from ..base import (
    EMULATED,
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    NeedsEmulation,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
    Volume,
    refuse_conditional,
    refuse_display,
)

# Alpaca's documents disagree on client_order_id's length: "<= 48 characters" (alpaca-docs
# orders.yaml) and "<= 128" (the current reference). We keep to the stricter one.
MAX_CLIENT_ID = 48
_KEEP = 31  # characters of a longer id kept before "-" and 16 hex digits of its hash

TYPES = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.STOP: "stop",
         OrderType.STOP_LIMIT: "stop_limit", OrderType.TRAILING_STOP: "trailing_stop"}
# Alpaca's trailing_stop (alpaca-docs orders.md) is ours without activation_price, exactly:
# a sell's stop is hwm - trail_price or hwm * (1 - trail_percent / 100), hwm the highest
# price since submission, only rising (a buy's mirrored from the lowest), then a market
# order. Alpaca has no activation price, no trailing stop-limit and no if-touched orders:
# those are left to the emulator.
NATIVE_CONDITIONAL = frozenset({OrderType.TRAILING_STOP})
TRAILING_TIME_IN_FORCE = frozenset({TimeInForce.DAY, TimeInForce.GTC})
TIME_IN_FORCE = {TimeInForce.GTC: "gtc", TimeInForce.IOC: "ioc", TimeInForce.FOK: "fok",
                 TimeInForce.DAY: "day", TimeInForce.OPG: "opg", TimeInForce.CLS: "cls"}
# The auctions take market and limit orders only (market/limit on open, on close).
AUCTIONS = frozenset({TimeInForce.OPG, TimeInForce.CLS})
# Alpaca's crypto orders: market, limit and stop_limit, with gtc or ioc (alpaca-py enums).
CRYPTO_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_LIMIT})
CRYPTO_TIME_IN_FORCE = frozenset({TimeInForce.GTC, TimeInForce.IOC})
_WITH_LIMIT = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_WITH_STOP = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})

# Every status Alpaca lists. The open ones are ``new`` (or ``partially_filled`` once the
# order has fills, whatever Alpaca's word for its state); ``replaced`` ends the order (a
# new one took its place), which for us is cancelled.
FINAL_STATUS = {
    "filled": BrokerStatus.FILLED,
    "canceled": BrokerStatus.CANCELLED,
    "replaced": BrokerStatus.CANCELLED,
    "expired": BrokerStatus.EXPIRED,
    "rejected": BrokerStatus.REJECTED,
}
OPEN_STATUSES = frozenset({
    "new", "partially_filled", "done_for_day", "pending_cancel", "pending_replace",
    "accepted", "pending_new", "accepted_for_bidding", "stopped", "suspended", "calculated",
    "held",
})

# Alpaca's oco order class (alpaca-docs orders.md, "OCO Orders"): two exit orders of one
# side and quantity, a take-profit limit and a stop (a stop-limit with stop_loss.limit_price);
# once one fills Alpaca cancels the other. The take-profit is the parent, the order that
# carries our client_order_id; the stop is its one leg, with a client id Alpaca makes up
# (leg client ids are ignored: Alpaca-API #115). Alpaca takes it as an exit of a position
# held ("currently only exit order is supported"): an oco of ours that is not reduce_only
# may open a position, so it stays with the emulator. Its time in force is day or gtc for
# both legs, ours gtc (or the stop-limit leg's ioc / fok, which Alpaca's cannot say). Crypto
# takes no order class (alpaca-py OrderClass: crypto "simple" only).
OCO_CLASS = "oco"
OCO_TIME_IN_FORCE = frozenset({TimeInForce.GTC})
# The stop must be at least a cent beyond the take-profit's limit (and the market), or
# Alpaca refuses the oco (orders.md, "Threshold on stop price of stop-loss orders").
OCO_STOP_GAP = Decimal("0.01")
_OCO_PARENT_TYPE = "limit"

DUPLICATE_TEXT = "client_order_id must be unique"
MINUTE_MS = 60_000  # Alpaca's bars of timeframe 1Min start on the minute
# A bar is final this long after its end: exchanges have 10 s to report a trade, and Alpaca
# recomputes a bar that a late trade falls in and streams the update at the half minute
# after the bar's end (Alpaca's market data notes on bars). Counted earlier, a bar could
# miss its late trades for good, since the next call starts after it.
BAR_FINAL_MS = 30_000
_PRICE_PLACES = Decimal("1e-9")  # a fill's price, derived from two averages
_EXACT = decimal.Context(prec=60)


class Call(enum.StrEnum):
    """What a request was for: it decides what its failures mean."""

    SUBMIT = "submit"  # POST /v2/orders
    CANCEL = "cancel"  # DELETE /v2/orders/{id}
    LOOKUP = "lookup"  # GET an order (by our client id or by Alpaca's id)
    READ = "read"  # anything else (account, assets)


def is_crypto(symbol: str) -> bool:
    """Alpaca names crypto pairs with a slash ("BTC/USD"), stocks without ("AAPL")."""
    return "/" in symbol


def base_and_quote(symbol: str) -> tuple[str, str]:
    """A stock is quoted in USD and counted in itself; a crypto pair as its name says."""
    if is_crypto(symbol):
        base, _, quote = symbol.partition("/")
        return base, quote
    return symbol, "USD"


def client_id(ours: str) -> str:
    """The client_order_id Alpaca gets for our client id: ours when it fits (ours are at
    most 36 characters today), else its first 31 characters, "-" and 16 hex digits of its
    SHA-256: 48 in all, the same every time, so a lookup finds what a send placed."""
    if len(ours) <= MAX_CLIENT_ID:
        return ours
    return f"{ours[:_KEEP]}-{hashlib.sha256(ours.encode()).hexdigest()[:16]}"


def _whole(value: Decimal) -> bool:
    return value == value.to_integral_value()


def time_in_force(order: OrderSpec) -> str:
    """Alpaca's time_in_force for the order. A stock market order of ours that is gtc (our
    default) goes as ``day``: it executes at once, or at the next open either way, and only
    ``day`` allows fractional quantities and notional amounts."""
    if (order.type is OrderType.MARKET and order.time_in_force is TimeInForce.GTC
            and not is_crypto(order.symbol)):
        return "day"
    return TIME_IN_FORCE[order.time_in_force]


def check(order: OrderSpec, *, fractionable: bool = True) -> None:
    """Raise ``ContractError`` naming our field when Alpaca has no way to take the order
    (``fractionable``: the asset takes fractional quantities)."""
    refuse_conditional(order, "alpaca", NATIVE_CONDITIONAL)
    refuse_display(order, "alpaca")
    if order.type is OrderType.OCO:
        check_oco(order)
        return
    if order.type is OrderType.TRAILING_STOP:
        check_trailing(order)
    crypto = is_crypto(order.symbol)
    if order.type not in TYPES or (crypto and order.type not in CRYPTO_TYPES):
        types = sorted(CRYPTO_TYPES if crypto else TYPES)
        if order.type in STOP_TYPES | TAKE_PROFIT_TYPES:
            raise NeedsEmulation(f"type {order.type} has no Alpaca order type for "
                                 f"{order.symbol} (it takes {', '.join(types)}; "
                                 f"{EMULATED})", "type")
        raise ContractError(f"type {order.type} has no Alpaca order type for "
                            f"{order.symbol} (it takes {', '.join(types)})", "type")
    if order.time_in_force not in TIME_IN_FORCE or (
            crypto and order.time_in_force not in CRYPTO_TIME_IN_FORCE):
        tifs = sorted(CRYPTO_TIME_IN_FORCE if crypto else TIME_IN_FORCE)
        raise ContractError(f"time_in_force {order.time_in_force} has no Alpaca "
                            f"time_in_force for {order.symbol} (it takes "
                            f"{', '.join(tifs)})", "time_in_force")
    if order.time_in_force in AUCTIONS and order.type not in (OrderType.MARKET,
                                                              OrderType.LIMIT):
        raise ContractError(f"time_in_force {order.time_in_force} (an auction) takes a market "
                            f"or limit order at Alpaca, not {order.type}", "time_in_force")
    day_market = order.type is OrderType.MARKET and time_in_force(order) == "day"
    if order.quote_quantity is not None and not day_market:
        raise ContractError("quote_quantity (Alpaca's notional) is taken only on a stock "
                            "market order with time_in_force gtc (sent as day)",
                            "quote_quantity")
    if order.quantity is not None and not _whole(order.quantity) and not crypto:
        if not fractionable:
            raise ContractError(f"quantity {order.quantity}: {order.symbol} is not "
                                "fractionable at Alpaca; whole shares only", "quantity")
        if not day_market:
            raise ContractError(f"quantity {order.quantity}: Alpaca takes fractional "
                                "quantities only on market orders with time_in_force gtc "
                                "(sent as day)", "quantity")
    if order.type in _WITH_LIMIT and order.price is None:
        raise ContractError(f"a {order.type} order needs a price", "price")
    if order.type in _WITH_STOP and order.stop_price is None:
        raise ContractError(f"a {order.type} order needs a stop_price", "stop_price")


def check_trailing(order: OrderSpec) -> None:
    """Refuse, naming the field, a trailing stop Alpaca's trailing_stop is not exactly."""
    if is_crypto(order.symbol):
        raise NeedsEmulation(f"type trailing_stop is not supported for {order.symbol} at "
                             f"alpaca (crypto takes market, limit and stop_limit; {EMULATED})",
                             "type")
    if order.activation_price is not None:
        raise NeedsEmulation("activation_price is not supported natively by alpaca accounts: "
                             f"Alpaca's trailing_stop trails from submission ({EMULATED})",
                             "activation_price")
    if order.time_in_force not in TRAILING_TIME_IN_FORCE:
        raise ContractError(f"time_in_force {order.time_in_force}: Alpaca's trailing_stop "
                            "takes day or gtc only", "time_in_force")
    if order.trailing_offset is None:
        raise ContractError("a trailing_stop order needs a trailing_offset",
                            "trailing_offset")


def check_oco(order: OrderSpec) -> None:
    """An oco Alpaca's oco class takes exactly passes; one it cannot say raises
    ``NeedsEmulation`` (the emulator holds it and sends the leg the price reaches, see
    brokers/emulating.py); one it would refuse either way raises ``ContractError``."""
    if is_crypto(order.symbol):
        raise NeedsEmulation(f"type oco has no Alpaca order class for {order.symbol} (crypto "
                             f"takes simple orders only; {EMULATED})", "type")
    if order.time_in_force not in OCO_TIME_IN_FORCE:
        raise NeedsEmulation(f"time_in_force {order.time_in_force} of an oco's stop-limit leg "
                             f"has no Alpaca oco (both legs take day or gtc; {EMULATED})",
                             "time_in_force")
    if not order.reduce_only:
        raise NeedsEmulation("an oco that is not reduce_only: Alpaca's oco class takes exits "
                             f"of a position held only ({EMULATED})", "reduce_only")
    if order.quantity is None:
        raise ContractError("an oco needs a quantity (Alpaca's oco takes no notional)",
                            "quantity")
    # What Alpaca's oco cannot take the emulator can: a fractional exit (a bracket on a
    # fractional position) or legs closer than a cent stay protected, emulated.
    if not _whole(order.quantity):
        raise NeedsEmulation(f"quantity {order.quantity}: Alpaca's oco takes whole shares "
                             f"only ({EMULATED})", "quantity")
    assert order.price is not None and order.stop_price is not None
    gap = (order.price - order.stop_price if order.side is Side.SELL
           else order.stop_price - order.price)
    if gap < OCO_STOP_GAP:
        raise NeedsEmulation(f"stop_price {order.stop_price}: Alpaca's oco needs the stop "
                             f"at least {OCO_STOP_GAP} beyond the limit leg's price "
                             f"{order.price} ({EMULATED})", "stop_price")


def oco_body(client_order_id: str, order: OrderSpec) -> dict[str, Any]:
    """The JSON body of POST /v2/orders for an oco ``check_oco`` passed: the take-profit
    limit as the order itself (``type`` limit, its price in ``take_profit``, as Alpaca's
    example has it), the stop leg in ``stop_loss``."""
    assert order.quantity is not None and order.price is not None
    assert order.stop_price is not None
    stop_loss = {"stop_price": amount(order.stop_price)}
    if order.stop_limit_price is not None:
        stop_loss["limit_price"] = amount(order.stop_limit_price)
    return {
        "symbol": order.symbol,
        "side": order.side.value,
        "type": _OCO_PARENT_TYPE,
        "time_in_force": TIME_IN_FORCE[order.time_in_force],
        "client_order_id": client_id(client_order_id),
        "qty": amount(order.quantity),
        "order_class": OCO_CLASS,
        "take_profit": {"limit_price": amount(order.price)},
        "stop_loss": stop_loss,
    }


def trail_fields(order: OrderSpec) -> dict[str, str]:
    """Alpaca's trail_price or trail_percent for our trailing offset: basis points are a
    percent / 100, shifted exactly (never through a rounding context)."""
    assert order.trailing_offset is not None
    offset = Decimal(order.trailing_offset)
    kind = order.trailing_offset_type or TrailingOffsetType.PRICE
    if kind is TrailingOffsetType.PRICE:
        return {"trail_price": amount(offset)}
    if kind is TrailingOffsetType.BPS:
        offset = offset.scaleb(-2, _EXACT).normalize(_EXACT)
    return {"trail_percent": amount(offset)}


def amount(value: Decimal) -> str:
    """A decimal as Alpaca's strings: fixed point, no exponent."""
    return format(value, "f")


def order_body(client_order_id: str, order: OrderSpec, *,
               extended_hours: bool = False) -> dict[str, Any]:
    """The JSON body of POST /v2/orders for ``order`` (``check`` passed)."""
    if order.type is OrderType.OCO:
        return oco_body(client_order_id, order)
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "side": order.side.value,
        "type": TYPES[order.type],
        "time_in_force": time_in_force(order),
        "client_order_id": client_id(client_order_id),
    }
    if order.quantity is not None:
        body["qty"] = amount(order.quantity)
    elif order.quote_quantity is not None:
        body["notional"] = amount(order.quote_quantity)
    if order.type in _WITH_LIMIT and order.price is not None:
        body["limit_price"] = amount(order.price)
    if order.type in _WITH_STOP and order.stop_price is not None:
        body["stop_price"] = amount(order.stop_price)
    if order.type is OrderType.TRAILING_STOP:
        body.update(trail_fields(order))
    if extended_hours and order.type is OrderType.LIMIT and body["time_in_force"] in (
            "day", "gtc"):
        body["extended_hours"] = True
    return body


def tidy(value: Decimal) -> Decimal:
    """Without trailing zeros and without an exponent: 0.0100 -> 0.01, 5E+4 -> 50000."""
    value = value.normalize()
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1))
    return value


def dec(value: Any) -> Decimal | None:
    """An Alpaca decimal (a string, or a number from a lenient server); None when unset."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def epoch_ms(stamp: Any) -> int:
    """RFC 3339 with up to nanoseconds and ``Z`` ("2021-03-16T18:38:01.942282123Z") as epoch
    ms; 0 when unset or unreadable."""
    if not isinstance(stamp, str) or not stamp:
        return 0
    text = stamp.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for datetime: the fraction cut to 6 digits
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def fills_of(known: Sequence[Fill], order_id: str, filled: Decimal,
             average: Decimal | None, at: int) -> list[Fill]:
    """The order's fills, given the ones already told (``known``) and Alpaca's cumulative
    ``filled_qty`` and ``filled_avg_price``: Alpaca's order object has no fill of its own, so
    each rise of the cumulative quantity is one fill, its id ``<order id>:<cumulative>``
    (the same every time it is derived), its price what makes the average come out."""
    fills = list(known)
    before = sum((f.quantity for f in fills), Decimal(0))
    if filled <= before or average is None:
        return fills
    spent = sum((_EXACT.multiply(f.quantity, f.price) for f in fills), Decimal(0))
    part = filled - before
    price = _EXACT.divide(_EXACT.subtract(_EXACT.multiply(filled, average), spent), part)
    price = price.quantize(_PRICE_PLACES) if price > 0 else average
    fills.append(Fill(fill_id=f"{order_id}:{amount(tidy(filled))}", price=wire(tidy(price)),
                      quantity=wire(tidy(part)), at=at))
    return fills


def extends(fills: Sequence[Fill], recorded: Sequence[Fill]) -> bool:
    """Whether ``fills`` (a process's memory) holds every fill of ``recorded`` (our record),
    and at least as much: then it is not behind the record."""
    ids = {f.fill_id for f in fills}
    return all(f.fill_id in ids for f in recorded) and len(fills) >= len(recorded)


def status_of(reply: Mapping[str, Any]) -> BrokerStatus:
    """Our status for an Alpaca order object; an unknown status counts as open."""
    status = str(reply.get("status", "new"))
    final = FINAL_STATUS.get(status)
    if final is not None:
        return final
    filled = dec(reply.get("filled_qty")) or Decimal(0)
    return BrokerStatus.PARTIALLY_FILLED if filled > 0 else BrokerStatus.NEW


def report(reply: Mapping[str, Any], client_order_id: str,
           known: Sequence[Fill] = ()) -> BrokerOrder:
    """A report of an Alpaca order object under our client id, with its fills (``known``:
    those told before, see ``fills_of``). An oco's parent is told with its leg
    (``report_oco``)."""
    if is_oco(reply):
        return report_oco(reply, client_order_id, known)
    status = status_of(reply)
    filled = dec(reply.get("filled_qty")) or Decimal(0)
    updated = epoch_ms(reply.get("updated_at")) or epoch_ms(reply.get("submitted_at"))
    at = epoch_ms(reply.get("filled_at")) or updated
    quantity = dec(reply.get("qty"))
    if quantity is None:  # a notional order: its quantity is what filled
        quantity = filled
    reason = None
    if status is BrokerStatus.REJECTED:
        reason = "alpaca: rejected"
    elif reply.get("status") == "replaced":
        reason = f"alpaca: replaced by {reply.get('replaced_by')}"
    return BrokerOrder(
        client_order_id=client_order_id, broker_order_id=str(reply["id"]),
        symbol=str(reply.get("symbol", "")), status=status, quantity=wire(tidy(quantity)),
        filled_quantity=wire(tidy(filled)),
        fills=fills_of(known, str(reply["id"]), filled, dec(reply.get("filled_avg_price")),
                       at),
        reason=reason, updated_at=updated)


def is_oco(reply: Mapping[str, Any]) -> bool:
    return reply.get("order_class") == OCO_CLASS


def is_oco_leg(reply: Mapping[str, Any]) -> bool:
    """Whether an order object is the stop leg of an oco (the parent is the take-profit
    limit): its client id is Alpaca's, not ours."""
    return is_oco(reply) and reply.get("type") != _OCO_PARENT_TYPE


def oco_orders(parent: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """An oco parent and its legs, when the answer nests them (``legs``); None when it does
    not (a lookup by client id may not: GET /v2/orders/{id}?nested=true does)."""
    legs = parent.get("legs")
    if not isinstance(legs, list) or not legs:
        return None
    return [parent, *(leg for leg in legs if isinstance(leg, Mapping) and "id" in leg)]


def oco_status(orders: Sequence[Mapping[str, Any]]) -> BrokerStatus:
    """Our status of an oco from its two orders' own: open while either is (a leg that
    filled leaves the other open until Alpaca cancels it, and both may fill in a fast
    market: its fill must still be told); then filled when either filled, rejected when
    both were, expired when one expired, else cancelled."""
    statuses = [status_of(o) for o in orders]
    if any(s not in FINAL_BROKER_STATUSES for s in statuses):
        filled = sum((dec(o.get("filled_qty")) or Decimal(0) for o in orders), Decimal(0))
        return BrokerStatus.PARTIALLY_FILLED if filled > 0 else BrokerStatus.NEW
    if BrokerStatus.FILLED in statuses:
        return BrokerStatus.FILLED
    if all(s is BrokerStatus.REJECTED for s in statuses):
        return BrokerStatus.REJECTED
    if BrokerStatus.EXPIRED in statuses:
        return BrokerStatus.EXPIRED
    return BrokerStatus.CANCELLED


def report_oco(parent: Mapping[str, Any], client_order_id: str,
               known: Sequence[Fill] = ()) -> BrokerOrder:
    """One report of ours for an oco: its fills are each leg's (derived from that leg's
    cumulative figures, ids ``<leg id>:<cumulative>``), its status the legs' together
    (``oco_status``). Without its leg (an answer that does not nest it) it is told from the
    parent alone and never as final: the leg may have filled, which only a nested lookup
    shows."""
    orders = oco_orders(parent)
    complete = orders is not None
    orders = orders or [parent]
    status = oco_status(orders)
    if not complete and status in FINAL_BROKER_STATUSES:
        filled = dec(parent.get("filled_qty")) or Decimal(0)
        status = BrokerStatus.PARTIALLY_FILLED if filled > 0 else BrokerStatus.NEW
    fills = list(known)
    total = Decimal(0)
    for order in orders:
        oid = str(order["id"])
        own = [f for f in known if f.fill_id.startswith(f"{oid}:")]
        filled = dec(order.get("filled_qty")) or Decimal(0)
        total += filled
        at = epoch_ms(order.get("filled_at")) or epoch_ms(order.get("updated_at"))
        fills.extend(fills_of(own, oid, filled, dec(order.get("filled_avg_price")),
                              at)[len(own):])
    updated = max(epoch_ms(o.get("updated_at")) or epoch_ms(o.get("submitted_at"))
                  for o in orders)
    quantity = dec(parent.get("qty")) or total
    return BrokerOrder(
        client_order_id=client_order_id, broker_order_id=str(parent["id"]),
        symbol=str(parent.get("symbol", "")), status=status, quantity=wire(tidy(quantity)),
        filled_quantity=wire(tidy(total)), fills=fills,
        reason="alpaca: rejected" if status is BrokerStatus.REJECTED else None,
        updated_at=updated)


def describe(status: int, body: Any) -> str:
    """An error as Alpaca told it: status, code and message only (never our request)."""
    if isinstance(body, Mapping):
        code, message = body.get("code"), body.get("message")
    else:
        code, message = None, body
    text = str(message)[:200] if message not in (None, "") else "no message"
    return f"alpaca HTTP {status}{'' if code is None else f' code {code}'}: {text}"


def retry_after(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds until Alpaca's rate window resets (X-Ratelimit-Reset, epoch s; ``headers``
    with lower-case names)."""
    try:
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, reset - now_s)


def map_error(status: int, body: Any, call: Call, *, retry_after_s: float | None = None
              ) -> BrokerError:
    """An HTTP error answer from Alpaca in the broker taxonomy.

    - 401, and 403 without a code (``{"message":"forbidden."}``): our credentials;
    - 403 with a code (40310000 "insufficient buying power"): the order is refused;
    - 429: throttled; 5xx: an unknown outcome for what sends, else unavailable;
    - 422 "client_order_id must be unique" on a send: an earlier send of ours landed;
    - 404: no such order; 422 on a cancel: the order is no longer cancelable;
    - any other 4xx: refused.
    """
    text = describe(status, body)
    code = body.get("code") if isinstance(body, Mapping) else None
    message = str(body.get("message", "") if isinstance(body, Mapping) else body).lower()
    if status == 401 or (status == 403 and code is None):
        return AuthenticationFailed(text)
    if status == 429:
        return RateLimited(text, retry_after_s)
    if status >= 500:
        return UnknownOutcome(text) if call in (Call.SUBMIT, Call.CANCEL) else (
            RetryableError(text))
    if status == 422 and call is Call.SUBMIT and DUPLICATE_TEXT in message:
        return DuplicateClientId(text)
    if status == 404 and call in (Call.LOOKUP, Call.CANCEL):
        return OrderNotFound(text)
    if status == 422 and call is Call.CANCEL:
        return NotCancellable(text)
    if status == 408:  # the request timed out at the server: it may have been acted on
        return UnknownOutcome(text) if call in (Call.SUBMIT, Call.CANCEL) else (
            RetryableError(text))
    return PermanentError(text)


def quote_mid(body: Any, symbol: str) -> Decimal | None:
    """The mid of a latest-quote answer's bid (``bp``) and ask (``ap``): a stock's
    ``{"symbol": ..., "quote": {...}}`` or crypto's ``{"quotes": {symbol: {...}}}``. One
    side when the other is 0 (no bid or no ask); None when there is no quote."""
    if not isinstance(body, Mapping):
        return None
    one = body.get("quote")
    if one is None and isinstance(body.get("quotes"), Mapping):
        one = body["quotes"].get(symbol)
    return mid_of(one)


def mid_of(quote: Any) -> Decimal | None:
    """The mid of one quote's bid (``bp``) and ask (``ap``), a latest-quote answer's or a
    streamed ``q`` message's (numbers decoded as Decimal): one side when the other is 0 (no
    bid or no ask); None when it has neither."""
    if not isinstance(quote, Mapping):
        return None
    sides = [_price(quote.get(k)) for k in ("bp", "ap")]
    known = [p for p in sides if p is not None and p.is_finite() and p > 0]
    if not known:
        return None
    return sum(known, Decimal(0)) / len(known)


def _price(value: Any) -> Decimal | None:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except ArithmeticError:
            return None
    return None


def minute_up(ms: int) -> int:
    """``ms`` rounded up to the minute: the first bar that starts at or after it."""
    return -(-ms // MINUTE_MS) * MINUTE_MS


def rfc3339(ms: int) -> str:
    """Epoch ms as the RFC 3339 Alpaca's market data takes ("2026-12-04T16:58:00Z");
    milliseconds only when there are some."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def bars_of(body: Any, symbol: str) -> list[Any] | None:
    """The bars of a historical bars answer: a stock's ``{"bars": [...], "symbol": ...}``
    (``null`` when there are none) or crypto's ``{"bars": {symbol: [...]}}`` (the symbol
    absent when it has none). None when ``body`` is not such an answer."""
    if not isinstance(body, Mapping) or "bars" not in body:
        return None
    bars = body["bars"]
    if isinstance(bars, Mapping):
        bars = bars.get(symbol)
    if bars is None:
        return []
    return bars if isinstance(bars, list) else None


def closed_volume(bars: Sequence[Any], since: int, now: int) -> Volume | None:
    """The volume of the 1-minute ``bars`` that start at or after ``since`` rounded up to
    the minute and are final at ``now`` (ended ``BAR_FINAL_MS`` or more before it), and
    ``until``, the end of the last of them (``since`` when none is).

    The bar holding ``since`` started before it and holds trades from before it too, so it
    is left out: the partial first minute is not counted, which errs towards less volume,
    the safe side for a participation cap. A bar still open, or closed but not final, is
    left for a later call (Alpaca answers it with the volume so far); a minute without
    trades has no bar and is passed over once a later bar is final. None when a bar is
    unreadable: a volume guessed from a broken answer would be worse than none."""
    first = minute_up(since)
    total, until = Decimal(0), since
    for bar in bars:
        if not isinstance(bar, Mapping):
            return None
        start, volume = epoch_ms(bar.get("t")), _volume(bar.get("v"))
        if start == 0 or volume is None:
            return None
        if start < first or start + MINUTE_MS + BAR_FINAL_MS > now:
            continue  # before what was asked (a lenient server), open, or not final yet
        total += volume
        until = max(until, start + MINUTE_MS)
    return Volume(total, until)


def _volume(value: Any) -> Decimal | None:
    """A bar's ``v``: a JSON number read exactly (a stock's whole shares, crypto's
    fractions), or a string from a lenient server; None unless finite and not negative."""
    found = _price(value)
    return found if found is not None and found.is_finite() and found >= 0 else None
