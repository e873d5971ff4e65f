"""The local OANDA venue over HTTP, speaking v20 REST under ``/v3/accounts/{id}``:
``summary``, ``instruments``, ``pricing``, ``orders`` (POST), ``pendingOrders`` and
``openPositions`` (GET, the positions netted from the venue's fills),
``orders/{specifier}`` (GET), ``orders/{specifier}/cancel`` (PUT), ``trades/{specifier}``
(GET: a trade by id or ``@`` client id, with its dependent orders' ids), ``transactions/{id}``
and ``transactions/sinceid`` (GET), the transactions stream (``transactions/stream``:
one JSON line per transaction as it happens, a HEARTBEAT line every ``heartbeat_ms``),
and the pricing stream (``pricing/stream?instruments=A,B``: a PRICE line per instrument on
connect and whenever ``set_price`` or ``set_tradeable`` changes one, a HEARTBEAT every
``heartbeat_ms``; 400 with OANDA's ``errorMessage`` for an unknown instrument),
with a Bearer token check (401 as OANDA answers it), 403 for another account,
``RequestID`` and ``lastTransactionID`` on every reply, and times as the
``Accept-Datetime-Format`` header asks (RFC 3339 by default, UNIX seconds).

Switches for tests: ``random_faults`` answers a share of creates with a 503, before or
after storing the order (the chaos test); ``inject`` answers the next requests of one
endpoint with an error status, before or after the venue acted on them (``after``: a 5xx
once the order is stored), or drops the connection without an answer (``drop``), or
answers a create with an error and stores the order ``late_s`` seconds later (a late
execution). ``heartbeats = False`` silences the transactions stream's heartbeats (a stalled
feed), ``price_heartbeats = False`` the pricing stream's; ``drop_streams`` closes every
transactions stream connection, ``drop_price_streams`` every pricing stream one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from ..http_server import serve
from .venue import Rejected, Venue

TIME_KEYS = frozenset({"time", "createTime", "filledTime", "cancelledTime", "openTime",
                       "closeTime"})
UNAUTHORIZED = {"errorMessage": "Insufficient authorization to perform request."}
FORBIDDEN = {"errorMessage": "The provided request was forbidden."}
Handler = Callable[[web.Request, Any], Awaitable[tuple[int, dict[str, Any]]]]


class Fault(msgspec.Struct, kw_only=True):
    """What the next ``times`` requests to endpoint ``name`` get instead of an answer."""

    name: str  # summary, instruments, pricing, create, pending, positions, get_order, cancel,
    # get_trade, transaction, sinceid
    status: int = 503
    after: bool = False  # let the venue act first (an order is stored), then answer this
    drop: bool = False  # close the connection without an answer
    late_s: float | None = None  # create only: answer ``status`` now, store the order later
    times: int = 1


class Received(msgspec.Struct, kw_only=True):
    """One request as it reached the server (for tests that check the wire)."""

    name: str
    method: str
    path: str
    query: dict[str, str]
    body: Any  # the decoded JSON body, None without one
    headers: dict[str, str]


class OandaExchangeServer:
    def __init__(self, token: str = "local-token", account_id: str = "101-004-1234567-001",
                 *, currency: str = "USD") -> None:
        self.token = token
        self.account_id = account_id
        self.venue = Venue(account_id, currency)
        self.faults: list[Fault] = []
        self.log: list[Received] = []
        self.received: Counter[str] = Counter()  # POST orders per clientExtensions.id
        self.statuses: Counter[int] = Counter()
        self.port = 0
        self._request_ids = itertools.count(1)
        self._late: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.heartbeat_ms = 5_000  # OANDA's: a HEARTBEAT line every 5 s
        self.heartbeats = True
        self.price_heartbeats = True
        # Each open pricing stream connection's request, instruments and queue of the
        # instruments to tell (None ends it).
        self._price_streams: dict[web.StreamResponse, tuple[
            web.Request, frozenset[str], asyncio.Queue[str | None]]] = {}
        # Each open stream connection's request and queue (an empty dict ends it).
        self._streams: dict[web.StreamResponse, tuple[web.Request,
                                                      asyncio.Queue[dict[str, Any]]]] = {}
        self._chaos: tuple[random.Random, float, float] | None = None
        self.app = web.Application()
        base = "/v3/accounts/{account}"
        # Before transactions/{tx}, which would match them too.
        self.app.router.add_route("GET", base + "/transactions/stream", self._stream)
        self.app.router.add_route("GET", base + "/pricing/stream", self._price_stream)
        for method, path, name, handler in (
            ("GET", "/summary", "summary", self._summary),
            ("GET", "/instruments", "instruments", self._instruments),
            ("GET", "/pricing", "pricing", self._pricing),
            ("POST", "/orders", "create", self._create),
            ("GET", "/pendingOrders", "pending", self._pending),
            ("GET", "/openPositions", "positions", self._positions),
            ("GET", "/orders/{spec}", "get_order", self._get_order),
            ("PUT", "/orders/{spec}/cancel", "cancel", self._cancel),
            ("GET", "/trades/{spec}", "get_trade", self._get_trade),
            ("GET", "/transactions/sinceid", "sinceid", self._sinceid),
            ("GET", "/transactions/{tx}", "transaction", self._transaction),
        ):
            self.app.router.add_route(method, base + path, self._endpoint(name, handler))

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner, self.port = await serve(self.app, host, port)

    async def close(self) -> None:
        await self.drop_streams()
        await self.drop_price_streams()
        for handle in self._late:
            handle.cancel()
        self._late.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- switches and views for tests -----------------------------------------------------

    def inject(self, name: str, status: int = 503, **kwargs: Any) -> Fault:
        fault = Fault(name=name, status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def random_faults(self, before: float, after: float, seed: int = 1) -> None:
        """Answer that share of creates with a 503: ``before`` without acting on them,
        ``after`` once the order is stored (the sender cannot tell which)."""
        self._chaos = (random.Random(seed), before, after)

    def orders_for(self, client_order_id: str) -> int:
        """Orders the venue holds under this client id (at most one, by its rule)."""
        return sum(1 for o in self.venue.orders.values()
                   if (o.get("clientExtensions") or {}).get("id") == client_order_id)

    def orders_sent(self) -> list[Received]:
        return [r for r in self.log if r.name == "create"]

    def set_price(self, instrument: str, bid: str, ask: str) -> None:
        self.venue.set_price(instrument, bid, ask)

    async def drop_streams(self) -> None:
        """Close every transactions stream connection (the feed goes down)."""
        for response in list(self._streams):
            request, queue = self._streams.pop(response)
            queue.put_nowait({})
            if request.transport is not None:
                request.transport.close()

    @property
    def streams(self) -> int:
        """Transactions stream connections open now."""
        return len(self._streams)

    def set_tradeable(self, instrument: str, tradeable: bool) -> None:
        self.venue.set_tradeable(instrument, tradeable)

    async def drop_price_streams(self) -> None:
        """Close every pricing stream connection."""
        for response in list(self._price_streams):
            request, _, queue = self._price_streams.pop(response)
            queue.put_nowait(None)
            if request.transport is not None:
                request.transport.close()

    @property
    def price_streams(self) -> list[frozenset[str]]:
        """The instruments of each pricing stream connection open now."""
        return [names for _, names, _ in self._price_streams.values()]

    def polls(self) -> int:
        """GET pricing requests received (prices asked for outside the stream)."""
        return sum(1 for r in self.log if r.name == "pricing")

    # -- plumbing -------------------------------------------------------------------------

    def _endpoint(self, name: str, handler: Handler
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body = msgspec.json.decode(raw) if raw else None
            self.log.append(Received(name=name, method=request.method, path=request.path,
                                     query=dict(request.query), body=body,
                                     headers=dict(request.headers)))
            if name == "create" and isinstance(body, dict):
                cid = ((body.get("order") or {}).get("clientExtensions") or {}).get("id")
                if cid:
                    self.received[cid] += 1
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._reply(request, 401, UNAUTHORIZED)
            if request.match_info["account"] != self.account_id:
                return self._reply(request, 403, FORBIDDEN)
            self.venue.expire()
            fault = self._fault(name)
            if fault is not None and fault.late_s is not None:
                handle = asyncio.get_running_loop().call_later(
                    fault.late_s, self._act_late, handler, request, body)
                self._late.add(handle)
                return self._reply(request, fault.status, _server_error())
            if fault is not None and not fault.after:
                return self._fail(request, fault)
            try:
                status, reply = await handler(request, body)
            except Rejected as exc:
                status, reply = exc.status, exc.body
            if fault is not None:
                return self._fail(request, fault)
            return self._reply(request, status, reply)
        return endpoint

    def _act_late(self, handler: Handler, request: web.Request, body: Any) -> None:
        async def act() -> None:
            with contextlib.suppress(Rejected):
                await handler(request, body)
        task = asyncio.get_running_loop().create_task(act())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fault(self, name: str) -> Fault | None:
        if self._chaos is not None and name == "create":
            rng, before, after = self._chaos
            roll = rng.random()
            if roll < before + after:
                return Fault(name=name, after=roll >= before)
        for fault in self.faults:
            if fault.name == name and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=fault.status)  # never reaches the client
        return self._reply(request, fault.status, _server_error())

    def _reply(self, request: web.Request, status: int, body: dict[str, Any]
               ) -> web.Response:
        self.statuses[status] += 1
        unix = request.headers.get("Accept-Datetime-Format", "RFC3339").upper() == "UNIX"
        if "lastTransactionID" not in body and status < 300:
            body = {**body, "lastTransactionID": self.venue.last_id}
        headers = {"RequestID": str(next(self._request_ids))}
        return web.Response(status=status, body=msgspec.json.encode(_times(body, unix)),
                            content_type="application/json", headers=headers)

    # -- endpoints ------------------------------------------------------------------------

    async def _summary(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        pending = sum(1 for o in self.venue.orders.values() if o["state"] == "PENDING")
        return 200, {"account": {"id": self.account_id, "alias": "local",
                                 "currency": self.venue.currency, "balance": "100000.0000",
                                 "pendingOrderCount": pending,
                                 "lastTransactionID": self.venue.last_id}}

    async def _instruments(self, request: web.Request, body: Any
                           ) -> tuple[int, dict[str, Any]]:
        names = request.query.get("instruments")
        wanted = names.split(",") if names else list(self.venue.instruments)
        return 200, {"instruments": [self.venue.instruments[n] for n in wanted
                                     if n in self.venue.instruments]}

    async def _pricing(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        prices = [self.venue.price(name) for name in self._instruments_of(request)]
        return 200, {"prices": prices, "time": self.venue.clock()}

    def _instruments_of(self, request: web.Request) -> list[str]:
        names = request.query.get("instruments", "").split(",")
        if any(name not in self.venue.prices for name in names):
            raise Rejected(400, {"errorMessage": "Invalid value specified for "
                                                 "'instruments'"})
        return names

    async def _create(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("order"), dict):
            raise Rejected(400, {"errorMessage": "The request was missing required data"})
        return 201, self.venue.create(body["order"])

    async def _pending(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"orders": [o for o in self.venue.orders.values()
                                if o["state"] == "PENDING"]}

    async def _positions(self, request: web.Request, body: Any
                         ) -> tuple[int, dict[str, Any]]:
        return 200, {"positions": self.venue.positions()}

    async def _get_order(self, request: web.Request, body: Any
                         ) -> tuple[int, dict[str, Any]]:
        order = self.venue.find(request.match_info["spec"])
        if order is None:
            raise Rejected(404, {"errorCode": "ORDER_DOESNT_EXIST",
                                 "errorMessage": "The order ID specified does not exist",
                                 "lastTransactionID": self.venue.last_id})
        return 200, {"order": order}

    async def _get_trade(self, request: web.Request, body: Any
                         ) -> tuple[int, dict[str, Any]]:
        trade = self.venue.trade(request.match_info["spec"])
        if trade is None:
            raise Rejected(404, {"errorCode": "NO_SUCH_TRADE",
                                 "errorMessage": "The Trade specified does not exist",
                                 "lastTransactionID": self.venue.last_id})
        out = {k: v for k, v in trade.items() if k != "best"}
        for o in self.venue.orders.values():
            if o.get("tradeID") == trade["id"] and o["state"] == "PENDING":
                key = {"TAKE_PROFIT": "takeProfitOrder", "STOP_LOSS": "stopLossOrder",
                       "TRAILING_STOP_LOSS": "trailingStopLossOrder"}[o["type"]]
                out[key] = o
        return 200, {"trade": out}

    async def _cancel(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        return 200, self.venue.cancel(request.match_info["spec"])

    async def _sinceid(self, request: web.Request, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            last = int(request.query.get("id", ""))
        except ValueError:
            raise Rejected(400, {"errorMessage": "Invalid value specified for 'id'"}) from None
        return 200, {"transactions": self.venue.since(last)}

    def _stream_refused(self, request: web.Request, name: str) -> web.Response | None:
        """Log a stream request; the answer refusing it (a bad token or account), if any."""
        self.log.append(Received(name=name, method="GET", path=request.path,
                                 query=dict(request.query), body=None,
                                 headers=dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(request, 401, UNAUTHORIZED)
        if request.match_info["account"] != self.account_id:
            return self._reply(request, 403, FORBIDDEN)
        return None

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """The transactions stream: JSON lines, transactions as they are made and a
        HEARTBEAT (with the lastTransactionID) every ``heartbeat_ms`` while enabled."""
        refused = self._stream_refused(request, "stream")
        if refused is not None:
            return refused
        unix = request.headers.get("Accept-Datetime-Format", "RFC3339").upper() == "UNIX"
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "application/octet-stream",
            "RequestID": str(next(self._request_ids))})
        await response.prepare(request)
        self.statuses[200] += 1
        self.venue.listeners.append(queue.put_nowait)
        self._streams[response] = (request, queue)
        try:
            while response in self._streams:
                try:
                    message = await asyncio.wait_for(queue.get(), self.heartbeat_ms / 1000)
                except TimeoutError:
                    if not self.heartbeats:
                        continue
                    message = {"type": "HEARTBEAT", "lastTransactionID": self.venue.last_id,
                               "time": self.venue.clock()}
                if not message:
                    break  # dropped
                await response.write(msgspec.json.encode(_times(message, unix)) + b"\n")
        except ConnectionError:
            pass
        finally:
            self._streams.pop(response, None)
            self.venue.listeners.remove(queue.put_nowait)
        return response

    async def _price_stream(self, request: web.Request) -> web.StreamResponse:
        """The pricing stream: a PRICE line of each instrument asked for on connect (the
        snapshot, unless ``snapshot=false``) and whenever it changes, a HEARTBEAT every
        ``heartbeat_ms`` while ``price_heartbeats``."""
        refused = self._stream_refused(request, "pricing_stream")
        if refused is not None:
            return refused
        try:
            names = frozenset(self._instruments_of(request))
        except Rejected as exc:
            return self._reply(request, exc.status, exc.body)
        unix = request.headers.get("Accept-Datetime-Format", "RFC3339").upper() == "UNIX"
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        if request.query.get("snapshot", "true") != "false":
            for instrument in sorted(names):
                queue.put_nowait(instrument)
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "application/octet-stream",
            "RequestID": str(next(self._request_ids))})
        await response.prepare(request)
        self.statuses[200] += 1

        def told(name: str) -> None:
            if name in names:
                queue.put_nowait(name)
        self.venue.price_listeners.append(told)
        self._price_streams[response] = (request, names, queue)
        try:
            while response in self._price_streams:
                try:
                    name = await asyncio.wait_for(queue.get(), self.heartbeat_ms / 1000)
                except TimeoutError:
                    if not self.price_heartbeats:
                        continue
                    message = {"type": "HEARTBEAT", "time": self.venue.clock()}
                else:
                    if name is None:
                        break  # dropped
                    message = self.venue.price(name)
                await response.write(msgspec.json.encode(_times(message, unix)) + b"\n")
        except ConnectionError:
            pass
        finally:
            self._price_streams.pop(response, None)
            self.venue.price_listeners.remove(told)
        return response

    async def _transaction(self, request: web.Request, body: Any
                           ) -> tuple[int, dict[str, Any]]:
        tx = self.venue.transactions.get(request.match_info["tx"])
        if tx is None:
            raise Rejected(404, {"errorMessage": "The Transaction ID specified does not "
                                                 "exist", "lastTransactionID":
                                 self.venue.last_id})
        return 200, {"transaction": tx}


def _server_error() -> dict[str, Any]:
    return {"errorMessage": "An unexpected error has occurred"}  # [unverified] wording


def _times(value: Any, unix: bool) -> Any:
    """Times (kept as epoch nanoseconds) written as the client asked."""
    if isinstance(value, dict):
        return {k: (_time(v, unix) if k in TIME_KEYS and isinstance(v, int) else
                    _times(v, unix)) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v, unix) for v in value]
    return value


def _time(ns: int, unix: bool) -> str:
    seconds, fraction = divmod(ns, 10**9)
    if unix:
        return f"{seconds}.{fraction:09d}"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{fraction:09d}Z"
