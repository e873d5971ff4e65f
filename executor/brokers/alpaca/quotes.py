"""Alpaca's real-time market data streams as the adapter's reference prices: the quotes of
the symbols asked for, whose mid of bid and ask (``wire.mid_of``) is the price, the same
definition as the latest-quote poll's. The lifecycle (lazy subscription, backoff, health,
the cache and the poll while it is down) is the shared ``PriceStream`` (price_stream.py);
Alpaca's wire is here (alpaca-py's ``alpaca/data/live/websocket.py``, Alpaca's "WebSocket
Stream" page of its market data docs).

Two streams an account, each a connection of its own: stocks at
``wss://stream.data.alpaca.markets/v2/{feed}``, crypto at ``.../v1beta3/crypto/us``.
Alpaca allows an account one connection per feed (a second is refused, ``406 connection
limit exceeded``), so a new symbol is subscribed on the live connection (``_extend``), not
by a new one. Each connection:

- Alpaca: ``[{"T":"success","msg":"connected"}]``;
- we: ``{"action":"auth","key":...,"secret":...}`` (in a message, within 10 s; not in the
  handshake's headers, so the connection's session carries no key); Alpaca:
  ``[{"T":"success","msg":"authenticated"}]``, or ``{"T":"error","code":402,"msg":"auth
  failed"}`` (406 and 409 insufficient subscription come here too);
- we: ``{"action":"subscribe","quotes":[...]}``, and again with each symbol added later;
  Alpaca: ``{"T":"subscription","quotes":[the whole set],...}`` (the set we keep), or 405
  symbol limit exceeded (the free plan's 30): a refused set is asked for again one symbol
  at a time, so that those that fit are streamed and the rest polled;
- then ``{"T":"q","S":symbol,"bp":..,"ap":..,...}`` at every quote, in arrays.

Frames are JSON (Alpaca sends msgpack only to a client whose handshake says
``Content-Type: application/msgpack``, as alpaca-py's does; ours says nothing), numbers
decoded exactly (Decimal). Alpaca sends no quote on subscribing: a symbol's price on a new
connection is its next quote, or a poll made once the subscription was acknowledged
(``seed``). The connection is alive while our pings are answered. Errors are told by
Alpaca's code and message, or the exception's type: never the URL, a header or a key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from .. import websocket
from ..price_stream import PriceStream, StreamLost
from ..prices import PriceCache
from . import wire

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

AUTH_FAILED = 402
SYMBOL_LIMIT = 405  # the plan's symbols exceeded: the connection stays, the rest are polled
_REFUSAL_CHARS = 200
_decode = msgspec.json.Decoder(float_hook=Decimal)


def parse(raw: str | bytes) -> list[Mapping[str, Any]]:
    """A frame's messages (Alpaca sends arrays of objects); none when unreadable."""
    try:
        decoded = _decode.decode(raw)
    except msgspec.DecodeError:
        return []
    found = decoded if isinstance(decoded, list) else [decoded]
    return [m for m in found if isinstance(m, dict)]


def auth_message(key_id: str, secret: str) -> str:
    return json.dumps({"action": "auth", "key": key_id, "secret": secret})


def subscribe_message(symbols: Iterable[str]) -> str:
    return json.dumps({"action": "subscribe", "quotes": sorted(symbols)})


def said(message: Mapping[str, Any]) -> str:
    """An error message's code and text, as Alpaca said them (never our request)."""
    text = f"{message.get('code', '')} {message.get('msg', '')}".strip()
    return text[:_REFUSAL_CHARS] or "an error"


def quote_of(message: Mapping[str, Any]) -> tuple[str, Decimal | None] | None:
    """A quote message as (symbol, mid); None for any other message. A mid of None: the
    quote has neither a bid nor an ask."""
    symbol = message.get("S")
    if message.get("T") != "q" or not isinstance(symbol, str):
        return None
    return symbol, wire.mid_of(message)


def acknowledged(message: Mapping[str, Any]) -> frozenset[str] | None:
    """The quotes a subscription message says the connection holds; None for another."""
    quotes = message.get("quotes")
    if message.get("T") != "subscription" or not isinstance(quotes, list):
        return None
    return frozenset(str(q) for q in quotes)


