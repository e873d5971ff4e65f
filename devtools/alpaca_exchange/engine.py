"""The local Alpaca's orders and matching model: a market order fills at the symbol's
current price, a limit order rests until the price reaches it, a stop (stop-limit) order
waits for the price to reach its stop and is then a market (limit) order; a trailing stop
(alpaca-docs orders.md) keeps ``hwm``, the best price since submission (a sell's highest, a
buy's lowest), and its stop_price hwm -/+ trail_price or hwm * (1 -/+ trail_percent / 100),
and is a market order once the price reaches that stop. Orders are
Alpaca's order objects (decimals as strings, unset values null, RFC 3339 times), kept by
Alpaca's id and by client_order_id, which stays taken for good (a cancelled order's too).

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

OPEN = frozenset({"new", "accepted", "partially_filled", "pending_new"})
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
        symbol, side = body.get("symbol"), body.get("side")
        kind, tif = body.get("type"), body.get("time_in_force")
        if kind not in TYPES or tif not in TIME_IN_FORCE:
            raise _invalid("invalid order type or time_in_force")
        if side not in ("buy", "sell"):
            raise _invalid("invalid side")
        if symbol not in self.assets or not self.assets[symbol]["tradable"]:
            raise _invalid(f"asset {symbol} not found")
        qty, notional = _dec(body, "qty"), _dec(body, "notional")
        if (qty is None) == (notional is None):
            raise _invalid("qty or notional is required, not both")
        crypto = self.assets[symbol]["class"] == "crypto"
        fractional = notional is not None or (qty is not None and qty != qty.to_integral())
        if fractional and not crypto and (kind != "market" or tif != "day"):
            raise _invalid("fractional orders must be market orders with day time_in_force")
        if fractional and not self.assets[symbol]["fractionable"]:
            raise _invalid(f"asset {symbol} is not fractionable")
        limit, stop = _dec(body, "limit_price"), _dec(body, "stop_price")
        if kind in ("limit", "stop_limit") and limit is None:
            raise _invalid("limit_price is required")
        if kind in ("stop", "stop_limit") and stop is None:
            raise _invalid("stop_price is required")
        trail = _trail(body, kind, tif)
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(cid, str) or len(cid) > MAX_CLIENT_ID:
            raise _invalid("client_order_id must be no more than 128 characters")
        if cid in self.by_client_id:
            raise _invalid("client_order_id must be unique")
        price = self.prices[symbol]
        cost = (qty * (limit or price)) if qty is not None else notional
        assert cost is not None
        if side == "buy" and cost > self.buying_power:
            raise AlpacaError(403, "insufficient buying power", 40310000,
                              buying_power=_text(self.buying_power), cost_basis=_text(cost))
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
            "filled_avg_price": None, "order_class": "", "order_type": kind, "type": kind,
            "side": side, "time_in_force": tif,
            "limit_price": None if limit is None else _text(limit),
            "stop_price": None if stop is None else _text(stop),
            "status": "accepted" if kind == "market" and self.hold_fills else "new",
            "extended_hours": bool(body.get("extended_hours", False)), "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None, **trail,
            "position_intent": "buy_to_open" if side == "buy" else "sell_to_open",
            "source": None, "subtag": None,
        }
        self.orders[oid] = order
        self.by_client_id[cid] = oid
        self.created[cid] += 1
        self._fills[oid] = Decimal(0)
        if kind == "trailing_stop":
            _follow(order, price)
        self._tell("new", order)
        self._match(order)
        return dict(order)

    def get(self, order_id: str) -> dict[str, Any]:
        _check_uuid(order_id)
        order = self.orders.get(order_id)
        if order is None:
            raise AlpacaError(404, "order not found", 40410000)
        return dict(order)

    def list(self, status: str = "open", limit: int = 50) -> list[dict[str, Any]]:
        """GET /v2/orders: open, closed or all orders, oldest first, at most ``limit``."""
        if status not in ("open", "closed", "all"):
            raise _invalid("invalid status")
        chosen = [dict(o) for o in self.orders.values()
                  if status == "all" or (o["status"] in OPEN) == (status == "open")]
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
        price, side = self.prices[order["symbol"]], order["side"]
        kind = order["type"]
        if kind == "trailing_stop":
            _follow(order, price)
            if not _reached(side, price, Decimal(order["stop_price"])):
                return
            kind = "market"
        if kind in ("stop", "stop_limit"):
            stop = Decimal(order["stop_price"])
            if not (price >= stop if side == "buy" else price <= stop):
                return
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

    def _tell(self, event: str, order: dict[str, Any], **extra: str) -> None:
        """A trade update, as the stream's ``data``: the event, the order object as it is
        now, and for a fill its price and quantity."""
        data = {"event": event, "execution_id": str(uuid.UUID(
                    int=next(self._executions) | (4 << 76) | (8 << 60))),
                "order": dict(order), "timestamp": order["updated_at"], **extra}
        for listener in list(self.listeners):
            listener(data)


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
