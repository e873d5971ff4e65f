"""The local Alpaca over HTTP: the trading API v2 paths the adapter uses, with Alpaca's
headers and bodies.

- Auth: ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY``; none given: 401
  ``{"message":"unauthorized."}``, wrong ones: 403 ``{"message":"forbidden."}`` (no code).
- 200 (not 201) with the order on POST /v2/orders, 204 without a body on DELETE, 404 for an
  unknown order, 422 ``{"code":40010001,"message":"client_order_id must be unique"}`` on a
  reused client id, 422 on the cancel of a final order.
- The oco order class (engine.py): its stop leg nested under ``legs`` in the POST's answer
  and with ``nested=true`` on GET /v2/orders/{id} and GET /v2/orders; 422 for an oco
  Alpaca refuses (no take_profit or stop_loss, not limit, crypto, ...).
- The bracket and oto classes (engine.py): the entry's legs nested likewise, held until it
  has completely filled; 422 where Alpaca refuses one.
- The market data API's latest quotes and 1-minute bars (GET /v2/stocks/{symbol}/bars,
  /v1beta3/crypto/us/bars: numbers, not strings; 422 ``{"code":42210000,...}`` for a
  timeframe other than 1Min, an unreadable start, end, limit or page_token).
- Every answer carries X-Request-ID and X-Ratelimit-Limit/-Remaining/-Reset (epoch s); a
  request over ``rate_limit`` in the minute gets 429.

The market data streams (market_data.py): quotes at ``/v2/iex`` (``sip``,
``delayed_sip``) and ``/v1beta3/crypto/us``, each price set by ``set_price`` sent to the
connections subscribed to it.

The trade_updates stream at ``/stream`` (a WebSocket): ``{"action": "authenticate",
"data": {"key_id", "secret_key"}}`` (or the older ``{"action": "auth", "key", "secret"}``)
answered ``authorization`` ``authorized`` or ``unauthorized`` (then the connection is
closed), ``{"action": "listen", "data": {"streams": [...]}}`` answered ``listening``, then
every trade update of the account as it happens (text frames). Switches: ``stream_enabled``
(False: handshakes refused with 503), ``drop_streams`` (close every connection),
``stream_keys`` (other credentials than REST's, for a failed stream auth).

Switches for tests: ``random_faults`` answers a share of new orders with a 500, before or
after storing them; ``inject`` answers chosen requests with an error, before or after the
engine acted on them (a 5xx after storing the order is an unknown outcome); ``drop``
closes the connection without an answer, before or after acting; ``engine.hold_fills``
leaves market orders accepted until a later ``engine.fill`` or price (a late fill).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from ..http_server import send_queued, serve
from .engine import AlpacaError, Engine, Page
from .market_data import MarketDataStreams

Handler = Callable[[web.Request, Any], Any]
_LATEST_QUOTES = ("/v2/stocks/{symbol}/quotes/latest", "/v1beta3/crypto/us/latest/quotes")
# JSON numbers are read exactly (Alpaca takes them as well as strings).
_decoder = msgspec.json.Decoder(float_hook=Decimal)


class Fault(msgspec.Struct, kw_only=True):
    """An answer forced on the next ``times`` requests to ``method path`` (the route's
    path, e.g. ``/v2/orders``): HTTP ``status`` with Alpaca's body, or no answer at all
    (``drop``: the connection is closed). ``after``: the engine acts first."""

    method: str
    path: str
    status: int = 500
    message: str = "internal server error"
    code: int | None = None
    drop: bool = False
    after: bool = False
    times: int = 1


class Received(msgspec.Struct, kw_only=True):
    """One request as it reached the server (for tests that check the wire)."""

    method: str
    path: str  # the route's path
    query: dict[str, str]
    body: Any  # the JSON body, decoded (numbers as Decimal); None without one
    headers: dict[str, str]


class AlpacaExchangeServer:
    def __init__(self, key_id: str = "local-key-id", secret: str = "local-secret-key", *,
                 rate_limit: int = 200, clock: Callable[[], float] = time.time) -> None:
        self.engine = Engine()
        self.keys = {key_id: secret}
        self.rate_limit = rate_limit
        self.clock = clock
        self.faults: list[Fault] = []
        self.log: list[Received] = []
        self.received: Counter[str] = Counter()  # POST /v2/orders per client_order_id
        self.statuses: Counter[int] = Counter()
        self._chaos: tuple[random.Random, float, float] | None = None
        self.stream_enabled = True
        self.stream_keys: dict[str, str] | None = None  # None: the REST ones
        self._sockets: set[web.WebSocketResponse] = set()
        self._minute: tuple[int, int] = (0, 0)  # (minute, requests in it)
        self._runner: web.AppRunner | None = None
        self.port = 0
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/v2/account", lambda r, b: self.engine.account()),
            ("GET", "/v2/assets/{symbol}",
             lambda r, b: self.engine.asset(r.match_info["symbol"])),
            ("POST", "/v2/orders", lambda r, b: self.engine.place(
                b if isinstance(b, dict) else {})),
            ("GET", "/v2/orders", lambda r, b: self.engine.list(
                r.query.get("status", "open"), _int(r.query.get("limit"), 50),
                _true(r.query.get("nested")), r.query.get("direction", "asc"))),
            ("GET", "/v2/orders:by_client_order_id",
             lambda r, b: self.engine.get_by_client_id(r.query.get("client_order_id", ""))),
            ("GET", "/v2/orders/{order_id}",
             lambda r, b: self.engine.get(r.match_info["order_id"],
                                          _true(r.query.get("nested")))),
            ("DELETE", "/v2/orders/{order_id}",
             lambda r, b: self.engine.cancel(r.match_info["order_id"])),
            # The market data API (data.alpaca.markets), served here too.
            ("GET", "/v2/stocks/{symbol}/quotes/latest",
             lambda r, b: {"symbol": r.match_info["symbol"],
                           "quote": self.engine.quote(r.match_info["symbol"])}),
            ("GET", "/v1beta3/crypto/us/latest/quotes",
             lambda r, b: {"quotes": {s: self.engine.quote(s)
                                      for s in r.query.get("symbols", "").split(",") if s}}),
            ("GET", "/v2/stocks/{symbol}/bars", lambda r, b: self._stock_bars(r)),
            ("GET", "/v1beta3/crypto/us/bars", lambda r, b: self._crypto_bars(r)),
        ]
        self.app = web.Application()
        for method, path, handler in routes:
            self.app.router.add_route(method, path, self._endpoint(method, path, handler))
        self.app.router.add_get("/stream", self._stream)
        self.market_data = MarketDataStreams(lambda: self.keys, _dumps)
        self.market_data.routes(self.app)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner, self.port = await serve(self.app, host, port)

    async def close(self) -> None:
        await self.drop_streams()
        await self.market_data.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- switches for tests -----------------------------------------------------------------

    def inject(self, method: str, path: str, status: int = 500, **kwargs: Any) -> Fault:
        fault = Fault(method=method, path=path, status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def random_faults(self, before: float, after: float, seed: int = 1) -> None:
        """Answer that share of new orders (POST /v2/orders) with a 500: ``before``
        without acting on them, ``after`` once they are stored (the sender cannot tell
        which)."""
        self._chaos = (random.Random(seed), before, after)

    def drop(self, method: str, path: str, *, after: bool = False, times: int = 1) -> Fault:
        return self.inject(method, path, drop=True, after=after, times=times)

    async def drop_streams(self) -> None:
        """Close every trade_updates connection (the stream goes down)."""
        for ws in list(self._sockets):
            await ws.close()

    def listening(self) -> int:
        """How many connections listen to trade_updates."""
        return len(self.engine.listeners)

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """A new price: orders match against it, and its quote goes to the market data
        streams subscribed to it (``engine.set_price`` moves it without a quote)."""
        self.engine.set_price(symbol, Decimal(price))
        self.market_data.quote(symbol, self.engine.quote(symbol))

    def quote_polls(self) -> int:
        """Latest-quote requests served (REST: what a streamed price spares)."""
        return sum(r.method == "GET" and r.path in _LATEST_QUOTES for r in self.log)

    def orders_for(self, client_order_id: str) -> int:
        """How many orders were created under this client_order_id."""
        return self.engine.created[client_order_id]

    def set_flow(self, symbol: str, per_minute: Decimal | str, since: int | None = None
                 ) -> None:
        """The rest of the market trades ``per_minute`` of ``symbol`` a minute from the
        minute holding ``since`` (epoch ms, default now) on; the bars add what the engine
        executes (engine.set_flow)."""
        self.engine.set_flow(symbol, Decimal(per_minute), since)

    def orders_sent(self) -> list[Received]:
        return [r for r in self.log if r.method == "POST" and r.path == "/v2/orders"]

    # -- the market data API's bars -----------------------------------------------------------

    def _page(self, request: web.Request, symbol: str) -> Page:
        q = request.query
        return self.engine.bars(symbol, q.get("timeframe"), q.get("start"), q.get("end"),
                                q.get("limit"), q.get("page_token"))

    def _stock_bars(self, request: web.Request) -> dict[str, Any]:
        """GET /v2/stocks/{symbol}/bars: ``bars`` null when there are none, as Alpaca's."""
        symbol = request.match_info["symbol"]
        bars, token = self._page(request, symbol)
        return {"bars": bars or None, "symbol": symbol, "next_page_token": token}

    def _crypto_bars(self, request: web.Request) -> dict[str, Any]:
        """GET /v1beta3/crypto/us/bars?symbols=...: bars by symbol, a symbol without bars
        left out. The page token is the first symbol's (the adapter asks for one)."""
        symbols = [s for s in request.query.get("symbols", "").split(",") if s]
        if not symbols:
            raise AlpacaError(400, "missing symbols")
        pages = {s: self._page(request, s) for s in symbols}
        return {"bars": {s: bars for s, (bars, _) in pages.items() if bars},
                "next_page_token": pages[symbols[0]][1]}

    # -- the trade_updates stream -----------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if not self.stream_enabled:
            return web.Response(status=503, text="stream refused (stream_enabled = False)")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        writer = asyncio.create_task(send_queued(ws, out, _dumps))
        authorized = False

        def listener(data: dict[str, Any]) -> None:
            if self.stream_enabled:
                out.put_nowait({"stream": "trade_updates", "data": data})
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    req = {}
                action = req.get("action") if isinstance(req, dict) else None
                data = req.get("data") if isinstance(req, dict) else None
                data = data if isinstance(data, dict) else {}
                if action in ("authenticate", "auth"):
                    key = data.get("key_id", req.get("key"))
                    secret = data.get("secret_key", req.get("secret"))
                    keys = self.keys if self.stream_keys is None else self.stream_keys
                    authorized = bool(key) and keys.get(str(key)) == secret
                    out.put_nowait({"stream": "authorization", "data": {
                        "action": "authenticate",
                        "status": "authorized" if authorized else "unauthorized"}})
                    if not authorized:
                        break
                elif action == "listen" and authorized:
                    streams = data.get("streams")
                    wanted = [s for s in streams if s == "trade_updates"] if isinstance(
                        streams, list) else []
                    if wanted and listener not in self.engine.listeners:
                        self.engine.listeners.append(listener)
                    elif not wanted and listener in self.engine.listeners:
                        self.engine.listeners.remove(listener)
                    out.put_nowait({"stream": "listening", "data": {"streams": wanted}})
                else:
                    out.put_nowait({"stream": "error", "data": {
                        "error_message": "access key verification failed"
                        if not authorized else "invalid action"}})
        finally:
            with contextlib.suppress(ValueError):
                self.engine.listeners.remove(listener)
            await asyncio.sleep(0)  # the writer sends what is queued (a refusal)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await ws.close()
            self._sockets.discard(ws)
        return ws

    # -- REST -------------------------------------------------------------------------------

    def _endpoint(self, method: str, path: str, handler: Handler
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            raw = await request.read() if request.can_read_body else b""
            try:
                body = _decoder.decode(raw) if raw else None
            except msgspec.DecodeError:
                body = None
            self.log.append(Received(method=method, path=path, query=dict(request.query),
                                     body=body, headers=dict(request.headers)))
            headers = self._rate_headers()
            headers["X-Request-ID"] = uuid.uuid4().hex
            fault = self._fault(method, path)
            try:
                if int(headers["X-Ratelimit-Remaining"]) < 0:
                    headers["X-Ratelimit-Remaining"] = "0"
                    raise AlpacaError(429, "rate limit exceeded", 42910000)
                self._authenticate(request)
                if fault is not None and not fault.after:
                    return self._fail(request, fault, headers)
                if method == "POST" and path == "/v2/orders" and isinstance(body, dict):
                    self.received[str(body.get("client_order_id", ""))] += 1
                result = handler(request, body)
                if fault is not None:
                    return self._fail(request, fault, headers)
            except AlpacaError as exc:
                self.statuses[exc.status] += 1
                return web.json_response(exc.body(), status=exc.status, headers=headers,
                                         dumps=_dumps)
            if result is None:
                self.statuses[204] += 1
                return web.Response(status=204, headers=headers)
            self.statuses[200] += 1
            return web.json_response(result, headers=headers, dumps=_dumps)

        return serve

    def _fail(self, request: web.Request, fault: Fault, headers: dict[str, str]
              ) -> web.StreamResponse:
        if fault.drop:
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)  # never reaches the client
        self.statuses[fault.status] += 1
        body = {"message": fault.message} if fault.code is None else {
            "code": fault.code, "message": fault.message}
        return web.json_response(body, status=fault.status, headers=headers)

    def _authenticate(self, request: web.Request) -> None:
        key, secret = (request.headers.get("APCA-API-KEY-ID"),
                       request.headers.get("APCA-API-SECRET-KEY"))
        if not key or not secret:
            raise AlpacaError(401, "unauthorized.")
        if self.keys.get(key) != secret:
            raise AlpacaError(403, "forbidden.")

    def _fault(self, method: str, path: str) -> Fault | None:
        if self._chaos is not None and method == "POST" and path == "/v2/orders":
            rng, before, after = self._chaos
            roll = rng.random()
            if roll < before + after:
                return Fault(method=method, path=path, after=roll >= before)
        for fault in self.faults:
            if fault.method == method and fault.path == path and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _rate_headers(self) -> dict[str, str]:
        now = self.clock()
        minute = int(now // 60)
        used = (self._minute[1] if self._minute[0] == minute else 0) + 1
        self._minute = (minute, used)
        return {"X-Ratelimit-Limit": str(self.rate_limit),
                "X-Ratelimit-Remaining": str(self.rate_limit - used),
                "X-Ratelimit-Reset": str((minute + 1) * 60)}


def _true(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


def _int(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() else default


# A Decimal is written as a JSON number: only the market data answers hold any (the
# trading API's decimals are strings already, made by the engine).
_encoder = msgspec.json.Encoder(enc_hook=str, decimal_format="number")


def _dumps(obj: Any) -> str:
    return _encoder.encode(obj).decode()
