"""The local Alpaca's real-time market data streams, as Alpaca serves them at
stream.data.alpaca.markets: stocks at ``/v2/iex``, ``/v2/sip`` and ``/v2/delayed_sip``,
crypto at ``/v1beta3/crypto/us``. JSON text frames, each an array of messages:

- on connect ``[{"T":"success","msg":"connected"}]``;
- ``{"action":"auth","key":...,"secret":...}``: ``[{"T":"success","msg":"authenticated"}]``;
  a wrong key ``{"T":"error","code":402,"msg":"auth failed"}``, a second connection of one
  key to one path ``406 connection limit exceeded`` (then the connection is closed);
  again once authenticated ``403 already authenticated``;
- ``{"action":"subscribe","quotes":[...]}``: ``{"T":"subscription","trades":[],
  "quotes":[every symbol subscribed],"bars":[]}``; before auth ``401 not authenticated``;
  past ``symbol_limit`` symbols ``405 symbol limit exceeded`` (nothing added);
- a quote ``{"T":"q","S":...,"bp":..,"ap":..,...}`` (numbers, as the latest quote) to every
  connection subscribed to the symbol each time the test sets its price.

Switches: ``enabled`` (False: handshakes refused with 503), ``drop`` (close every
connection), ``symbol_limit``; ``handshakes`` keeps each handshake's headers,
``subscriptions()`` what each connection streams and ``over_limit`` how many connections
were refused with 406.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ..http_server import send_queued

PATHS = ("/v2/iex", "/v2/sip", "/v2/delayed_sip", "/v1beta3/crypto/us")
CRYPTO_PATH = "/v1beta3/crypto/us"


def _error(code: int, msg: str) -> list[dict[str, Any]]:
    return [{"T": "error", "code": code, "msg": msg}]


@dataclass
class _Connection:
    path: str
    out: asyncio.Queue[Any]
    key: str | None = None  # once authenticated
    quotes: set[str] = field(default_factory=set)


class MarketDataStreams:
    def __init__(self, keys: Callable[[], dict[str, str]],
                 dumps: Callable[[Any], str]) -> None:
        self.keys = keys  # the server's credentials, read at each auth
        self.dumps = dumps
        self.enabled = True
        self.symbol_limit: int | None = None
        self.handshakes: list[dict[str, str]] = []
        self.over_limit = 0  # connections refused: 406 connection limit exceeded
        self._connections: dict[web.WebSocketResponse, _Connection] = {}

    def routes(self, app: web.Application) -> None:
        for path in PATHS:
            app.router.add_get(path, self._serve)

    def subscriptions(self) -> list[tuple[str, frozenset[str]]]:
        """(path, quotes) of every authenticated connection."""
        return sorted((c.path, frozenset(c.quotes)) for c in self._connections.values()
                      if c.key is not None)

    def quote(self, symbol: str, quote: dict[str, Any]) -> None:
        """Send ``quote`` (a latest quote's fields) to every connection subscribed to it."""
        crypto = "/" in symbol
        for c in self._connections.values():
            if symbol in c.quotes and (c.path == CRYPTO_PATH) == crypto:
                c.out.put_nowait([{"T": "q", "S": symbol, **quote}])

    async def drop(self) -> None:
        for ws in list(self._connections):
            await ws.close()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if not self.enabled:
            return web.Response(status=503, text="market data refused (enabled = False)")
        self.handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        c = _Connection(request.path, asyncio.Queue())
        self._connections[ws] = c
        writer = asyncio.create_task(send_queued(ws, c.out, self.dumps))
        c.out.put_nowait([{"T": "success", "msg": "connected"}])
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._answer(
                        c, msg.data):
                    break
        finally:
            del self._connections[ws]
            await asyncio.sleep(0)  # the writer sends what is queued (a refusal)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await ws.close()
        return ws

    def _answer(self, c: _Connection, raw: str | bytes) -> bool:
        """Answer one message; False: the connection is to be closed."""
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        action = req.get("action") if isinstance(req, dict) else None
        if action == "auth" and isinstance(req, dict):
            return self._auth(c, req)
        if action == "subscribe" and isinstance(req, dict):
            self._subscribe(c, req)
        else:
            c.out.put_nowait(_error(400, "invalid syntax"))
        return True

    def _auth(self, c: _Connection, req: dict[str, Any]) -> bool:
        if c.key is not None:
            c.out.put_nowait(_error(403, "already authenticated"))
            return True
        key = req.get("key")
        if not isinstance(key, str) or self.keys().get(key) != req.get("secret"):
            c.out.put_nowait(_error(402, "auth failed"))
            return False
        if any(o.key == key and o.path == c.path for o in self._connections.values()):
            self.over_limit += 1
            c.out.put_nowait(_error(406, "connection limit exceeded"))
            return False
        c.key = key
        c.out.put_nowait([{"T": "success", "msg": "authenticated"}])
        return True

    def _subscribe(self, c: _Connection, req: dict[str, Any]) -> None:
        if c.key is None:
            c.out.put_nowait(_error(401, "not authenticated"))
            return
        asked = req.get("quotes")
        wanted = c.quotes | {s for s in asked if isinstance(s, str)} if isinstance(
            asked, list) else c.quotes
        if self.symbol_limit is not None and len(wanted) > self.symbol_limit:
            c.out.put_nowait(_error(405, "symbol limit exceeded"))
            return
        c.quotes = set(wanted)
        c.out.put_nowait([{"T": "subscription", "trades": [], "quotes": sorted(c.quotes),
                           "bars": []}])
