"""The local exchange over HTTP and WebSocket, speaking Binance Spot's wire API.

REST under ``/api/v3`` (signatures, timestamps, API keys, weights, order counts, 429/418
with Retry-After, Binance's error bodies) and the WebSocket API at ``/ws-api/v3`` for the
user data stream (``userDataStream.subscribe.signature``, then ``{subscriptionId, event}``
frames), which is what python-binance's ``BinanceSocketManager.user_socket`` uses.

Market streams: ``/stream?streams=a@trade/b@trade`` (combined: ``{"stream", "data"}``) and
``/ws/a@trade`` (raw), ``SUBSCRIBE`` / ``UNSUBSCRIBE`` on either. A trade event of a symbol
goes to every connection with its stream whenever ``set_price`` moves it; as at Binance,
nothing on connect (a trade stream has no snapshot) and no other stream than ``@trade``.

Switches for tests: ``inject`` answers chosen requests with an error (before or after the
exchange acted on them: a 5xx after storing the order is an unknown outcome), ``after``
changes the exchange right after it answered a request (an order that trades between two
reads), ``late_executions`` answers new orders -1007 and executes them seconds later,
``weight_limit`` makes a burst over the cap get 429 (and, past ``ban_after`` ignored
429s, 418), ``stream_enabled`` and ``drop_streams`` take the user data stream down;
``market_enabled`` (a handshake refused 503), ``market_sending = False`` (a connection
that stays open and says nothing: no trades, no pongs) and ``drop_market_streams`` take
the market streams down; ``market_streams`` and ``market_connects`` tell what is and was
connected, ``price_polls`` the ticker/price requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import WSMsgType, web

from ..http_server import send_queued, serve
from . import signing
from .engine import ApiError, Exchange, fmt

MAX_RECV_WINDOW = 60_000
Handler = Callable[[dict[str, str]], Any]


class Fault(msgspec.Struct, kw_only=True):
    """An answer forced on the next ``times`` requests to ``method path``."""

    method: str
    path: str
    status: int
    code: int = -1000
    msg: str = "An unknown error occurred while processing the request."
    retry_after: int | None = None
    after: bool = False  # let the exchange act first (an order is stored), then answer this
    times: int = 1


class Hook(msgspec.Struct, kw_only=True):
    """Something done to the exchange right after it answered the next ``times`` requests
    to ``method path`` (with their parameters): an order that trades between a client's
    two reads, say."""

    method: str
    path: str
    action: Callable[[dict[str, str]], None]
    times: int = 1


class LateExecution(msgspec.Struct, kw_only=True):
    """New orders answered -1007 "execution status unknown" and executed ``delay_s`` later
    (Binance's backend may still execute an order after its gateway gave up waiting)."""

    rng: random.Random
    fraction: float
    delay_s: float
    status: int


class Received(msgspec.Struct, kw_only=True):
    """One request as it reached the server (for tests that check the wire)."""

    method: str
    path: str
    query: str  # raw, as sent
    body: str  # raw, as sent
    params: dict[str, str]
    headers: dict[str, str]


class BinanceExchangeServer:
    def __init__(self, api_key: str = "local-api-key", api_secret: str = "local-api-secret",
                 *, weight_limit: int = 6_000, orders_10s_limit: int = 100,
                 orders_1d_limit: int = 200_000, ban_after: int = 10, ban_s: int = 120,
                 weight_window_ms: int = 60_000,
                 clock: Callable[[], int] | None = None) -> None:
        self.exchange = Exchange(clock)
        self.keys = {api_key: api_secret}
        self.weight_limit = weight_limit
        self.orders_10s_limit = orders_10s_limit
        self.orders_1d_limit = orders_1d_limit
        self.ban_after = ban_after
        self.ban_s = ban_s
        # Binance's REQUEST_WEIGHT window is one minute; tests shorten it to see a 429's
        # Retry-After run out in seconds.
        self.weight_window_ms = weight_window_ms
        self.faults: list[Fault] = []
        self.hooks: list[Hook] = []
        self.log: list[Received] = []
        self.received: Counter[str] = Counter()  # POST order requests per newClientOrderId
        # POST orderList/oco, /oto, /otoco per listClientOrderId
        self.lists_received: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()  # HTTP statuses answered
        self.stream_enabled = True
        # The answer to a WebSocket handshake while the stream is off: 503, or 404 as from
        # a server without Binance's WebSocket API.
        self.stream_refused_status = 503
        self._chaos: tuple[random.Random, float, float] | None = None
        self._late: LateExecution | None = None
        self.late_executed: Counter[str] = Counter()  # late orders stored, per client id
        self.late_refused: dict[str, str] = {}  # client id -> why its late execution failed
        self._late_handles: set[asyncio.TimerHandle] = set()
        self._weight: dict[int, int] = {}  # minute -> weight used
        self._orders: dict[tuple[str, int], int] = {}  # ("10s"|"1d", bucket) -> count
        self._ignored_429 = 0
        self.longest_429_run = 0  # the most calls refused 429 in a row (a ban resets it)
        self.longest_429_paths: list[str] = []  # the endpoints of that run, in order
        self._run_paths: list[str] = []
        self._banned_until = 0
        self._subscriptions = itertools.count(0)
        self._sockets: set[web.WebSocketResponse] = set()
        self.market_enabled = True
        self.market_sending = True
        # Each open market stream connection -> the streams it has ("btcusdt@trade").
        self._market: dict[web.WebSocketResponse, tuple[bool, set[str],
                                                        asyncio.Queue[dict[str, Any]]]] = {}
        self.market_connects: list[frozenset[str]] = []  # each connection's first streams
        self._trade_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None  # the one serving (start)
        self._runner: web.AppRunner | None = None
        self.port = 0
        routes: list[tuple[str, str, Handler, bool, Callable[[dict[str, str]], int]]] = [
            ("GET", "/api/v3/ping", lambda p: {}, False, lambda p: 1),
            ("GET", "/api/v3/time", lambda p: {"serverTime": self.exchange.now()}, False,
             lambda p: 1),
            ("GET", "/api/v3/exchangeInfo", self.exchange.exchange_info, False, lambda p: 20),
            ("GET", "/api/v3/ticker/price", lambda p: self.exchange.ticker(p.get("symbol")),
             False, lambda p: 2 if "symbol" in p else 4),
            ("GET", "/api/v3/klines", self.exchange.klines, False, lambda p: 2),
            ("POST", "/api/v3/order", self.exchange.place, True, lambda p: 1),
            ("DELETE", "/api/v3/order", self.exchange.cancel, True, lambda p: 1),
            ("GET", "/api/v3/order", self.exchange.query, True, lambda p: 4),
            ("GET", "/api/v3/openOrders", lambda p: self.exchange.open_orders(p.get("symbol")),
             True, lambda p: 6 if "symbol" in p else 80),
            ("DELETE", "/api/v3/openOrders",
             lambda p: self.exchange.cancel_open(p.get("symbol")), True, lambda p: 1),
            ("GET", "/api/v3/account", self.exchange.account, True, lambda p: 20),
            ("GET", "/api/v3/myTrades", self.exchange.my_trades, True,
             lambda p: 5 if "orderId" in p else 20),
            ("POST", "/api/v3/orderList/oco", self.exchange.place_oco, True, lambda p: 1),
            ("POST", "/api/v3/orderList/oto", self.exchange.place_oto, True, lambda p: 1),
            ("POST", "/api/v3/orderList/otoco", self.exchange.place_otoco, True, lambda p: 1),
            ("GET", "/api/v3/orderList", self.exchange.query_list, True, lambda p: 4),
            ("DELETE", "/api/v3/orderList", self.exchange.cancel_list, True, lambda p: 1),
        ]
        self.app = web.Application()
        for method, path, handler, signed, weight in routes:
            self.app.router.add_route(method, path, self._endpoint(method, path, handler,
                                                                   signed, weight))
        self.app.router.add_get("/ws-api/v3", self._ws_api)
        self.app.router.add_get("/stream", self._market_stream)
        self.app.router.add_get("/ws/{names:.+}", self._market_stream)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner, self.port = await serve(self.app, host, port)

    async def close(self) -> None:
        for handle in self._late_handles:
            handle.cancel()
        self._late_handles.clear()
        await self.drop_streams()
        await self.drop_market_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- switches for tests -----------------------------------------------------------------

    def inject(self, method: str, path: str, status: int, **kwargs: Any) -> Fault:
        fault = Fault(method=method, path=path, status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def after(self, method: str, path: str, action: Callable[[dict[str, str]], None],
              times: int = 1) -> Hook:
        """Run ``action(params)`` once the exchange has answered each of the next ``times``
        requests to ``method path`` (its answer is the state before the action)."""
        hook = Hook(method=method, path=path, action=action, times=times)
        self.hooks.append(hook)
        return hook

    def random_faults(self, before: float, after: float, seed: int = 1) -> None:
        """Answer that share of new orders with a 5xx: ``before`` without acting on them,
        ``after`` once they are stored (the sender cannot tell which)."""
        self._chaos = (random.Random(seed), before, after)

    def late_executions(self, fraction: float, delay_s: float, *, seed: int = 1,
                        status: int = 408) -> None:
        """Answer that share of new orders (POST /api/v3/order, checked and signed) with
        -1007 "Timeout waiting for response from backend server. Send status unknown;
        execution status unknown." without acting on them, then execute each ``delay_s``
        seconds later as if it had just arrived: it may fill, rest, or be refused then (a
        duplicate of an order the client sent again meanwhile; ``late_refused``). The HTTP
        status Binance gives -1007 is not documented; 408 here [unverified]. ``fraction``
        0 switches it off; timers still due when the server closes are dropped."""
        self._late = (None if fraction <= 0 else
                      LateExecution(rng=random.Random(seed), fraction=fraction,
                                    delay_s=delay_s, status=status))

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Move the last price (engine.Exchange.set_price) as a trade of others at that
        price: its trade event goes to the market streams of the symbol."""
        self.exchange.set_price(symbol, Decimal(price))
        self._publish_trade(symbol, Decimal(price))

    @property
    def market_streams(self) -> list[frozenset[str]]:
        """The streams of each open market stream connection."""
        return [frozenset(names) for _, names, _ in self._market.values()]

    def price_polls(self) -> int:
        """How many GET /api/v3/ticker/price requests came (of one symbol or all)."""
        return sum(1 for r in self.log if r.path == "/api/v3/ticker/price")

    async def drop_market_streams(self) -> None:
        """Close every market stream connection (as Binance does after 24 h)."""
        for ws in list(self._market):
            await ws.close()

    def set_volume(self, symbol: str, per_second: Decimal | str,
                   since: int | None = None) -> None:
        """Others trade ``per_second`` of ``symbol`` every second from ``since`` (the
        exchange's now when None) on; its klines count it (engine.Exchange.set_volume)."""
        self.exchange.set_volume(symbol, Decimal(per_second), since)

    def orders_for(self, client_order_id: str) -> int:
        """How many orders the exchange created under this newClientOrderId."""
        return self.exchange.created[client_order_id]

    async def drop_streams(self) -> None:
        """Close every WebSocket connection (the user data stream goes down)."""
        for ws in list(self._sockets):
            await ws.close()

    def lists_for(self, list_client_order_id: str) -> int:
        """How many order lists the exchange created under this listClientOrderId."""
        return self.exchange.lists_created[list_client_order_id]

    def orders_sent(self) -> list[Received]:
        return [r for r in self.log if r.method == "POST" and r.path == "/api/v3/order"]

    # -- REST -------------------------------------------------------------------------------

    def _endpoint(self, method: str, path: str, handler: Handler, signed: bool,
                  weight: Callable[[dict[str, str]], int]
                  ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            query = request.rel_url.raw_query_string
            body = await request.text() if request.can_read_body else ""
            params = dict(parse_qsl(body, keep_blank_values=True))
            params.update(parse_qsl(query, keep_blank_values=True))  # the query string wins
            self.log.append(Received(method=method, path=path, query=query, body=body,
                                     params=params, headers=dict(request.headers)))
            headers: dict[str, str] = {}
            try:
                self._charge(weight(params), f"{method} {path}")
                fault = self._fault(method, path)
                if fault is not None and not fault.after:
                    raise ApiError(fault.code, fault.msg, fault.status, fault.retry_after)
                if signed:
                    self._authenticate(request, query, body, params)
                if method == "POST" and path == "/api/v3/order":
                    self.received[params.get("newClientOrderId", "")] += 1
                if method == "POST" and path.startswith("/api/v3/orderList/"):
                    self.lists_received[params.get("listClientOrderId", "")] += 1
                if method == "POST":
                    self._check_order_count()
                if method == "POST" and path == "/api/v3/order":
                    self._maybe_late(params)
                result = handler(params)
                if method == "POST":
                    headers.update(self._count_order())
                self._run_hooks(method, path, params)
                if fault is not None:
                    raise ApiError(fault.code, fault.msg, fault.status, fault.retry_after)
                return self._reply(200, result, headers)
            except ApiError as exc:
                if exc.retry_after is not None:
                    headers["Retry-After"] = str(exc.retry_after)
                return self._reply(exc.status, {"code": exc.code, "msg": exc.msg}, headers)
        return serve

    def _reply(self, status: int, body: Any, headers: dict[str, str]) -> web.Response:
        used = str(self._weight.get(self._minute(), 0))
        headers["X-MBX-USED-WEIGHT-1M"] = used
        headers["X-MBX-USED-WEIGHT"] = used
        self.statuses[status] += 1
        return web.Response(status=status, text=json.dumps(body), headers=headers,
                            content_type="application/json")

    def _fault(self, method: str, path: str) -> Fault | None:
        if self._chaos is not None and method == "POST" and path == "/api/v3/order":
            rng, before, after = self._chaos
            roll = rng.random()
            if roll < before + after:
                return Fault(method=method, path=path, status=503, after=roll >= before)
        for fault in self.faults:
            if fault.method == method and fault.path == path and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _maybe_late(self, params: dict[str, str]) -> None:
        late = self._late
        if late is None or late.rng.random() >= late.fraction:
            return
        self.exchange.validate(params)  # a refusal is answered as such, at once
        handle = asyncio.get_running_loop().call_later(late.delay_s, self._execute_late,
                                                       dict(params))
        self._late_handles.add(handle)
        raise ApiError(-1007, "Timeout waiting for response from backend server. Send status "
                              "unknown; execution status unknown.", late.status)

    def _execute_late(self, params: dict[str, str]) -> None:
        cid = params.get("newClientOrderId", "")
        try:
            self.exchange.place(params)
        except ApiError as exc:
            self.late_refused[cid] = f"{exc.code}: {exc.msg}"
        else:
            self.late_executed[cid] += 1

    def _run_hooks(self, method: str, path: str, params: dict[str, str]) -> None:
        for hook in self.hooks:  # the first one that applies, as for faults
            if hook.method == method and hook.path == path and hook.times > 0:
                hook.times -= 1
                hook.action(params)
                return

    def _minute(self) -> int:
        return self.exchange.now() // self.weight_window_ms

    def _charge(self, weight: int, what: str = "") -> None:
        now = self.exchange.now()
        if now < self._banned_until:
            raise ApiError(-1003, f"Way too much request weight used; IP banned until "
                                  f"{self._banned_until}. Please use WebSocket Streams for live "
                                  "updates to avoid bans.", 418,
                           retry_after=max(1, -(-(self._banned_until - now) // 1000)))
        minute = self._minute()
        used = self._weight.get(minute, 0) + weight
        self._weight = {minute: used}
        if used > self.weight_limit:
            self._ignored_429 += 1
            self._run_paths.append(what)
            if self._ignored_429 > self.longest_429_run:
                self.longest_429_run = self._ignored_429
                self.longest_429_paths = list(self._run_paths)
            if self._ignored_429 > self.ban_after:
                self._banned_until = now + self.ban_s * 1000
                self._ignored_429 = 0
                self._run_paths = []
            raise ApiError(-1003, f"Too much request weight used; current limit is "
                                  f"{self.weight_limit} request weight per 1 MINUTE. Please use "
                                  "WebSocket Streams for live updates to avoid polling the API.",
                           429, retry_after=max(1, -(-(self.weight_window_ms
                                                       - now % self.weight_window_ms) // 1000)))
        self._ignored_429 = 0
        self._run_paths = []

    def _check_order_count(self) -> None:
        now = self.exchange.now()
        b10, b1d = now // 10_000, now // 86_400_000
        c10, c1d = self._orders.get(("10s", b10), 0), self._orders.get(("1d", b1d), 0)
        if c10 >= self.orders_10s_limit:
            raise ApiError(-1015, f"Too many new orders; current limit is "
                                  f"{self.orders_10s_limit} orders per 10 SECOND.", 429,
                           retry_after=max(1, 10 - (now // 1000) % 10))
        if c1d >= self.orders_1d_limit:
            raise ApiError(-1015, f"Too many new orders; current limit is "
                                  f"{self.orders_1d_limit} orders per 1 DAY.", 429,
                           retry_after=86_400 - (now // 1000) % 86_400)

    def _count_order(self) -> dict[str, str]:
        """Count an accepted order; its X-MBX-ORDER-COUNT headers."""
        now = self.exchange.now()
        b10, b1d = now // 10_000, now // 86_400_000
        c10, c1d = self._orders.get(("10s", b10), 0) + 1, self._orders.get(("1d", b1d), 0) + 1
        self._orders = {("10s", b10): c10, ("1d", b1d): c1d}
        return {"X-MBX-ORDER-COUNT-10S": str(c10), "X-MBX-ORDER-COUNT-1D": str(c1d)}

    def _authenticate(self, request: web.Request, query: str, body: str,
                      params: dict[str, str]) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        secret = self.keys.get(key)
        if secret is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        self._check_time(params)
        payload, signature = signing.rest_payload(query, body)
        if not signature:
            raise ApiError(-1102, "Mandatory parameter 'signature' was not sent, was "
                                  "empty/null, or malformed.")
        if not signing.verify(secret, payload, signature):
            raise ApiError(-1022, "Signature for this request is not valid.")

    def _check_time(self, params: dict[str, str]) -> None:
        try:
            timestamp = int(params["timestamp"])
            window = float(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            raise ApiError(-1102, "Mandatory parameter 'timestamp' was not sent, was "
                                  "empty/null, or malformed.") from None
        if window > MAX_RECV_WINDOW:
            raise ApiError(-1131, "recvWindow must be less than 60000")
        now = self.exchange.now()
        if timestamp >= now + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the "
                                  "server's time.")
        if now - timestamp > window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # -- market streams ---------------------------------------------------------------------

    async def _market_stream(self, request: web.Request) -> web.StreamResponse:
        if not self.market_enabled:
            return web.Response(status=503, text="market streams refused "
                                                 "(market_enabled = False)")
        combined = request.path == "/stream"
        raw = request.query.get("streams", "") if combined else request.match_info["names"]
        names = {n for n in raw.split("/") if n}
        # Pongs by hand: a stalled connection (market_sending = False) answers none.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._market[ws] = (combined, names, out)
        self.market_connects.append(frozenset(names))
        writer = asyncio.create_task(send_queued(ws, out))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.PING:
                    if self.market_sending:
                        await ws.pong(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    out.put_nowait(self._market_call(json.loads(msg.data), names))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._market.pop(ws, None)
        return ws

    @staticmethod
    def _market_call(req: dict[str, Any], names: set[str]) -> dict[str, Any]:
        method, params = req.get("method"), req.get("params") or []
        if method == "SUBSCRIBE":
            names.update(str(p) for p in params)
        elif method == "UNSUBSCRIBE":
            names.difference_update(str(p) for p in params)
        elif method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(names), "id": req.get("id")}
        else:
            return {"error": {"code": 2, "msg": "Invalid request: unknown method"},
                    "id": req.get("id")}
        return {"result": None, "id": req.get("id")}

    def _publish_trade(self, symbol: str, price: Decimal) -> None:
        if not self.market_sending:
            return
        name = f"{symbol.lower()}@trade"
        now = self.exchange.now()
        data = {"e": "trade", "E": now, "s": symbol, "t": next(self._trade_ids),
                "p": fmt(price), "q": "1.00000000", "T": now, "m": False, "M": True}
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for combined, names, out in list(self._market.values()):
            if name in names:
                message = {"stream": name, "data": data} if combined else data
                if self._loop is None or here is self._loop:
                    out.put_nowait(message)
                else:  # a test's thread, the server in its own (tests/fakes/threaded.py)
                    self._loop.call_soon_threadsafe(out.put_nowait, message)

    # -- WebSocket API (user data stream) ---------------------------------------------------

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        if not self.stream_enabled:
            return web.Response(status=self.stream_refused_status,
                                text="user data stream refused (stream_enabled = False)")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        subscriptions: dict[int, Callable[[dict[str, Any]], None]] = {}
        writer = asyncio.create_task(send_queued(ws, out))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                out.put_nowait(self._ws_call(json.loads(msg.data), out, subscriptions))
        finally:
            for listener in subscriptions.values():
                with contextlib.suppress(ValueError):
                    self.exchange.listeners.remove(listener)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._sockets.discard(ws)
        return ws

    def _ws_call(self, req: dict[str, Any], out: asyncio.Queue[dict[str, Any]],
                 subscriptions: dict[int, Callable[[dict[str, Any]], None]]) -> dict[str, Any]:
        rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}
        try:
            if method == "userDataStream.subscribe.signature":
                self._ws_authenticate(params)
                sub = next(self._subscriptions)

                def listener(event: dict[str, Any], sub: int = sub) -> None:
                    if self.stream_enabled:
                        out.put_nowait({"subscriptionId": sub, "event": event})
                subscriptions[sub] = listener
                self.exchange.listeners.append(listener)
                result: Any = {"subscriptionId": sub}
            elif method == "userDataStream.unsubscribe":
                found = subscriptions.pop(int(params.get("subscriptionId", -1)), None)
                if found is not None:
                    self.exchange.listeners.remove(found)
                result = {}
            elif method == "ping":
                result = {}
            elif method == "time":
                result = {"serverTime": self.exchange.now()}
            else:
                raise ApiError(-1020, "This operation is not supported.")
            return {"id": rid, "status": 200, "result": result}
        except ApiError as exc:
            return {"id": rid, "status": exc.status, "error": {"code": exc.code, "msg": exc.msg}}

    def _ws_authenticate(self, params: dict[str, Any]) -> None:
        secret = self.keys.get(str(params.get("apiKey", "")))
        if secret is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        self._check_time({k: str(v) for k, v in params.items()})
        signature = str(params.get("signature", ""))
        if not signing.verify(secret, signing.ws_payload(params), signature):
            raise ApiError(-1022, "Signature for this request is not valid.")
