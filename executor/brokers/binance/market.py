"""Binance's market streams as the adapter's reference prices: each symbol's trades
(``<symbol>@trade``), so a price is the last trade's, the same thing ``GET
/api/v3/ticker/price`` answers when polled. One definition for both: an emulated stop
triggers on the price Binance's own STOP_LOSS orders trigger on (the last trade), whether
the price came from a poll or the stream.

A ``PriceStream`` (price_stream.py: lazy subscription, restart with the larger set,
backoff, health): one WebSocket connection to ``<market url>/stream?streams=a@trade/b@trade``
(a combined stream: ``{"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT",
"p": "50000.01", ...}}``). Market streams are public: the connection carries no key, so
nothing of the account's credentials can reach it or its log lines.

Binance sends a trade only when one happens and no snapshot on connect: a symbol's price on
a new connection is its next trade, or a poll made once the connection was up (``seed``);
until then the cache and the poll answer. A quiet symbol's price stays current while the
connection is alive: Binance pings every 20 s and we ping it after two thirds of
``timeout_ms`` of silence; no pong within the last third, or a close (Binance ends every
connection after 24 h; ``serverShutdown`` before a restart), and the stream is lost and
reconnected while the cache, then polls, answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from .. import websocket
from ..price_stream import PriceStream, StreamLost
from ..prices import PriceCache

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

# Binance refuses a connection with more streams than this (web-socket-streams.md).
MAX_STREAMS = 1024
# Numbers stay exact should one come unquoted (Binance sends prices as strings).
_decode = msgspec.json.Decoder(float_hook=Decimal)


def stream_name(symbol: str) -> str:
    return f"{symbol.lower()}@trade"


def streams_url(base: str, symbols: Iterable[str]) -> str:
    """The combined stream of ``symbols``' trades at ``base`` (a host, no path)."""
    names = sorted(stream_name(s) for s in symbols)
    return f"{base}/stream?streams={'/'.join(names)}"


def parse(raw: str | bytes) -> dict[str, Any] | None:
    """One message: its object, or None when it is not one (skipped, not fatal)."""
    try:
        message = _decode.decode(raw)
    except msgspec.DecodeError:
        return None
    return message if isinstance(message, dict) else None


def trade_price(message: Mapping[str, Any]) -> tuple[str, Decimal] | None:
    """A trade event (combined or raw) as (symbol, price); None for any other message, or a
    trade whose price is not a positive number."""
    data = message.get("data", message)
    if not isinstance(data, Mapping) or data.get("e") != "trade":
        return None
    symbol, raw = data.get("s"), data.get("p")
    if not isinstance(symbol, str) or raw is None:
        return None
    try:
        price = Decimal(str(raw))
    except InvalidOperation:
        return None
    if not price.is_finite() or price <= 0:
        return None
    return symbol, price


def is_shutdown(message: Mapping[str, Any]) -> bool:
    data = message.get("data", message)
    return isinstance(data, Mapping) and data.get("e") == "serverShutdown"


class MarketStream(PriceStream):
    def __init__(self, account: str, timeout_ms: int, cache: PriceCache,
                 metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(f"binance-prices:{account}", account,
                         f"binance {account}: market stream", cache, metrics, log=log,
                         clock=clock)
        self.timeout_ms = timeout_ms
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def start(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session, self._base = session, base
        self._start()

    def _alive(self) -> bool:
        # Trades come only when there are some: a quiet symbol's last trade is its price
        # while the connection lives (aiohttp closes it when our ping goes unanswered).
        return self._ws is not None and not self._ws.closed

    async def _open(self, names: frozenset[str]) -> None:
        session = self._session
        if session is None:
            raise StreamLost("not started")
        if len(names) > MAX_STREAMS:
            # Prices of the symbols left out are polled, as without a stream.
            self.log.warning("%s: %d symbols asked for, only %d streamed", self.health.what,
                             len(names), MAX_STREAMS)
            names = frozenset(sorted(names)[:MAX_STREAMS])
            self.subscribed = names
        ws = await websocket.connect(session, streams_url(self._base, names),
                                     self.timeout_ms)
        self._ws = ws
        try:
            self._opened()
            await self._read(ws)
        finally:
            self._ws = None
            await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in websocket.frames(ws, self.timeout_ms):
            message = parse(raw)
            if message is None:
                continue
            self._heard()
            if is_shutdown(message):
                raise StreamLost("the server is shutting down")
            priced = trade_price(message)
            if priced is not None:
                self._priced(*priced)