class QuoteStream(PriceStream):
    def __init__(self, account: str, kind: str, timeout_ms: int, cache: PriceCache,
                 metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(f"alpaca-{kind}-quotes:{account}", account,
                         f"alpaca {account}: {kind} quotes stream", cache, metrics, log=log,
                         clock=clock)
        self.timeout_ms = timeout_ms
        self._session: aiohttp.ClientSession | None = None
        self._url = ""
        self._keys: tuple[str, str] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        # Subscriptions to send on this connection (after the first), one message each.
        self._more: asyncio.Queue[frozenset[str]] | None = None
        # The subscriptions sent and not answered yet: Alpaca answers each, in order.
        self._pending: collections.deque[frozenset[str]] = collections.deque()

    def start(self, session: aiohttp.ClientSession, url: str, keys: tuple[str, str], *,
              run: bool = True) -> None:
        """Where and how to connect; ``run``: start now, else once ``resume``-d."""
        self._session, self._url, self._keys = session, url, keys
        if run:
            self._start()

    def _alive(self) -> bool:
        # Quotes come only when they change: a quiet symbol's last quote stands while the
        # connection lives (aiohttp closes it when our ping goes unanswered).
        return self._ws is not None and not self._ws.closed

    def _extend(self, symbol: str) -> bool:
        if self._more is None:
            return False
        self._more.put_nowait(frozenset({symbol}))  # sent after the first subscription
        return True

    async def _open(self, names: frozenset[str]) -> None:
        session, keys = self._session, self._keys
        if session is None or keys is None:
            raise StreamLost("not started")
        ws = await websocket.connect(session, self._url, self.timeout_ms)
        self._ws, self._more = ws, asyncio.Queue()
        self._pending.clear()
        sender: asyncio.Task[None] | None = None
        try:
            received = websocket.frames(ws, self.timeout_ms)
            await self._expect(received, "connected")
            await ws.send_str(auth_message(*keys))
            await self._expect(received, "authenticated")
            await self._subscribe(ws, names)
            sender = asyncio.create_task(self._send_more(ws, self._more))
            await self._read(received)
        except (aiohttp.ClientError, OSError) as exc:  # a send on a broken connection
            raise StreamLost(f"connection failed ({type(exc).__name__})") from None
        finally:
            self._ws = self._more = None
            if sender is not None:
                sender.cancel()
                # A send that failed on the closing connection: the reader tells why.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            await ws.close()

    async def _expect(self, received: AsyncIterator[str | bytes], word: str) -> None:
        """Wait (within the connection's timeout) for ``{"T":"success","msg":word}``;
        raises ``StreamLost`` on Alpaca's error instead."""
        async def answer() -> None:
            async for raw in received:
                for message in parse(raw):
                    if message.get("T") == "error":
                        raise self._refused(message)
                    if message.get("T") == "success" and message.get("msg") == word:
                        return
        try:
            await asyncio.wait_for(answer(), self.timeout_ms / 1000)
        except TimeoutError:
            raise StreamLost(f"not {word} within {self.timeout_ms} ms") from None

    def _refused(self, message: Mapping[str, Any]) -> StreamLost:
        why = said(message)
        if message.get("code") == AUTH_FAILED:
            # Loud, as for the trade_updates stream: it will not heal by itself.
            self.log.error("%s: AUTHENTICATION FAILED (%s): check the key id and the secret "
                           "key", self.health.what, why)
        return StreamLost(f"refused ({why})")

    async def _send_more(self, ws: aiohttp.ClientWebSocketResponse,
                         more: asyncio.Queue[frozenset[str]]) -> None:
        while True:
            await self._subscribe(ws, await more.get())

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse,
                         symbols: frozenset[str]) -> None:
        self._pending.append(symbols)
        await ws.send_str(subscribe_message(symbols))

    async def _read(self, received: AsyncIterator[str | bytes]) -> None:
        async for raw in received:
            self._heard()
            for message in parse(raw):
                self._told(message)

    def _told(self, message: Mapping[str, Any]) -> None:
        priced = quote_of(message)
        if priced is not None:
            self._priced(*priced)
            return
        held = acknowledged(message)
        if held is not None:
            if self._pending:
                self._pending.popleft()
            self._resubscribed(held)
            if self.connection() is None:
                self._opened()  # the first answer: the connection is in place
            return
        if message.get("T") == "error":
            if message.get("code") == SYMBOL_LIMIT:
                self._over_limit(self._pending.popleft() if self._pending else frozenset(),
                                 said(message))
                return
            raise self._refused(message)

    def _over_limit(self, refused: frozenset[str], why: str) -> None:
        """A subscription past the plan's symbols (nothing of it taken): its symbols are
        asked for one at a time, so that those that fit are streamed; one alone is polled."""
        if len(refused) > 1 and self._more is not None:
            for symbol in sorted(refused):
                self._more.put_nowait(frozenset({symbol}))
            return
        self.log.warning("%s: %s; %s is polled", self.health.what, why,
                         ", ".join(refused) or "a symbol")
