"""The local exchange's books and matching model, without any transport.

Requests come in as Binance's own parameter dicts (strings); answers are Binance's JSON
objects; refusals are ``ApiError`` with Binance's code, message and HTTP status. Changes of
orders and balances are pushed to listeners as user-data-stream events.

Matching model: a market order fills at the symbol's current price (in
``market_fill_parts`` fills); a limit order that crosses the price fills at once (taker),
otherwise rests (GTC) or expires (IOC/FOK); resting limits fill at their own price when a
test moves the price through them (``set_price``) or fills them in part (``fill``); stop and
take-profit orders wait for their trigger, then become a market or a limit order.

Trailing stops (``trailingDelta`` on a stop type, binance-spot-api-docs
faqs/trailing-stop-faq.md): without ``stopPrice`` tracking starts at placement from the last
price; with it, at the first price that meets the type's stop condition (the last price at
placement included: the docs do not say what Binance does then [unverified]). That price is
the first water mark: the highest price since for a SELL, the lowest for a BUY. The order
triggers at a price a ``trailingDelta`` bips past it the other way (SELL: <= water * (1 -
delta / 10000), BUY: >= water * (1 + delta / 10000)); a price that starts tracking or makes
a new water mark never triggers it.

Icebergs (``icebergQty``) are checked as Binance would (types, GTC, icebergAllowed, below the
quantity, LOT_SIZE, ICEBERG_PARTS) and reported (``icebergQty``, an executionReport's ``F``),
but execute as plain limit orders: the local book has no one to hide the rest from.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Any

import msgspec

from . import klines as kl
from .symbols import Listing, default_listings

DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
LONG = re.compile(r"^[0-9]{1,20}$")
BIPS = 10_000
CLIENT_ID = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
TAKER_FEE = Decimal("0.001")
MAKER_FEE = Decimal("0.0008")
E8 = Decimal("0.00000001")
# PENDING_NEW: an OTO's pending order, held until its working order has fully filled; it
# is open (its client id is taken, cancelling it cancels the list) but not on the book.
OPEN = ("NEW", "PARTIALLY_FILLED", "PENDING_NEW")
PENDING = "PENDING_NEW"
STOPS = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
ICEBERG_TYPES = ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
Event = dict[str, Any]


class ApiError(Exception):
    """A refusal as Binance words it: ``{"code": code, "msg": msg}`` with HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400,
                 retry_after: int | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status, self.retry_after = code, msg, status, retry_after


def rejected(msg: str) -> ApiError:
    return ApiError(-2010, msg)


def fmt(value: Decimal) -> str:
    """Binance writes amounts with 8 decimals: ``"0.01000000"``."""
    return f"{value.quantize(E8, rounding=ROUND_DOWN):f}"


def number(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    text = params.get(name)
    if text is None or text == "":
        if required:
            raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                  "or malformed.")
        return None
    if not DECIMAL.match(text):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                              "is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    return Decimal(text)


def mandatory(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                              "or malformed.")
    return value


