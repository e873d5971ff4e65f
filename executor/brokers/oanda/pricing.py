"""The pricing stream of an OANDA account: the reference prices (the mid, wire.mid_of) of
the instruments the adapter has been asked prices for, as OANDA moves them, instead of a
``GET pricing`` whenever the cached one is older than ``price_cache_ms``.

A task started with the broker reads
``GET {stream host}/v3/accounts/{id}/pricing/stream?instruments=A,B&snapshot=true``: JSON
lines, a ``PRICE`` of each instrument on connect (the snapshot) and whenever its price
changes, a ``HEARTBEAT`` every 5 s. It subscribes to nothing until asked: ``add`` (the
first ``reference_price`` of an instrument, which is answered by a poll) adds it and
restarts the stream with the larger set.

``current`` is the price of an instrument while the stream vouches for it: its last PRICE
on this connection was tradeable, and the connection has said something (any line) within
``timeout_ms``. OANDA sends a PRICE only when the price moves, so a quiet instrument's
price is current as long as the heartbeats come, however old it is. Each PRICE is also put
in the broker's ``PriceCache``, so that while the stream reconnects the cache answers for
``price_cache_ms`` and then the broker polls, as without a stream.

No line for ``timeout_ms``, the stream closed, an error status or a dropped connection:
the stream is lost (``StreamHealth`` with ``feed="prices"``: the gauge at 0, each attempt
counted, a log line at a low rate) and reconnected after a doubling backoff with jitter
(0.5 s up to 30 s), reset only once a line came (a stream that dies at once is not
hammered). Errors are named by status and OANDA's message, or by the exception's type:
never the URL, the headers or the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import aiohttp

from ..binance.stream import StreamHealth
from ..prices import PriceCache
from . import stream, wire

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

# After a new instrument is asked for, how long to gather others before reconnecting: a
# pass of the emulator asks for its symbols one after another, and every reconnect is a
# new connection (OANDA refuses more than 2 a second per IP).
SETTLE_S = 0.1


class _Lost(Exception):
    """The connection is over; ``str``: why (safe to log)."""


class PricingStream:
    def __init__(self, account: str, timeout_ms: int, connect_timeout_ms: int,
                 cache: PriceCache, metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account = account
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.cache = cache
        self.clock = clock
        self.backoff = stream.Backoff(jitter=0.5)
        self.health = StreamHealth(
            account, metrics, logger=log, feed="prices",
            what=f"oanda {account}: pricing stream",
            meanwhile="reference prices are polled until it is back (reconnecting after a "
                      "backoff")
        self.instruments: set[str] = set()  # asked for: the next connection's set
        self.subscribed: frozenset[str] = frozenset()  # the set of the connection now
        self.connects = 0  # connections made (that answered 200)
        self._prices: dict[str, Decimal] = {}  # this connection's tradeable mids
        self._heard_at: float | None = None  # the last line of this connection (clock)
        self._wanted = asyncio.Event()  # set: an instrument the connection lacks
        self._connection: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- what the broker asks ---------------------------------------------------------------

    def current(self, instrument: str) -> Decimal | None:
        """The price of ``instrument`` while the stream vouches for it (see the module);
        None: ask elsewhere (the cache, then a poll)."""
        price = self._prices.get(instrument)
        if price is None or self._heard_at is None:
            return None
        if (self.clock() - self._heard_at) * 1000 >= self.timeout_ms:
            return None  # silent too long: dead, even before the reader notices
        return price

    def add(self, instrument: str) -> None:
        """Subscribe to ``instrument`` too (the connection restarts with the larger set)."""
        if instrument in self.instruments:
            return
        self.instruments.add(instrument)
        self._wanted.set()
        connection = self._connection
        if connection is not None and not connection.done():
            connection.cancel()  # its set lacks the new instrument

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, session: aiohttp.ClientSession, url: str) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(session, url),
                                             name=f"oanda-pricing:{self.account}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
        self._forget()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                await asyncio.sleep(max(SETTLE_S, self.backoff.delay()))
                self._wanted.clear()  # what was asked meanwhile is in this set too
                names = frozenset(self.instruments)
                self._connection = asyncio.create_task(self._connect(session, url, names))
                await asyncio.wait({self._connection})
                if self._connection.cancelled():
                    continue  # restarted for a new instrument (_wanted is set)
                error = self._connection.exception()
                if isinstance(error, _Lost):
                    self.backoff.failed()
                    self.health.lost(str(error))
                elif error is not None:  # a bug of ours: told, and tried again later
                    self.backoff.failed()
                    log.error("oanda %s: pricing stream failed (%s: %s)", self.account,
                              type(error).__name__, error)
                self._wanted.set()  # always reconnect
        finally:
            connection = self._connection
            if connection is not None and not connection.done():
                connection.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection

    async def _connect(self, session: aiohttp.ClientSession, url: str,
                       names: frozenset[str]) -> None:
        """One connection, until it is lost (``_Lost``) or cancelled."""
        self._forget()
        self.subscribed = names
        # No total timeout: silence is measured between lines (timeout_ms).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_ms / 1000)
        params = {"instruments": ",".join(sorted(names)), "snapshot": "true"}
        try:
            async with session.get(url, params=params, timeout=timeout) as response:
                if response.status >= 300:
                    raw = await response.read()
                    raise _Lost(wire.describe(response.status, _body(raw)))
                self.connects += 1
                self.health.up()
                await self._read(response)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Named by its type only: its text can carry the URL (the account id).
            raise _Lost(f"connection failed ({type(exc).__name__})") from None
        finally:
            self._forget()

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        while True:
            try:
                line = await asyncio.wait_for(response.content.readline(),
                                              self.timeout_ms / 1000)
            except TimeoutError:
                raise _Lost(f"no heartbeat for {self.timeout_ms} ms") from None
            if not line:
                raise _Lost("closed by the server")
            message = stream.parse_line(line)
            if message is None:
                continue
            self._heard_at = self.clock()
            self.backoff.reset()  # it speaks: the next loss starts from a short wait
            priced = wire.streamed_mid(message)
            if priced is None:
                continue  # a HEARTBEAT (its time alone proves the connection alive)
            instrument, mid = priced
            if instrument not in self.subscribed:
                continue
            if mid is None:
                # Not tradeable now: no current price from here (the cache's last one
                # ages out, then the poll answers).
                self._prices.pop(instrument, None)
                continue
            self._prices[instrument] = mid
            self.cache.put(instrument, mid)

    def _forget(self) -> None:
        """No price vouched for: the connection is gone (or not made yet)."""
        self._prices.clear()
        self._heard_at = None
        self.subscribed = frozenset()


def _body(raw: bytes) -> dict[str, object]:
    message = stream.parse_line(raw)
    return {} if message is None else message
