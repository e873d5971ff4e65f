"""The local Alpaca's orders and matching model: a market order fills at the symbol's
current price, a limit order rests until the price reaches it, a stop (stop-limit) order
waits for the price to reach its stop and is then a market (limit) order; a trailing stop
(alpaca-docs orders.md) keeps ``hwm``, the best price since submission (a sell's highest, a
buy's lowest), and its stop_price hwm -/+ trail_price or hwm * (1 -/+ trail_percent / 100),
and is a market order once the price reaches that stop (a stop once reached stays
triggered). Orders are
Alpaca's order objects (decimals as strings, unset values null, RFC 3339 times), kept by
Alpaca's id and by client_order_id, which stays taken for good (a cancelled order's too).

The oco order class (alpaca-docs orders.md "OCO Orders"; what it does not say is marked
[unverified] in docs/brokers/alpaca.md): ``type`` limit with ``take_profit.limit_price``
and ``stop_loss.stop_price`` (``stop_loss.limit_price``: a stop-limit), day or gtc, whole
shares, a stock. Two orders: the take-profit limit is the parent, under the client id
sent, ``new``; the stop is its leg, under a client id made here, ``held`` (told as a
``held`` update) until its stop is reached. A fill of one ends the other: a whole fill
cancels it, a part of the take-profit leaves the stop the rest (orders.md), the stop's
first fill cancels the take-profit. Cancelling either cancels both. The parent shows its
leg under ``legs`` in the answer to the POST and, asked ``nested=true``, to GET
/v2/orders/{id} and GET /v2/orders (legs then not listed on their own); the lookup by
client id and the trade updates show each order alone (``legs`` null).

The bracket and oto classes (alpaca-docs orders.md "Bracket Orders", "OTO Orders"): an
entry (market, limit, stop or stop_limit; day or gtc; whole shares; a stock; no extended
hours) with ``take_profit`` and ``stop_loss`` (a bracket) or one of them (an oto). Its legs,
on the other side for its quantity under client ids made here, are ``held`` and not matched
until it has completely filled; then the take-profit is ``new`` and the stop ``held`` until
reached, and they behave as an oco's two orders. A cancel of any order of the group cancels
its open ones (the held legs of an entry cancelled after a part fill too). Nested as an
oco's.

Traded volume, for the 1-minute bars of the market data API: as real bars count everyone's
trades, a minute's volume is the symbol's flow (``set_flow``: the rest of the market, so
much a minute from a minute on) plus what this engine executed in that minute. A minute
with no volume has no bar; the current minute's bar is answered while still open.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

OPEN = frozenset({"new", "accepted", "partially_filled", "pending_new", "held"})
OCO = "oco"
# Alpaca's bracket (both exits) and oto (one) classes: an entry and its exit legs.
NATIVE_CLASSES = frozenset({"bracket", "oto"})
ENTRY_TYPES = frozenset({"market", "limit", "stop", "stop_limit"})
OCO_TIME_IN_FORCE = frozenset({"day", "gtc"})
# A stop leg's stop at least this far beyond its base price: the take-profit's limit and
# the market (orders.md, "Threshold on stop price of stop-loss orders").
STOP_GAP = Decimal("0.01")
TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
MAX_CLIENT_ID = 128
_QTY = Decimal("1e-9")
MINUTE_MS = 60_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# The bar timeframes Alpaca names ("1Min", "15T", "1Hour", "1Day", ...); only one minute
# is served here, the others are refused as if invalid.
ONE_MINUTE = frozenset({"1Min", "1T"})
MAX_BARS = 10_000  # Alpaca's most per page
# A page of bars and the token of the next page (None: the last page). Aliases: in the
# class, ``list`` is Engine.list.
Bars = list[dict[str, Any]]
Group = list[str]  # Alpaca ids of an oco's or a bracket's orders, the parent first
Page = tuple[Bars, str | None]


class AlpacaError(Exception):
    """An error answer: HTTP ``status`` with Alpaca's body ``{"code", "message"}`` (no code
    where Alpaca gives none)."""

    def __init__(self, status: int, message: str, code: int | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.code is None else {"code": self.code}
        return {**out, "message": self.message, **self.extra}


def _invalid(message: str) -> AlpacaError:
    return AlpacaError(422, message, 40010001)


def _text(value: Decimal) -> str:
    value = value.normalize()
    return format(value.quantize(Decimal(1)) if value.as_tuple().exponent > 0  # type: ignore[operator]
                  else value, "f")


def _dec(body: dict[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        out = Decimal(str(value))  # strings, or JSON numbers (read exactly)
    except ArithmeticError:
        raise _invalid(f"invalid {name}") from None
    if not out.is_finite() or out <= 0:
        raise _invalid(f"{name} must be > 0")
    return out


class Engine:
    def __init__(self, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.prices: dict[str, Decimal] = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00"),
                                           "BTC/USD": Decimal("60000")}
        self.assets: dict[str, dict[str, Any]] = {
            "AAPL": _asset("AAPL", "us_equity", fractionable=True),
            "MSFT": _asset("MSFT", "us_equity", fractionable=True),
            "GME": _asset("GME", "us_equity", fractionable=False),
            "BTC/USD": _asset("BTC/USD", "crypto", fractionable=True),
        }
        self.buying_power = Decimal("1000000")
        self.orders: dict[str, dict[str, Any]] = {}  # Alpaca id -> order object
        self.by_client_id: dict[str, str] = {}
        self.created: Counter[str] = Counter()  # orders created per client_order_id
        self._fills: dict[str, Decimal] = {}  # Alpaca id -> notional filled so far
        self.hold_fills = False  # market orders wait (accepted) for ``fill`` or a price
        # Told every trade update (the trade_updates stream): the event and its data.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.groups: dict[str, list[str]] = {}  # Alpaca id of each oco order -> the oco's
        # Alpaca id of a bracket / oto entry and of each of its legs -> [entry, *legs]; the
        # legs not active yet (held until the entry has completely filled).
        self.brackets: dict[str, Group] = {}
        self.dormant: set[str] = set()
        self.triggered: set[str] = set()  # stops reached (then market or limit orders)
        self._ids = itertools.count(1)
        self._executions = itertools.count(1)
        # Symbol -> (from minute, volume a minute), ascending: the rest of the market.
        self.flows: dict[str, list[tuple[int, Decimal]]] = {}
        # Symbol -> minute (epoch ms) -> (quantity, executions) this engine filled in it.
        self.executed: dict[str, dict[int, tuple[Decimal, int]]] = defaultdict(dict)

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Alpaca's ns

    def now_ms(self) -> int:
        return _ms(self.clock())

    # -- requests ---------------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        return {"id": "00000000-0000-4000-8000-000000000001", "account_number": "PA0LOCAL",
                "status": "ACTIVE", "currency": "USD", "cash": _text(self.buying_power),
                "buying_power": _text(self.buying_power), "trading_blocked": False,
                "account_blocked": False, "transfers_blocked": False,
                "pattern_day_trader": False, "created_at": self.now()}

    def asset(self, symbol: str) -> dict[str, Any]:
        found = self.assets.get(symbol) or self.assets.get(symbol.replace("%2F", "/"))
        if found is None:
            raise AlpacaError(404, f"asset not found for {symbol}", 40410000)
        return found

    def quote(self, symbol: str) -> dict[str, Any]:
        """A latest quote as the market data API gives it: numbers, not strings, the bid
        and ask a cent either side of the price (a crypto pair's a dollar)."""
        price = self.prices.get(symbol)
        if price is None:
            raise AlpacaError(404, f"no quote for {symbol}")
        spread = Decimal("1") if "/" in symbol else Decimal("0.01")
        return {"t": self.now(), "bp": float(price - spread), "bs": 1,
                "ap": float(price + spread), "as": 1, "bx": "V", "ax": "V", "c": ["R"],
                "z": "C"}

    def place(self, body: dict[str, Any]) -> dict[str, Any]:
        order_class = body.get("order_class") or "simple"
        if order_class == OCO:
            return self._place_oco(body)
        if order_class in NATIVE_CLASSES:
            return self._place_bracket(body, str(order_class))
        if order_class != "simple":
            raise _invalid(f"order_class {order_class} is not served by the local Alpaca")
        kind, tif = body.get("type"), body.get("time_in_force")
        if kind not in TYPES or tif not in TIME_IN_FORCE:
            raise _invalid("invalid order type or time_in_force")
        symbol, side = self._symbol_and_side(body)
        qty, notional = _dec(body, "qty"), _dec(body, "notional")
        if (qty is None) == (notional is None):
            raise _invalid("qty or notional is required, not both")
        crypto = self.assets[symbol]["class"] == "crypto"
        fractional = notional is not None or (qty is not None and qty != qty.to_integral())
        if fractional and not crypto and (kind != "market" or tif != "day"):
            raise _invalid("fractional orders must be market orders with day time_in_force")
        if fractional and not self.assets[symbol]["fractionable"]:
            raise _invalid(f"asset {symbol} is not fractionable")
        limit, stop = _prices(body, kind)
        trail = _trail(body, kind, tif)
        cid = self._client_id(body)
        self._check_cost(symbol, side, qty, notional, limit)
        order = self._create(cid, symbol, side, kind, tif, qty, notional, limit, stop,
                             extended=bool(body.get("extended_hours", False)),
                             status="accepted" if kind == "market" and self.hold_fills
                             else "new", **trail)
        if kind == "trailing_stop":
            _follow(order, self.prices[symbol])
        self._tell("new", order)
        self._match(order)
        return dict(order)

    def _place_oco(self, body: dict[str, Any]) -> dict[str, Any]:
        """An oco: refused as Alpaca refuses one (422) without both exits, with another type
        than limit, another time in force than day or gtc, extended hours, a crypto pair,
        fractions, or a stop too close to its base price; else the take-profit parent and
        its stop leg, answered with the leg nested."""
        symbol, side = self._symbol_and_side(body)
        tif = body.get("time_in_force")
        if self.assets[symbol]["class"] == "crypto":
            raise _invalid("crypto orders support the simple order class only")
        if body.get("type") != "limit":
            raise _invalid("oco orders must be limit orders")
        if tif not in OCO_TIME_IN_FORCE:
            raise _invalid("oco orders take time_in_force day or gtc")
        if body.get("extended_hours"):
            raise _invalid("extended hours orders are not supported for oco orders")
        take_profit, stop_loss = body.get("take_profit"), body.get("stop_loss")
        profit = _dec(take_profit, "limit_price") if isinstance(take_profit, dict) else None
        if profit is None:
            raise _invalid("oco orders require take_profit.limit_price")
        stop = _dec(stop_loss, "stop_price") if isinstance(stop_loss, dict) else None
        if stop is None:
            raise _invalid("oco orders require stop_loss.stop_price")
        assert isinstance(stop_loss, dict)
        stop_limit = _dec(stop_loss, "limit_price")
        limit = _dec(body, "limit_price")
        if limit is not None and limit != profit:
            raise _invalid("limit_price must be the take_profit.limit_price of an oco order")
        qty = _whole_shares(body, OCO)
        _stop_gap(stop, side, [profit, self.prices[symbol]])
        cid = self._client_id(body)
        self._check_cost(symbol, side, qty, None, profit)
        parent = self._create(cid, symbol, side, "limit", tif, qty, None, profit, None,
                              order_class=OCO)
        leg = self._create(str(uuid.uuid4()), symbol, side,
                           "stop" if stop_limit is None else "stop_limit", tif, qty, None,
                           stop_limit, stop, order_class=OCO, status="held")
        self.groups[parent["id"]] = self.groups[leg["id"]] = [parent["id"], leg["id"]]
        self._tell("new", parent)
        self._tell("held", leg)
        self._match(parent)
        return self._nest(parent)

    def _place_bracket(self, body: dict[str, Any], order_class: str) -> dict[str, Any]:
        """A bracket (both exits) or oto (one): refused (422) as Alpaca refuses one (a
        crypto pair, an entry type or time in force it does not take, extended hours, a
        missing or extra exit, fractions, the take-profit not beyond the stop, a stop too
        close to its base price: the entry's limit and the market); else the entry and its
        legs on the other side for its quantity, held until it has completely filled
        (orders.md "Bracket Orders"), answered with the legs nested."""
        symbol, side = self._symbol_and_side(body)
        kind, tif = body.get("type"), body.get("time_in_force")
        if self.assets[symbol]["class"] == "crypto":
            raise _invalid("crypto orders support the simple order class only")
        if kind not in ENTRY_TYPES:
            raise _invalid(f"{order_class} orders take a market, limit, stop or stop_limit "
                           "entry")
        if tif not in OCO_TIME_IN_FORCE:
            raise _invalid(f"{order_class} orders take time_in_force day or gtc")
        if body.get("extended_hours"):
            raise _invalid(f"extended hours orders are not supported for {order_class} "
                           "orders")
        take_profit, stop_loss = body.get("take_profit"), body.get("stop_loss")
        profit = _dec(take_profit, "limit_price") if isinstance(take_profit, dict) else None
        stop = _dec(stop_loss, "stop_price") if isinstance(stop_loss, dict) else None
        stop_limit = _dec(stop_loss, "limit_price") if isinstance(stop_loss, dict) else None
        if order_class == "bracket" and profit is None:
            raise _invalid("bracket orders require take_profit.limit_price")
        if order_class == "bracket" and stop is None:
            raise _invalid("bracket orders require stop_loss.stop_price")
        if order_class == "oto" and (profit is None) == (stop is None):
            raise _invalid("oto orders require one of take_profit or stop_loss")
        qty = _whole_shares(body, order_class)
        limit, entry_stop = _prices(body, kind)
        exit_side = "sell" if side == "buy" else "buy"
        if profit is not None and stop is not None and (
                profit <= stop if side == "buy" else profit >= stop):
            word = "higher" if side == "buy" else "lower"
            raise _invalid(f"take_profit.limit_price must be {word} than "
                           "stop_loss.stop_price")
        if stop is not None:
            _stop_gap(stop, exit_side, [*([limit] if kind == "limit" and limit else []),
                                        self.prices[symbol]])
        cid = self._client_id(body)
        self._check_cost(symbol, side, qty, None, limit)
        entry = self._create(cid, symbol, side, str(kind), str(tif), qty, None, limit,
                             entry_stop, order_class=order_class,
                             status="accepted" if kind == "market" and self.hold_fills
                             else "new")
        legs = []
        if profit is not None:
            legs.append(self._create(str(uuid.uuid4()), symbol, exit_side, "limit", str(tif),
                                     qty, None, profit, None, order_class=order_class,
                                     status="held"))
        if stop is not None:
            legs.append(self._create(str(uuid.uuid4()), symbol, exit_side,
                                     "stop" if stop_limit is None else "stop_limit", str(tif),
                                     qty, None, stop_limit, stop, order_class=order_class,
                                     status="held"))
        group = [entry["id"], *(leg["id"] for leg in legs)]
        for oid in group:
            self.brackets[oid] = group
        self.dormant.update(group[1:])
        self._tell("new", entry)
        for leg in legs:
            self._tell("held", leg)
        self._match(entry)
        return self._nest(entry)

    def _symbol_and_side(self, body: dict[str, Any]) -> tuple[str, str]:
        symbol, side = body.get("symbol"), body.get("side")
        if side not in ("buy", "sell"):
            raise _invalid("invalid side")
        if not isinstance(symbol, str) or symbol not in self.assets or (
                not self.assets[symbol]["tradable"]):
            raise _invalid(f"asset {symbol} not found")
        return symbol, str(side)

    def _client_id(self, body: dict[str, Any]) -> str:
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(cid, str) or len(cid) > MAX_CLIENT_ID:
            raise _invalid("client_order_id must be no more than 128 characters")
        if cid in self.by_client_id:
            raise _invalid("client_order_id must be unique")
        return cid

    def _check_cost(self, symbol: str, side: str, qty: Decimal | None,
                    notional: Decimal | None, limit: Decimal | None) -> None:
        price = self.prices[symbol]
        cost = (qty * (limit or price)) if qty is not None else notional
        assert cost is not None
        if side == "buy" and cost > self.buying_power:
            raise AlpacaError(403, "insufficient buying power", 40310000,
                              buying_power=_text(self.buying_power), cost_basis=_text(cost))

    def _create(self, cid: str, symbol: str, side: str, kind: str, tif: str,
                qty: Decimal | None, notional: Decimal | None, limit: Decimal | None,
                stop: Decimal | None, *, extended: bool = False, order_class: str = "",
                status: str = "new", **trail: str) -> dict[str, Any]:
        now = self.now()
        oid = str(uuid.UUID(int=next(self._ids) | (4 << 76) | (8 << 60)))
        order = {
            "id": oid, "client_order_id": cid, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "expired_at": None, "expires_at": None,
            "canceled_at": None, "failed_at": None, "replaced_at": None,
            "replaced_by": None, "replaces": None, "asset_id": self.assets[symbol]["id"],
            "symbol": symbol, "asset_class": self.assets[symbol]["class"],
            "notional": None if notional is None else _text(notional),
            "qty": None if qty is None else _text(qty), "filled_qty": "0",
            "filled_avg_price": None, "order_class": order_class, "order_type": kind,
            "type": kind, "side": side, "time_in_force": tif,
            "limit_price": None if limit is None else _text(limit),
            "stop_price": None if stop is None else _text(stop),
            "status": status, "extended_hours": extended, "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None, **trail,
            "position_intent": "buy_to_open" if side == "buy" else "sell_to_open",
            "source": None, "subtag": None,
        }
        self.orders[oid] = order
        self.by_client_id[cid] = oid
        self.created[cid] += 1
        self._fills[oid] = Decimal(0)
        return order

    def _nest(self, order: dict[str, Any]) -> dict[str, Any]:
        """An order object with its legs (an oco's parent), as a nested answer shows it."""
        out = dict(order)
        group = self._group(order["id"])
        if group is not None and group[0] == order["id"]:
            out["legs"] = [dict(self.orders[oid]) for oid in group[1:]]
        return out

    def _group(self, order_id: str) -> Group | None:
        """The oco, or the bracket / oto, an order belongs to (its first order the one the
        others nest under)."""
        return self.groups.get(order_id) or self.brackets.get(order_id)

    def get(self, order_id: str, nested: bool = False) -> dict[str, Any]:
        _check_uuid(order_id)
        order = self.orders.get(order_id)
        if order is None:
            raise AlpacaError(404, "order not found", 40410000)
        return self._nest(order) if nested else dict(order)

    def list(self, status: str = "open", limit: int = 50, nested: bool = False,
             direction: str = "asc") -> list[dict[str, Any]]:
        """GET /v2/orders: open, closed or all orders, oldest first (``direction``
        ``desc``: newest first), at most ``limit``; ``nested``: the legs of an oco or a
        bracket under their parent, not on their own (and not at all when the parent is
        not of the status asked, as Alpaca's: alpaca-trade-api-js #87)."""
        if status not in ("open", "closed", "all"):
            raise _invalid("invalid status")
        orders = [*self.orders.values()]
        if direction == "desc":
            orders.reverse()
        chosen = [self._nest(o) if nested else dict(o) for o in orders
                  if status == "all" or (o["status"] in OPEN) == (status == "open")
                  if not nested or (self._group(o["id"]) or [o["id"]])[0] == o["id"]]
        return chosen[:max(1, min(limit, 500))]

    def get_by_client_id(self, client_order_id: str) -> dict[str, Any]:
        oid = self.by_client_id.get(client_order_id)
        if oid is None:
            raise AlpacaError(404, "order not found", 40410000)
        return dict(self.orders[oid])

    def cancel(self, order_id: str) -> None:
        _check_uuid(order_id)
        order = self.orders.get(order_id)
        if order is None:
            raise AlpacaError(404, "order not found", 40410000)
        if order["status"] not in OPEN:
            raise AlpacaError(422, "order status is not cancelable", 42210000)
        self._cancel(order)
        # An oco's other order goes with it (orders.md: "If any one of the orders is
        # canceled, any remaining open order in the group is canceled").
        for oid in self._group(order_id) or []:
            if self.orders[oid]["status"] in OPEN:
                self._cancel(self.orders[oid])

    def _cancel(self, order: dict[str, Any]) -> None:
        order["status"] = "canceled"
        order["canceled_at"] = order["updated_at"] = self.now()
        self._tell("canceled", order)

    def bars(self, symbol: str, timeframe: str | None, start: str | None, end: str | None,
             limit: str | None, page_token: str | None) -> Page:
        """One page of ``symbol``'s 1-minute bars as the historical bars endpoints give
        them (ascending, each starting at or after ``start`` and not after ``end``, the
        current one while still open), and the page token of the next page (None: none).
        Numbers as Decimal (the server writes them as JSON numbers, as Alpaca does).
        Defaults as Alpaca's: ``start`` the beginning of the current day (UTC here), ``end``
        now, ``limit`` 1000."""
        if timeframe is None or timeframe not in ONE_MINUTE:
            raise AlpacaError(422, f"invalid timeframe: {timeframe!r} (the local server "
                                   "serves 1Min only)", 42210000)
        now = self.now_ms()
        first = _minute_up(_stamp(start, "start") if start else now - now % 86_400_000)
        last = min(_stamp(end, "end") if end else now, now)
        count = 1000 if limit is None else _int_in(limit, "limit", 1, MAX_BARS)
        if page_token:
            first = max(first, _int_in(page_token, "page_token", 0, 2**63))
        # Only minutes with volume have bars: from the earliest flow or execution on.
        known = [m for m, _ in self.flows.get(symbol, [])] + list(self.executed[symbol])
        minute = max(first, min(known, default=last + 1))
        found: Bars = []
        while minute <= last:
            bar = self._bar(symbol, minute)
            if bar is not None:
                if len(found) == count:
                    return found, str(minute)
                found.append(bar)
            minute += MINUTE_MS
        return found, None

    def _bar(self, symbol: str, minute: int) -> dict[str, Any] | None:
        flow = next((v for m, v in reversed(self.flows.get(symbol, [])) if m <= minute),
                    Decimal(0))
        done, executions = self.executed[symbol].get(minute, (Decimal(0), 0))
        volume = flow + done
        if volume <= 0:
            return None
        price = self.prices.get(symbol, Decimal(0))
        stamp = datetime.datetime.fromtimestamp(minute / 1000, datetime.UTC)
        return {"t": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "o": price, "h": price,
                "l": price, "c": price, "v": volume, "n": executions + (flow > 0),
                "vw": price}

    # -- the market -------------------------------------------------------------------------

    def set_flow(self, symbol: str, per_minute: Decimal, since: int | None = None) -> None:
        """From the minute holding ``since`` (epoch ms; default now) on, the rest of the
        market trades ``per_minute`` of ``symbol`` a minute (0: no trades, no bars)."""
        at = (self.now_ms() if since is None else since) // MINUTE_MS * MINUTE_MS
        steps = [(m, v) for m, v in self.flows.get(symbol, []) if m != at]
        self.flows[symbol] = sorted([*steps, (at, per_minute)])

    def set_price(self, symbol: str, price: Decimal) -> None:
        self.prices[symbol] = price
        for order in list(self.orders.values()):
            if order["symbol"] == symbol and order["status"] in OPEN:
                self._match(order)

    def fill(self, client_order_id: str, qty: Decimal | None = None,
             price: Decimal | None = None) -> None:
        """Fill an open order (``qty``: part of it; all that is left when None) at ``price``
        (the current price when None), whatever its limit: a late or partial fill."""
        order = self.orders[self.by_client_id[client_order_id]]
        assert order["status"] in OPEN, order["status"]
        self._execute(order, qty, price or self.prices[order["symbol"]])

    def _match(self, order: dict[str, Any]) -> None:
        if order["id"] in self.dormant:
            return  # a bracket's leg, until its entry has completely filled
        price, side = self.prices[order["symbol"]], order["side"]
        kind = order["type"]
        if kind == "trailing_stop":
            _follow(order, price)
            if not _reached(side, price, Decimal(order["stop_price"])):
                return
            kind = "market"
        if kind in ("stop", "stop_limit"):
            stop = Decimal(order["stop_price"])
            if order["id"] not in self.triggered:
                if not (price >= stop if side == "buy" else price <= stop):
                    return
                self.triggered.add(order["id"])
                if order["status"] == "held":  # an oco's stop leg, working from now on
                    order["status"], order["updated_at"] = "new", self.now()
                    self._tell("new", order)
            kind = "market" if kind == "stop" else "limit"
        if kind == "market":
            if not self.hold_fills:
                self._execute(order, None, price)
            return
        limit = Decimal(order["limit_price"])
        if price <= limit if side == "buy" else price >= limit:
            self._execute(order, None, price)
        elif order["time_in_force"] in ("ioc", "fok"):
            order["status"], order["updated_at"] = "canceled", self.now()
            order["canceled_at"] = order["updated_at"]
            self._tell("canceled", order)

    def _execute(self, order: dict[str, Any], qty: Decimal | None, price: Decimal) -> None:
        filled = Decimal(order["filled_qty"])
        total = (Decimal(order["qty"]) if order["qty"] is not None
                 else (Decimal(order["notional"]) / price).quantize(_QTY))
        part = total - filled if qty is None else min(qty, total - filled)
        oid = order["id"]
        self._fills[oid] += part * price
        minute = self.now_ms() // MINUTE_MS * MINUTE_MS
        done, executions = self.executed[order["symbol"]].get(minute, (Decimal(0), 0))
        self.executed[order["symbol"]][minute] = (done + part, executions + 1)
        filled += part
        now = self.now()
        order["filled_qty"] = _text(filled)
        order["filled_avg_price"] = _text((self._fills[oid] / filled).quantize(Decimal("1e-6")))
        order["status"] = "filled" if filled >= total else "partially_filled"
        order["updated_at"] = now
        if order["status"] == "filled":
            order["filled_at"] = now
            if order["qty"] is None:
                order["qty"] = _text(filled)
        self._tell("fill" if order["status"] == "filled" else "partial_fill", order,
                   price=_text(price), qty=_text(part))
        if oid in self.groups:
            self._one_cancels_other(order, self.groups[oid])
        elif oid in self.brackets:
            entry, *legs = self.brackets[oid]
            if oid != entry:
                self._one_cancels_other(order, legs)
            elif order["status"] == "filled":
                self._activate(legs)

    def _activate(self, legs: Group) -> None:
        """A bracket's entry has completely filled: its legs work from now on, the
        take-profit ``new``, the stop still ``held`` until its stop is reached (as an
        oco's)."""
        for oid in legs:
            self.dormant.discard(oid)
            leg = self.orders[oid]
            if leg["status"] == "held" and leg["type"] == "limit":
                leg["status"], leg["updated_at"] = "new", self.now()
                self._tell("new", leg)
        for oid in legs:
            if self.orders[oid]["status"] in OPEN:
                self._match(self.orders[oid])

    def _one_cancels_other(self, order: dict[str, Any], group: Group) -> None:
        """After a fill of one exit order of an oco (or of a bracket's legs): a whole fill
        cancels the other; a part of the take-profit leaves the stop what is left of it
        (orders.md); the stop's first fill cancels the take-profit [unverified: Alpaca says
        only that a fill of one cancels the other]."""
        others = [self.orders[oid] for oid in group if oid != order["id"]]
        for other in others:
            if other["status"] not in OPEN:
                continue
            if order["status"] == "partially_filled" and order["type"] == "limit":
                left = Decimal(order["qty"]) - Decimal(order["filled_qty"])
                other["qty"], other["updated_at"] = _text(left), self.now()
            else:
                self._cancel(other)

    def _tell(self, event: str, order: dict[str, Any], **extra: str) -> None:
        """A trade update, as the stream's ``data``: the event, the order object as it is
        now, and for a fill its price and quantity."""
        data = {"event": event, "execution_id": str(uuid.UUID(
                    int=next(self._executions) | (4 << 76) | (8 << 60))),
                "order": dict(order), "timestamp": order["updated_at"], **extra}
        for listener in list(self.listeners):
            listener(data)


def _whole_shares(body: dict[str, Any], order_class: str) -> Decimal:
    qty = _dec(body, "qty")
    if qty is None or body.get("notional") is not None or qty != qty.to_integral():
        raise _invalid(f"{order_class} orders take a qty of whole shares")
    return qty


def _stop_gap(stop: Decimal, side: str, bases: list[Decimal]) -> None:
    """A stop-loss leg (of ``side``) must be a cent beyond its base price, the nearest of
    ``bases`` (orders.md, "Threshold on stop price of stop-loss orders")."""
    base = min(bases) if side == "sell" else max(bases)
    if (base - stop if side == "sell" else stop - base) < STOP_GAP:
        word = "below" if side == "sell" else "above"
        raise AlpacaError(422, f"stop_price must be at least {STOP_GAP} {word} the base "
                               f"price {_text(base)}", 42210000)


def _prices(body: dict[str, Any], kind: Any) -> tuple[Decimal | None, Decimal | None]:
    """An order's limit_price and stop_price, each required where its type has one."""
    limit, stop = _dec(body, "limit_price"), _dec(body, "stop_price")
    if kind in ("limit", "stop_limit") and limit is None:
        raise _invalid("limit_price is required")
    if kind in ("stop", "stop_limit") and stop is None:
        raise _invalid("stop_price is required")
    return limit, stop


def _trail(body: dict[str, Any], kind: Any, tif: Any) -> dict[str, str]:
    """A trailing stop's trail_price xor trail_percent, as its order object shows them;
    none on other types."""
    price, percent = _dec(body, "trail_price"), _dec(body, "trail_percent")
    if kind != "trailing_stop":
        if price is not None or percent is not None:
            raise _invalid("trail_price or trail_percent is for trailing_stop orders only")
        return {}
    if (price is None) == (percent is None):
        raise _invalid("trailing_stop needs either trail_price or trail_percent")
    if tif not in ("day", "gtc"):
        raise _invalid("trailing_stop orders take time_in_force day or gtc")
    if price is not None:
        return {"trail_price": _text(price)}
    assert percent is not None
    return {"trail_percent": _text(percent)}


def _follow(order: dict[str, Any], price: Decimal) -> None:
    """A trailing stop's hwm and stop_price after seeing ``price``: the hwm only improves
    (a sell's rises, a buy's falls), and the stop is made from it."""
    sell = order["side"] == "sell"
    hwm = None if order["hwm"] is None else Decimal(order["hwm"])
    if hwm is not None and (price <= hwm if sell else price >= hwm):
        return
    sign = -1 if sell else 1
    if order["trail_price"] is not None:
        stop = price + sign * Decimal(order["trail_price"])
    else:
        stop = price * (1 + sign * Decimal(order["trail_percent"]) / 100)
    order["hwm"], order["stop_price"] = _text(price), _text(stop)


def _reached(side: str, price: Decimal, stop: Decimal) -> bool:
    return price >= stop if side == "buy" else price <= stop


def _minute_up(ms: int) -> int:
    return -(-ms // MINUTE_MS) * MINUTE_MS


def _stamp(text: str, name: str) -> int:
    """RFC 3339 ("2026-12-04T16:58:00Z", an offset, a fraction) or a date, as epoch ms;
    anything else is refused as Alpaca does (422)."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AlpacaError(422, f"invalid {name}: {text!r}", 42210000) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return _ms(moment)


def _ms(moment: datetime.datetime) -> int:
    """Epoch ms in integers: a float's timestamp() * 1000 can land a millisecond short of
    a minute."""
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def _int_in(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise AlpacaError(422, f"invalid {name}: {text!r}", 42210000)
    return int(text)


def _asset(symbol: str, kind: str, *, fractionable: bool) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), "class": kind,
            "exchange": "CRYPTO" if kind == "crypto" else "NASDAQ", "symbol": symbol,
            "name": symbol, "status": "active", "tradable": True, "marginable": kind != "crypto",
            "shortable": kind != "crypto", "easy_to_borrow": kind != "crypto",
            "fractionable": fractionable}


def _check_uuid(order_id: str) -> None:
    try:
        uuid.UUID(order_id)
    except ValueError:
        raise AlpacaError(422, "order_id is missing", 40010001) from None