def _floor(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step if step else value


class XOrder(msgspec.Struct, kw_only=True):
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    tif: str
    qty: Decimal
    price: Decimal  # 0 for market orders
    stop_price: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)  # quoteOrderQty of a market order
    executed: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    status: str = "NEW"
    time: int = 0
    update_time: int = 0
    working: bool = True
    working_time: int = -1
    order_list_id: int = -1
    locked: Decimal = Decimal(0)  # of the asset it spends, while open
    trailing_delta: int = 0  # bips; 0: not a trailing stop
    water: Decimal | None = None  # a trailing stop's water mark; None: not tracking yet
    trailing_time: int = -1  # when it started tracking
    # icebergQty (0: not an iceberg). Only carried and reported: the local book has no other
    # participants, so an iceberg executes as the plain limit order it is.
    iceberg_qty: Decimal = Decimal(0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def view(self) -> dict[str, Any]:
        """The order object of GET/DELETE /api/v3/order and openOrders."""
        out: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id, "price": fmt(self.price),
            "origQty": fmt(self.qty), "executedQty": fmt(self.executed),
            "cummulativeQuoteQty": fmt(self.cum_quote), "status": self.status,
            "timeInForce": self.tif or "GTC", "type": self.type, "side": self.side,
            "stopPrice": fmt(self.stop_price), "icebergQty": fmt(self.iceberg_qty),
            "time": self.time, "updateTime": self.update_time, "isWorking": self.working,
            "workingTime": self.working_time, "origQuoteOrderQty": fmt(self.quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        out.update(self.trailing_fields())
        return out

    def trailing_fields(self) -> dict[str, Any]:
        """A trailing stop's ``trailingDelta`` and ``trailingTime`` (rest-api.md: "Appears
        for Trailing Stop Orders"), none on other orders."""
        if not self.trailing_delta:
            return {}
        return {"trailingDelta": self.trailing_delta, "trailingTime": self.trailing_time}


class XList(msgspec.Struct, kw_only=True):
    """An order list: an OCO's legs' order ids, above leg first; an OTO's (``kind`` "OTO",
    an OTOCO too, as Binance names both) working order first, then its pending orders
    (above first)."""

    list_id: int
    list_client_id: str
    symbol: str
    legs: list[int]
    time: int
    done: bool = False  # listOrderStatus ALL_DONE: every leg is final
    kind: str = "OCO"  # contingencyType


class Exchange:
    """One account at the local exchange: listings, balances, orders, trades."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.offset_ms = 0  # the exchange's clock runs this far ahead of ours (tests: -1021)
        self.listings: dict[str, Listing] = default_listings()
        self.balances: dict[str, list[Decimal]] = {  # asset -> [free, locked]
            "USDT": [Decimal("1000000"), Decimal(0)],
            "BTC": [Decimal("100"), Decimal(0)],
            "ETH": [Decimal("1000"), Decimal(0)],
        }
        self.orders: dict[int, XOrder] = {}
        self.by_client: dict[tuple[str, str], int] = {}  # (symbol, client id) -> latest id
        self.trades: list[dict[str, Any]] = []
        self.listeners: list[Callable[[Event], None]] = []
        self.market_fill_parts = 1
        self.trades_page_max = 1000  # myTrades' largest page (Binance: 1000)
        # Commissions are charged in the asset a trade brings in (the base asset of a buy,
        # the quote asset of a sell), or, when set, in this one (BNB) at this price.
        self.fee_asset: str | None = None
        self.fee_asset_price = Decimal("600")
        self.created: Counter[str] = Counter()  # orders stored per newClientOrderId
        self.duplicates: Counter[str] = Counter()  # refused: the id is on an open order
        self._ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(5_000_001)
        self._list_ids = itertools.count(1)
        self.lists: dict[int, XList] = {}  # list id -> list
        self.lists_by_client: dict[str, int] = {}  # listClientOrderId -> latest list id
        self.lists_created: Counter[str] = Counter()  # lists stored per listClientOrderId
        self.flows: dict[str, kl.Flow] = {}  # symbol -> others' trading (klines' volume)

    def now(self) -> int:
        return self._clock() + self.offset_ms

    def listing(self, symbol: str | None) -> Listing:
        if not symbol:
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                  "or malformed.")
        found = self.listings.get(symbol)
        if found is None:
            raise ApiError(-1121, "Invalid symbol.")
        return found

    # -- market data ------------------------------------------------------------------------

    def exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        names = list(self.listings)
        if "symbol" in params:
            names = [self.listing(params["symbol"]).symbol]
        return {
            "timezone": "UTC", "serverTime": self.now(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                 "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 300000},
            ],
            "exchangeFilters": [],
            "symbols": [self.listings[n].info() for n in names],
        }

    def ticker(self, symbol: str | None) -> Any:
        if symbol is not None:
            lst = self.listing(symbol)
            return {"symbol": lst.symbol, "price": fmt(lst.price)}
        return [{"symbol": s.symbol, "price": fmt(s.price)} for s in self.listings.values()]

    def klines(self, params: dict[str, str]) -> list[list[Any]]:
        """GET /api/v3/klines (klines.py): Binance's refusals of an unknown symbol (-1121)
        or interval (-1120), of times and limits that are not numbers (-1100), and of a
        limit above 1000 (-1130, as Binance answers it [unverified])."""
        lst = self.listing(params.get("symbol"))
        interval = kl.INTERVALS.get(mandatory(params, "interval"))
        if interval is None:
            raise ApiError(-1120, "Invalid interval.")
        start, end = self._long(params, "startTime"), self._long(params, "endTime")
        limit = self._long(params, "limit")
        if limit is None:
            limit = kl.DEFAULT_LIMIT
        elif not 1 <= limit <= kl.MAX_LIMIT:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        now = self.now()
        opens = kl.opens(interval, now, start, end, limit)
        if not opens:
            return []
        flow = self.flows.get(lst.symbol, kl.Flow())
        first, stop = opens[0], opens[-1] + interval
        own: dict[int, list[dict[str, Any]]] = {o: [] for o in opens}
        for t in self.trades:
            if t["symbol"] == lst.symbol and first <= t["time"] < stop:
                own[t["time"] // interval * interval].append(t)
        return [kl.row(o, interval, lst.price, flow.between(o, min(o + interval, now)),
                       own[o], fmt) for o in opens]

    def set_volume(self, symbol: str, per_second: Decimal, since: int | None = None) -> None:
        """Others trade ``per_second`` of ``symbol``'s base asset every second from
        ``since`` (epoch ms; the exchange's now when None) on: counted in its klines."""
        lst = self.listing(symbol)
        self.flows.setdefault(lst.symbol, kl.Flow()).set(
            self.now() if since is None else since, per_second)

    @staticmethod
    def _long(params: dict[str, str], name: str) -> int | None:
        text = params.get(name)
        if text is None or text == "":
            return None
        if not LONG.match(text):
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal "
                                  "range is '^[0-9]{1,20}$'.")
        return int(text)

    # -- orders -----------------------------------------------------------------------------

    def place(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._new_order(params)
        self._store(order)
        self._execute_new(order)
        return self._response(order, params.get("newOrderRespType"))

    def validate(self, params: dict[str, str]) -> None:
        """Refuse a new order as ``place`` would, without placing it."""
        self._new_order(params)

    def _new_order(self, params: dict[str, str], list_id: int = -1,
                   pending: bool = False) -> XOrder:
        """A new order from its parameters, refused as Binance would. ``pending``: an OTO's
        pending order, placed only once its working order has filled, so the market and
        the balance are not checked now (``_activate`` does what placing then does)."""
        lst = self.listing(params.get("symbol"))
        side = mandatory(params, "side")
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        otype = mandatory(params, "type")
        if otype not in ("LIMIT", "MARKET", "LIMIT_MAKER", *STOPS):
            raise ApiError(-1116, "Invalid orderType.")
        qty = number(params, "quantity")
        quote_qty = number(params, "quoteOrderQty")
        price = number(params, "price")
        stop = number(params, "stopPrice")
        delta = self._trailing_delta(params, lst, otype)
        tif = params.get("timeInForce", "")
        if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            mandatory(params, "timeInForce")
            number(params, "price", required=True)
        if tif and tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(-1115, "Invalid timeInForce.")
        if tif and otype in ("MARKET", "LIMIT_MAKER", "STOP_LOSS", "TAKE_PROFIT"):
            raise ApiError(-1106, "Parameter 'timeInForce' sent when not required.")
        if otype == "LIMIT_MAKER":
            number(params, "price", required=True)
        if otype in STOPS:
            if delta is None:  # a trailing stop's stopPrice is optional (its activation)
                number(params, "stopPrice", required=True)
        elif stop is not None:
            raise ApiError(-1106, "Parameter 'stopPrice' sent when not required.")
        if otype in ("MARKET", "STOP_LOSS", "TAKE_PROFIT") and price is not None:
            raise ApiError(-1106, "Parameter 'price' sent when not required.")
        if otype == "MARKET":
            if (qty is None) == (quote_qty is None):
                raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but "
                                      "both were empty/null!")
            if quote_qty is not None:
                step = Decimal(self._lot(lst, market=True)["stepSize"]) or Decimal(
                    lst.filter("LOT_SIZE")["stepSize"])  # type: ignore[index]
                qty = _floor(quote_qty / lst.price, step)
        elif qty is None:
            number(params, "quantity", required=True)
        elif quote_qty is not None:
            raise ApiError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        assert qty is not None
        iceberg = self._iceberg(params, lst, otype, tif, qty)
        cid = params.get("newClientOrderId") or f"x-local{next(self._ids)}"
        if not CLIENT_ID.match(cid):
            raise ApiError(-1100, "Illegal characters found in parameter 'newClientOrderId'; "
                                  "legal range is '^[a-zA-Z0-9-_]{1,36}$'.")
        previous = self.by_client.get((lst.symbol, cid))
        if previous is not None and self.orders[previous].is_open:
            self.duplicates[cid] += 1
            raise rejected("Duplicate order sent.")
        now = self.now()
        order = XOrder(symbol=lst.symbol, order_id=0, client_order_id=cid, side=side,
                       type=otype, tif=tif, qty=qty, price=price or Decimal(0),
                       stop_price=stop or Decimal(0), quote_qty=quote_qty or Decimal(0),
                       time=now, update_time=now, working=otype not in STOPS,
                       working_time=now if otype not in STOPS else -1, order_list_id=list_id,
                       trailing_delta=delta or 0, iceberg_qty=iceberg or Decimal(0))
        self._check_filters(lst, order)
        if pending:
            order.status, order.working, order.working_time = PENDING, False, -1
            return order
        if delta is not None:
            self._trail(order, lst.price)  # tracking may start at once
        elif otype in STOPS and self._triggered(order, lst.price):
            raise rejected("Order would trigger immediately.")
        if otype == "LIMIT_MAKER" and self._crosses(order, lst.price):
            raise rejected("Order would immediately match and take.")
        self._check_balance(lst, order)
        return order

    @staticmethod
    def _trailing_delta(params: dict[str, str], lst: Listing, otype: str) -> int | None:
        """``trailingDelta`` (a LONG, rest-api.md), allowed on the stop types only, on a
        symbol that allows trailing stops (errors.md's words)."""
        text = params.get("trailingDelta")
        if text is None or text == "":
            return None
        if not LONG.match(text):
            raise ApiError(-1100, "Illegal characters found in parameter 'trailingDelta'; "
                                  "legal range is '^[0-9]{1,20}$'.")
        if otype not in STOPS:
            raise ApiError(-1106, "Parameter 'trailingDelta' sent when not required.")
        if not lst.allow_trailing:
            raise rejected("Trailing stop orders are not supported for this symbol.")
        return int(text)

    @staticmethod
    def _iceberg(params: dict[str, str], lst: Listing, otype: str, tif: str,
                 qty: Decimal) -> Decimal | None:
        """``icebergQty``: on LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT and TAKE_PROFIT_LIMIT
        orders with timeInForce GTC (rest-api.md), of a symbol with icebergAllowed, below
        the quantity (errors.md's words for each); its filters are ``_check_filters``'."""
        iceberg = number(params, "icebergQty")
        if iceberg is None or iceberg == 0:
            return None
        if otype not in ICEBERG_TYPES or (tif or "GTC") != "GTC":
            raise rejected("Unsupported order combination")
        if not lst.iceberg_allowed:
            raise rejected("Iceberg orders are not supported for this symbol.")
        if iceberg >= qty:
            raise rejected("IcebergQty exceeds QTY.")
        return iceberg

    def _store(self, order: XOrder) -> None:
        order.order_id = next(self._ids)
        self.orders[order.order_id] = order
        self.by_client[(order.symbol, order.client_order_id)] = order.order_id
        self.created[order.client_order_id] += 1

    def _execute_new(self, order: XOrder) -> None:
        """What happens to a stored order at once: fills, rests or expires; events out."""
        lst = self.listings[order.symbol]
        self._emit_report(order, "NEW")
        if order.type == "MARKET":
            self._fill_market(order, lst)
        elif order.type in ("LIMIT", "LIMIT_MAKER"):
            self._place_limit(order, lst)
        else:
            self._lock(order, lst)
        self._emit_balances(lst)

    def _place_limit(self, order: XOrder, lst: Listing) -> None:
        if self._crosses(order, lst.price):
            self._trade(order, lst, order.qty, lst.price, maker=False)
        elif order.tif in ("IOC", "FOK"):
            self._finish(order, "EXPIRED")
        else:
            self._lock(order, lst)

    def _fill_market(self, order: XOrder, lst: Listing) -> None:
        parts = max(1, self.market_fill_parts)
        step = Decimal(lst.filter("LOT_SIZE")["stepSize"])  # type: ignore[index]
        piece = _floor(order.qty / parts, step)
        for i in range(parts):
            left = order.qty - order.executed
            qty = left if i == parts - 1 or piece <= 0 else min(piece, left)
            if qty > 0:
                self._trade(order, lst, qty, lst.price, maker=False)

    def _response(self, order: XOrder, resp_type: str | None) -> dict[str, Any]:
        if resp_type is None:
            resp_type = "FULL" if order.type in ("MARKET", "LIMIT") else "ACK"
        out: dict[str, Any] = {"symbol": order.symbol, "orderId": order.order_id,
                               "orderListId": order.order_list_id,
                               "clientOrderId": order.client_order_id,
                               "transactTime": order.time}
        if resp_type == "ACK":
            return out
        view = order.view()
        out.update({k: view[k] for k in ("price", "origQty", "executedQty",
                                         "origQuoteOrderQty", "cummulativeQuoteQty", "status",
                                         "timeInForce", "type", "side", "workingTime",
                                         "selfTradePreventionMode")})
        if order.type in STOPS:
            out["stopPrice"] = view["stopPrice"]
        out.update(order.trailing_fields())
        if resp_type == "FULL":
            out["fills"] = [
                {"price": t["price"], "qty": t["qty"], "commission": t["commission"],
                 "commissionAsset": t["commissionAsset"], "tradeId": t["id"]}
                for t in self.trades if t["orderId"] == order.order_id
            ]
        return out

    def find(self, params: dict[str, str]) -> XOrder:
        lst = self.listing(params.get("symbol"))
        oid, cid = params.get("orderId"), params.get("origClientOrderId")
        if oid is None and cid is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but "
                                  "both were empty/null!")
        order: XOrder | None = None
        if oid is not None:
            try:
                order = self.orders.get(int(oid))
            except ValueError:
                raise ApiError(-1100, "Illegal characters found in parameter 'orderId'; "
                                      "legal range is '^[0-9]{1,20}$'.") from None
            if order is not None and cid is not None and order.client_order_id != cid:
                raise ApiError(-2039, "Client order ID is not correct for this order ID.")
        elif cid is not None:
            found = self.by_client.get((lst.symbol, cid))
            order = None if found is None else self.orders[found]
        if order is None or order.symbol != lst.symbol:
            raise ApiError(-2013, "Order does not exist.")
        return order

    def query(self, params: dict[str, str]) -> dict[str, Any]:
        return self.find(params).view()

    def cancel(self, params: dict[str, str]) -> dict[str, Any]:
        try:
            order = self.find(params)
        except ApiError as exc:
            if exc.code == -2013:
                raise ApiError(-2011, "Unknown order sent.") from None
            raise
        if not order.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        self._finish(order, "CANCELED")
        self._emit_balances(self.listings[order.symbol])
        view = order.view()
        view["origClientOrderId"] = view.pop("clientOrderId")
        view["clientOrderId"] = params.get("newClientOrderId") or f"cancel{order.order_id}"
        view["transactTime"] = self.now()
        for key in ("time", "updateTime", "isWorking", "workingTime", "icebergQty"):
            view.pop(key, None)
        return view

    def open_orders(self, symbol: str | None) -> list[dict[str, Any]]:
        if symbol is not None:
            self.listing(symbol)
        return [o.view() for o in self.orders.values()
                if o.is_open and (symbol is None or o.symbol == symbol)]

    def cancel_open(self, symbol: str | None) -> list[dict[str, Any]]:
        lst = self.listing(symbol)
        out = []
        for order in list(self.orders.values()):
            if not order.is_open or order.symbol != lst.symbol:
                continue
            if order.order_list_id >= 0:  # a list is cancelled whole, as one list object
                out.append(self.cancel_list({"symbol": order.symbol,
                                             "orderListId": str(order.order_list_id)}))
            else:
                out.append(self.cancel({"symbol": order.symbol, "orderId": str(order.order_id)}))
        if not out:
            raise ApiError(-2011, "Unknown order sent.")
        return out

    def place_oco(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /api/v3/orderList/oco: two legs of one side and quantity, one above the last
        price and one below; when one trades or triggers, the other expires."""
        lst = self.listing(params.get("symbol"))
        side = mandatory(params, "side")
        qty = mandatory(params, "quantity")
        list_cid = self._list_client_id(params)
        types = (mandatory(params, "aboveType"), mandatory(params, "belowType"))
        self._check_pair(types)
        legs: list[XOrder] = []
        for leg, otype in zip(("above", "below"), types, strict=True):
            leg_params = {"symbol": lst.symbol, "side": side, "quantity": qty, "type": otype}
            for src, dst in (("ClientOrderId", "newClientOrderId"), ("Price", "price"),
                             ("StopPrice", "stopPrice"), ("TimeInForce", "timeInForce")):
                if f"{leg}{src}" in params:
                    leg_params[dst] = params[f"{leg}{src}"]
            legs.append(self._new_order(leg_params, -1))
        above, below = legs
        if above.client_order_id == below.client_order_id:
            raise rejected("Duplicate order sent.")
        above_at = above.price if above.type == "LIMIT_MAKER" else above.stop_price
        below_at = below.price if below.type == "LIMIT_MAKER" else below.stop_price
        if not below_at < lst.price < above_at:
            raise rejected("The relationship of the prices for the orders is not correct.")
        list_id = next(self._list_ids)
        for order in legs:
            order.order_list_id = list_id
            self._store(order)
        xl = XList(list_id=list_id, list_client_id=list_cid, symbol=lst.symbol,
                   legs=[o.order_id for o in legs], time=self.now())
        self.lists[list_id] = xl
        self.lists_by_client[list_cid] = list_id
        self.lists_created[list_cid] += 1
        self._emit_list(xl, "EXEC_STARTED")
        for order in legs:
            if order.is_open:
                self._execute_new(order)
        locked = [o for o in legs if o.is_open and o.locked]
        if len(locked) == 2:  # only one leg can fill: the list holds the larger amount once
            self._unlock(min(locked, key=lambda o: o.locked), lst)
            self._emit_balances(lst)
        resp_type = params.get("newOrderRespType") or "ACK"
        out = self._list_view(xl, "EXEC_STARTED")
        out["orderReports"] = [self._response(o, resp_type) for o in legs]
        return out

    def _list_client_id(self, params: dict[str, str]) -> str:
        """A new list's listClientOrderId: refused while an open list has it."""
        list_cid = params.get("listClientOrderId") or f"x-list{next(self._ids)}"
        if not CLIENT_ID.match(list_cid):
            raise ApiError(-1100, "Illegal characters found in parameter 'listClientOrderId'; "
                                  "legal range is '^[a-zA-Z0-9-_]{1,36}$'.")
        previous = self.lists_by_client.get(list_cid)
        if previous is not None and not self.lists[previous].done:
            self.duplicates[list_cid] += 1
            raise rejected("Duplicate order sent.")
        return list_cid

    @staticmethod
    def _check_pair(types: tuple[str, str]) -> None:
        """An OCO pair's types (above, below): limit-maker or stop types, one a stop-loss."""
        if types[0] not in ("LIMIT_MAKER", *STOPS) or types[1] not in ("LIMIT_MAKER", *STOPS):
            raise ApiError(-1116, "Invalid orderType.")
        if sum(1 for t in types if t.startswith("STOP_LOSS")) != 1:
            raise ApiError(-1166, "An OCO must have exactly one STOP_LOSS or STOP_LOSS_LIMIT "
                                  "order.")

    def place_oto(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /api/v3/orderList/oto: a working LIMIT / LIMIT_MAKER order, and one pending
        order held (PENDING_NEW) until the working order has fully filled."""
        return self._place_oto(params, ("",))

    def place_otoco(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /api/v3/orderList/otoco: a working order and a pending OCO pair (above,
        below), placed once the working order has fully filled; then, as an OCO, the one
        that trades or triggers expires the other."""
        return self._place_oto(params, ("Above", "Below"))

    def _place_oto(self, params: dict[str, str], positions: tuple[str, ...]) -> dict[str, Any]:
        lst = self.listing(params.get("symbol"))
        list_cid = self._list_client_id(params)
        if not lst.oto_allowed:  # worded as OCO's refusal (errors.md has none for OTO)
            raise rejected("OTO orders are not supported for this symbol.")
        if mandatory(params, "workingType") not in ("LIMIT", "LIMIT_MAKER"):
            raise ApiError(-1116, "Invalid orderType.")
        for name in ("workingSide", "workingPrice", "workingQuantity"):
            mandatory(params, name)
        working_params = {"symbol": lst.symbol}
        for src, dst in (("Type", "type"), ("Side", "side"), ("ClientOrderId", "newClientOrderId"),
                         ("Price", "price"), ("Quantity", "quantity"),
                         ("TimeInForce", "timeInForce"), ("IcebergQty", "icebergQty")):
            if f"working{src}" in params:
                working_params[dst] = params[f"working{src}"]
        side, qty = mandatory(params, "pendingSide"), mandatory(params, "pendingQuantity")
        pending_params = []
        for position in positions:
            leg = {"symbol": lst.symbol, "side": side, "quantity": qty,
                   "type": mandatory(params, f"pending{position}Type")}
            for src, dst in (("ClientOrderId", "newClientOrderId"), ("Price", "price"),
                             ("StopPrice", "stopPrice"), ("TimeInForce", "timeInForce"),
                             ("TrailingDelta", "trailingDelta"),
                             ("IcebergQty", "icebergQty")):
                if f"pending{position}{src}" in params:
                    leg[dst] = params[f"pending{position}{src}"]
            pending_params.append(leg)
        if len(pending_params) == 2:
            self._check_pair((pending_params[0]["type"], pending_params[1]["type"]))
        working = self._new_order(working_params)
        pending = [self._new_order(p, pending=True) for p in pending_params]
        ids = [o.client_order_id for o in (working, *pending)]
        if len(set(ids)) != len(ids):
            raise rejected("Duplicate order sent.")
        if len(pending) == 2:
            above, below = pending
            above_at = above.price if above.type == "LIMIT_MAKER" else above.stop_price
            below_at = below.price if below.type == "LIMIT_MAKER" else below.stop_price
            if not below_at < above_at:
                raise rejected("The relationship of the prices for the orders is not correct.")
        list_id = next(self._list_ids)
        for order in (working, *pending):
            order.order_list_id = list_id
            self._store(order)
        xl = XList(list_id=list_id, list_client_id=list_cid, symbol=lst.symbol, kind="OTO",
                   legs=[o.order_id for o in (working, *pending)], time=self.now())
        self.lists[list_id] = xl
        self.lists_by_client[list_cid] = list_id
        self.lists_created[list_cid] += 1
        self._emit_list(xl, "EXEC_STARTED")
        resp_type = params.get("newOrderRespType") or "ACK"
        # As Binance answers: a working order filled at once shows FILLED, its pending
        # orders still PENDING_NEW (rest-api.md), though they are placed by then.
        held = [self._response(o, resp_type) for o in pending]
        for order in pending:
            self._emit_report(order, "NEW")
        self._execute_new(working)
        out = self._list_view(xl, "EXEC_STARTED")
        out["orderReports"] = [self._response(working, resp_type), *held]
        return out

    def _activate(self, pending: list[XOrder]) -> None:
        """The pending orders of an OTO whose working order has fully filled go to the
        book as new orders; a stop the last price has already reached triggers at once."""
        now = self.now()
        for order in pending:
            if order.status == PENDING:
                order.status, order.update_time = "NEW", now
                order.working = order.type not in STOPS
                order.working_time = now if order.working else -1
        for order in pending:
            if order.is_open:
                self._execute_new(order)
        for order in pending:
            if order.is_open:
                lst = self.listings[order.symbol]
                self._react(order, lst, lst.price)

    def _list_view(self, xl: XList, list_status: str) -> dict[str, Any]:
        return {
            "orderListId": xl.list_id, "contingencyType": xl.kind, "listStatusType": list_status,
            "listOrderStatus": "ALL_DONE" if xl.done else "EXECUTING",
            "listClientOrderId": xl.list_client_id, "transactionTime": xl.time,
            "symbol": xl.symbol,
            "orders": [{"symbol": xl.symbol, "orderId": oid,
                        "clientOrderId": self.orders[oid].client_order_id} for oid in xl.legs],
        }

    def find_list(self, params: dict[str, str]) -> XList:
        lid, cid = params.get("orderListId"), params.get("origClientOrderId",
                                                         params.get("listClientOrderId"))
        if lid is None and cid is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderListId' must be sent, "
                                  "but both were empty/null!")
        found: XList | None = None
        if lid is not None:
            try:
                found = self.lists.get(int(lid))
            except ValueError:
                raise ApiError(-1100, "Illegal characters found in parameter 'orderListId'; "
                                      "legal range is '^[0-9]{1,20}$'.") from None
        elif cid is not None:
            key = self.lists_by_client.get(cid)
            found = None if key is None else self.lists[key]
        if found is None:
            raise ApiError(-2013, "Order list does not exist.")  # code as for orders [unverified]
        return found

    def query_list(self, params: dict[str, str]) -> dict[str, Any]:
        """GET /api/v3/orderList (by orderListId or origClientOrderId)."""
        xl = self.find_list(params)
        return self._list_view(xl, "ALL_DONE" if xl.done else "EXEC_STARTED")

    def cancel_list(self, params: dict[str, str]) -> dict[str, Any]:
        """DELETE /api/v3/orderList (symbol and orderListId or listClientOrderId): every leg
        still open is cancelled."""
        lst = self.listing(params.get("symbol"))
        if "orderListId" not in params and "listClientOrderId" not in params:
            raise ApiError(-1102, "Param 'listClientOrderId' or 'orderListId' must be sent, "
                                  "but both were empty/null!")
        try:
            xl = self.find_list({k: v for k, v in params.items() if k != "origClientOrderId"})
        except ApiError:
            raise ApiError(-2011, "Unknown order list sent.") from None
        if xl.symbol != lst.symbol or xl.done:
            raise ApiError(-2011, "Unknown order list sent.")
        for oid in xl.legs:
            order = self.orders[oid]
            if order.is_open:
                order.status = "CANCELED"  # both legs go together: no expiry of the sibling
        for oid in xl.legs:
            order = self.orders[oid]
            if order.status == "CANCELED" and order.locked:
                self._unlock(order, lst)
            if order.status == "CANCELED":
                order.update_time = self.now()
                self._emit_report(order, "CANCELED")
        self._list_done(xl)
        self._emit_balances(lst)
        out = self._list_view(xl, "ALL_DONE")
        out["listStatusType"] = "ALL_DONE"
        reports = []
        for oid in xl.legs:
            view = self.orders[oid].view()
            view["origClientOrderId"] = view.pop("clientOrderId")
            view["clientOrderId"] = params.get("newClientOrderId") or f"cancel{oid}"
            view["transactTime"] = self.now()
            for key in ("time", "updateTime", "isWorking", "workingTime", "icebergQty"):
                view.pop(key, None)
            reports.append(view)
        out["orderReports"] = reports
        return out

    # -- account ----------------------------------------------------------------------------

    def account(self, params: dict[str, str]) -> dict[str, Any]:
        omit = params.get("omitZeroBalances") == "true"
        balances = [{"asset": a, "free": fmt(f), "locked": fmt(lk)}
                    for a, (f, lk) in self.balances.items() if not (omit and f == lk == 0)]
        return {
            "makerCommission": 8, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": "0.00080000", "taker": "0.00100000",
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.now(), "accountType": "SPOT", "balances": balances,
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/myTrades: trades of the symbol (of one order with ``orderId``) in id
        order; from ``fromId`` on when given, else the most recent ones (as Binance's doc
        says); at most ``limit`` (default 500, at most 1000: Binance's page)."""
        lst = self.listing(params.get("symbol"))
        oid, from_id = params.get("orderId"), params.get("fromId")
        try:
            limit = int(params.get("limit", "500"))
            start = None if from_id is None else int(from_id)
        except ValueError:
            raise ApiError(-1100, "Illegal characters found in a parameter.") from None
        limit = max(1, min(limit, self.trades_page_max))
        out = [t for t in self.trades if t["symbol"] == lst.symbol
               and (oid is None or str(t["orderId"]) == oid)
               and (start is None or t["id"] >= start)]
        return out[:limit] if start is not None else out[-limit:]

    # -- moving the market (tests) ----------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the last price: triggers stops and fills the resting limits it reaches."""
        lst = self.listing(symbol)
        lst.price = price
        for order in list(self.orders.values()):
            if not order.is_open or order.symbol != symbol or order.status == PENDING:
                continue
            self._react(order, lst, price)
        self._emit_balances(lst)

    def _react(self, order: XOrder, lst: Listing, price: Decimal) -> None:
        """What the last price ``price`` does to one open order: triggers a stop, fills a
        resting limit it reaches."""
        if not order.is_open or order.status == PENDING:
            return
        if not order.working:
            fires = (self._trail(order, price) if order.trailing_delta
                     else self._triggered(order, price))
            if not fires:
                return
            order.working, order.working_time = True, self.now()
            self._done(order)  # a triggered OCO leg expires its sibling
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                self._unlock(order, lst)
                self._fill_market(order, lst)
                return
        if self._crosses(order, price):
            self._trade(order, lst, order.qty - order.executed, order.price, maker=True)

    def fill(self, symbol: str, client_order_id: str, qty: Decimal) -> None:
        """Fill ``qty`` of a resting order at its own price (a partial fill, as a test
        orders it)."""
        order = self.find({"symbol": symbol, "origClientOrderId": client_order_id})
        if not order.is_open or not order.working:
            raise ValueError(f"order {client_order_id} is not resting")
        lst = self.listings[symbol]
        self._trade(order, lst, min(qty, order.qty - order.executed), order.price, maker=True)
        self._emit_balances(lst)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _crosses(order: XOrder, price: Decimal) -> bool:
        return price <= order.price if order.side == "BUY" else price >= order.price

    @staticmethod
    def _triggered(order: XOrder, price: Decimal) -> bool:
        up = (order.type.startswith("STOP")) == (order.side == "BUY")
        return price >= order.stop_price if up else price <= order.stop_price

    def _trail(self, order: XOrder, price: Decimal) -> bool:
        """Whether ``price`` triggers a trailing stop, tracking it (the module's docstring)."""
        sell = order.side == "SELL"
        if order.water is None:
            if order.stop_price and not self._triggered(order, price):
                return False
            order.water, order.trailing_time = price, self.now()
            return False
        if price > order.water if sell else price < order.water:
            order.water = price
            return False
        # Exactly, in integers of bips: price <= water * (1 - delta) or >= water * (1 + delta).
        if sell:
            return price * BIPS <= order.water * (BIPS - order.trailing_delta)
        return price * BIPS >= order.water * (BIPS + order.trailing_delta)

    @staticmethod
    def _lot(lst: Listing, market: bool) -> dict[str, Any]:
        f = lst.filter("MARKET_LOT_SIZE") if market else None
        return f or lst.filter("LOT_SIZE") or {"minQty": "0", "maxQty": "0", "stepSize": "0"}

    def _check_filters(self, lst: Listing, order: XOrder) -> None:
        def fail(name: str) -> ApiError:
            return ApiError(-1013, f"Filter failure: {name}")

        pf = lst.filter("PRICE_FILTER")
        if pf is not None:
            lo, hi, tick = (Decimal(pf[k]) for k in ("minPrice", "maxPrice", "tickSize"))
            for p in (order.price, order.stop_price):
                if p == 0:
                    continue
                if (lo and p < lo) or (hi and p > hi) or (tick and p % tick != 0):
                    raise fail("PRICE_FILTER")
        market = order.type == "MARKET"
        for name in ("LOT_SIZE", "MARKET_LOT_SIZE") if market else ("LOT_SIZE",):
            f = lst.filter(name)
            if f is None:
                continue
            lo, hi, step = (Decimal(f[k]) for k in ("minQty", "maxQty", "stepSize"))
            q = order.qty
            if (lo and q < lo) or (hi and q > hi) or (step and (q - lo) % step != 0) or q <= 0:
                raise fail(name)
        at = order.price if order.price else lst.price
        notional = at * order.qty
        nf = lst.filter("NOTIONAL")
        if nf is not None:
            if (not market or nf["applyMinToMarket"]) and notional < Decimal(nf["minNotional"]):
                raise fail("NOTIONAL")
            if (not market or nf["applyMaxToMarket"]) and notional > Decimal(nf["maxNotional"]):
                raise fail("NOTIONAL")
        mf = lst.filter("MIN_NOTIONAL")
        if (mf is not None and (not market or mf["applyToMarket"])
                and notional < Decimal(mf["minNotional"])):
            raise fail("MIN_NOTIONAL")
        pp = lst.filter("PERCENT_PRICE_BY_SIDE")
        if pp is not None and order.price:
            side = "bid" if order.side == "BUY" else "ask"
            up, down = Decimal(pp[f"{side}MultiplierUp"]), Decimal(pp[f"{side}MultiplierDown"])
            if not lst.price * down <= order.price <= lst.price * up:
                raise fail("PERCENT_PRICE_BY_SIDE")
        td = lst.filter("TRAILING_DELTA")
        if td is not None and order.trailing_delta:
            # filters.md: STOP_LOSS BUY / TAKE_PROFIT SELL by the "above" bounds, STOP_LOSS
            # SELL / TAKE_PROFIT BUY by the "below" ones.
            where = "Above" if order.type.startswith("STOP") == (order.side == "BUY") \
                else "Below"
            if not (td[f"minTrailing{where}Delta"] <= order.trailing_delta
                    <= td[f"maxTrailing{where}Delta"]):
                raise fail("TRAILING_DELTA")
        if order.iceberg_qty:
            # LOT_SIZE applies to icebergQty too; ICEBERG_PARTS: ceil(qty / icebergQty).
            f = lst.filter("LOT_SIZE")
            if f is not None:
                lo, hi, step = (Decimal(f[k]) for k in ("minQty", "maxQty", "stepSize"))
                q = order.iceberg_qty
                if (lo and q < lo) or (hi and q > hi) or (step and (q - lo) % step != 0):
                    raise fail("LOT_SIZE")
            ip = lst.filter("ICEBERG_PARTS")
            if ip is not None and (order.qty / order.iceberg_qty).to_integral_value(
                    ROUND_CEILING) > int(ip["limit"]):
                raise fail("ICEBERG_PARTS")
        mn = lst.filter("MAX_NUM_ORDERS")
        if mn is not None:
            count = sum(1 for o in self.orders.values() if o.is_open and o.symbol == lst.symbol)
            if count >= mn["maxNumOrders"]:
                raise fail("MAX_NUM_ORDERS")

    def _spends(self, lst: Listing, order: XOrder) -> tuple[str, Decimal]:
        if order.side == "SELL":
            return lst.base, order.qty - order.executed
        at = order.price or order.stop_price or lst.price
        return lst.quote, (order.qty - order.executed) * at

    def _check_balance(self, lst: Listing, order: XOrder) -> None:
        asset, amount = self._spends(lst, order)
        if self.balances.setdefault(asset, [Decimal(0), Decimal(0)])[0] < amount:
            raise rejected("Account has insufficient balance for requested action.")

    def _lock(self, order: XOrder, lst: Listing) -> None:
        asset, amount = self._spends(lst, order)
        bal = self.balances[asset]
        bal[0] -= amount
        bal[1] += amount
        order.locked = amount

    def _unlock(self, order: XOrder, lst: Listing) -> None:
        asset = lst.base if order.side == "SELL" else lst.quote
        bal = self.balances[asset]
        bal[0] += order.locked
        bal[1] -= order.locked
        order.locked = Decimal(0)

    def _trade(self, order: XOrder, lst: Listing, qty: Decimal, price: Decimal,
               maker: bool) -> None:
        if order.locked:
            self._unlock(order, lst)
        quote = qty * price
        buy = order.side == "BUY"
        got_asset = lst.base if buy else lst.quote
        got = qty if buy else quote
        rate = MAKER_FEE if maker else TAKER_FEE
        paid_asset, paid = (lst.quote, quote) if buy else (lst.base, qty)
        self.balances.setdefault(paid_asset, [Decimal(0), Decimal(0)])[0] -= paid
        if self.fee_asset is None:  # Binance's default: out of what the trade brings in
            fee_asset = got_asset
            fee = (got * rate).quantize(E8, rounding=ROUND_DOWN)
            self.balances.setdefault(got_asset, [Decimal(0), Decimal(0)])[0] += got - fee
        else:  # paid in another asset (BNB), valued at fee_asset_price quote per unit
            fee_asset = self.fee_asset
            fee = (quote * rate / self.fee_asset_price).quantize(E8, rounding=ROUND_DOWN)
            self.balances.setdefault(got_asset, [Decimal(0), Decimal(0)])[0] += got
            self.balances.setdefault(fee_asset, [Decimal(0), Decimal(0)])[0] -= fee
        order.executed += qty
        order.cum_quote += quote
        order.update_time = self.now()
        order.status = "FILLED" if order.executed >= order.qty else "PARTIALLY_FILLED"
        trade = {
            "symbol": lst.symbol, "id": next(self._trade_ids), "orderId": order.order_id,
            "orderListId": order.order_list_id, "price": fmt(price), "qty": fmt(qty),
            "quoteQty": fmt(quote), "commission": fmt(fee), "commissionAsset": fee_asset,
            "time": order.update_time, "isBuyer": buy, "isMaker": maker, "isBestMatch": True,
        }
        self.trades.append(trade)
        if order.is_open:
            self._lock(order, lst)
        self._emit_report(order, "TRADE", trade)
        if not order.is_open or order.order_list_id >= 0:
            self._done(order)

    def _finish(self, order: XOrder, status: str, siblings: bool = True,
                expiry: str | None = None) -> None:
        if order.locked:
            self._unlock(order, self.listings[order.symbol])
        order.status = status
        order.update_time = self.now()
        self._emit_report(order, "CANCELED" if status == "CANCELED" else "EXPIRED",
                          expiry=expiry)
        if siblings:
            self._done(order)

    def _done(self, order: XOrder) -> None:
        """An OCO leg that trades, triggers or ends takes its sibling with it (expired, as
        Binance's OCO_TRIGGER); the list is all done when every leg is final."""
        xl = self.lists.get(order.order_list_id) if order.order_list_id >= 0 else None
        if xl is None or xl.done:
            return
        if xl.kind == "OTO":
            self._oto_done(xl, order)
        else:
            for oid in xl.legs:
                other = self.orders[oid]
                if other is not order and other.is_open:
                    self._finish(other, "EXPIRED", siblings=False)
        if not any(self.orders[oid].is_open for oid in xl.legs):
            self._list_done(xl)

    def _oto_done(self, xl: XList, order: XOrder) -> None:
        """An OTO's order traded, triggered or ended. The working order fully filled places
        the pending ones; ended otherwise (cancelled, expired), it expires them unplaced
        (OTO_PHASE_ONE_EXPIRED). A pending order cancelled before the working one filled
        takes the list with it; once placed, a pending OCO pair is an OCO."""
        working, *pending = (self.orders[oid] for oid in xl.legs)
        if order is working:
            if working.status == "FILLED":
                self._activate(pending)
            elif not working.is_open:
                for other in pending:
                    if other.is_open:
                        self._finish(other, "EXPIRED", siblings=False,
                                     expiry="OTO_PHASE_ONE_EXPIRED")
            return
        for other in (working, *pending):
            if other is not order and other.is_open:
                self._finish(other, "EXPIRED", siblings=False)

    def _list_done(self, xl: XList) -> None:
        if not xl.done:
            xl.done = True
            self._emit_list(xl, "ALL_DONE")

    def _emit_list(self, xl: XList, list_status: str) -> None:
        self._emit({
            "e": "listStatus", "E": self.now(), "s": xl.symbol, "g": xl.list_id, "c": xl.kind,
            "l": list_status, "L": "ALL_DONE" if xl.done else "EXECUTING", "r": "NONE",
            "C": xl.list_client_id, "T": self.now(),
            "O": [{"s": xl.symbol, "i": oid, "c": self.orders[oid].client_order_id}
                  for oid in xl.legs],
        })

    def _emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _emit_report(self, order: XOrder, exec_type: str,
                     trade: dict[str, Any] | None = None, expiry: str | None = None) -> None:
        now = self.now()
        self._emit({
            "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_order_id,
            "S": order.side, "o": order.type, "f": order.tif or "GTC", "q": fmt(order.qty),
            "p": fmt(order.price), "P": fmt(order.stop_price), "F": fmt(order.iceberg_qty),
            "g": order.order_list_id, "C": "", "x": exec_type, "X": order.status, "r": "NONE",
            "i": order.order_id, "l": trade["qty"] if trade else "0.00000000",
            "z": fmt(order.executed), "L": trade["price"] if trade else "0.00000000",
            "n": trade["commission"] if trade else "0",
            "N": trade["commissionAsset"] if trade else None, "T": order.update_time,
            "t": trade["id"] if trade else -1, "I": next(self._trade_ids),
            "w": order.is_open and order.working, "m": bool(trade and trade["isMaker"]),
            "M": False, "O": order.time, "Z": fmt(order.cum_quote),
            "Y": trade["quoteQty"] if trade else "0.00000000", "Q": fmt(order.quote_qty),
            "W": order.working_time, "V": "EXPIRE_MAKER",
            **({"d": order.trailing_delta, "D": order.trailing_time}
               if order.trailing_delta else {}),
            **({"eR": expiry} if expiry else {}),
        })

    def _emit_balances(self, lst: Listing) -> None:
        now = self.now()
        self._emit({"e": "outboundAccountPosition", "E": now, "u": now, "B": [
            {"a": a, "f": fmt(self.balances[a][0]), "l": fmt(self.balances[a][1])}
            for a in (lst.base, lst.quote)]})

