"""A broker's market data stream as the source of its reference prices, broker-neutral: the
symbols it has been asked prices for, subscribed lazily, reconnected when lost. The wire
(how to connect, what a message says) is the broker's: OANDA's pricing stream
(oanda/pricing.py), Binance's market streams (binance/market.py), Alpaca's market data
streams (alpaca/quotes.py) subclass ``PriceStream`` and implement ``_open`` and ``_alive``.

It subscribes to nothing until asked: ``add`` (the first ``reference_price`` of a symbol,
which the broker answers from its cache or a poll) adds it and restarts the connection with
the larger set, after ``SETTLE_S`` so that the symbols a pass of the emulator asks for one
after another come in one restart. A venue that takes new symbols on a live connection
(Alpaca, which allows an account one connection per feed) implements ``_extend`` instead of
being restarted, and tells the set it holds with ``_resubscribed``.

``current`` is the price of a symbol while the stream vouches for it: a price came for it
on this connection (or was ``seed``-ed by a poll made while it was up), and the connection
is alive as the broker's wire defines it. Each streamed price is also put in the broker's
``PriceCache``, so that while the stream reconnects the cache answers for
``price_cache_ms`` and then the broker polls, as without a stream.

A broker can ``pause`` the stream (another worker streams the account's prices: Alpaca
allows one connection) and ``resume`` it: paused, it holds no connection (the last one is
closed in the background, and a resumed stream connects only once it is), prices are polled
as without a stream, and its health is neither logged nor exported (``StreamHealth.off``).

A connection that ends, fails or falls silent is lost (``StreamHealth`` with
``feed="prices"``: the gauge at 0, each attempt counted, a log line at a low rate) and
reconnected after a doubling backoff with jitter (0.5 s up to 30 s), reset only once a
message came (a stream that dies at once is not hammered). A subclass raises ``StreamLost``
with a text that is safe to log: never a URL, a header or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from .prices import PriceCache
from .stream_health import Backoff, StreamHealth

if TYPE_CHECKING:
    from ..infra.metrics import Metrics

# After a new symbol is asked for, how long to gather others before reconnecting: every
# reconnect is a new connection, and venues limit those (OANDA: 2 a second per IP;
# Binance: 300 every 5 minutes per IP).
SETTLE_S = 0.1


class StreamLost(Exception):
    """The connection is over; ``str``: why (safe to log)."""


class PriceStream:
    def __init__(self, name: str, account: str, what: str, cache: PriceCache,
                 metrics: Metrics | None, *, log: logging.Logger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name  # "<broker>-prices:<account>": the task's name and the log's
        self.account = account
        self.health = StreamHealth(
            account, metrics, logger=log, feed="prices", what=what,
            meanwhile="reference prices are polled until it is back (reconnecting after a "
                      "backoff")
        self.cache = cache
        self.log = log
        self.clock = clock
        self.backoff = Backoff(jitter=0.5)
        self.symbols: set[str] = set()  # asked for: the next connection's set
        self.subscribed: frozenset[str] = frozenset()  # the set of the connection now
        self.connects = 0  # connections made (the venue accepted them)
        self._prices: dict[str, Decimal] = {}  # this connection's prices
        self._heard_at: float | None = None  # the last message of this connection (clock)
        self._generation = 0  # connections made and sets changed on one: seed's token
        self._up = False
        self._wanted = asyncio.Event()  # set: a symbol the connection lacks
        self._connection: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # paused loops still closing

    # -- what the broker asks ---------------------------------------------------------------

    def current(self, symbol: str) -> Decimal | None:
        """The price of ``symbol`` while the stream vouches for it (see the module);
        None: ask elsewhere (the cache, then a poll)."""
        price = self._prices.get(symbol)
        if price is None or not self._up or not self._alive():
            return None
        return price

    def add(self, symbol: str) -> None:
        """Subscribe to ``symbol`` too (the connection restarts with the larger set, unless
        the venue takes it on the live one: ``_extend``)."""
        if symbol in self.symbols:
            return
        self.symbols.add(symbol)
        self._wanted.set()
        connection = self._connection
        if connection is not None and not connection.done() and not self._extend(symbol):
            connection.cancel()  # its set lacks the new symbol

    async def price(self, symbol: str,
                    poll: Callable[[], Awaitable[Decimal | None]]) -> Decimal | None:
        """A broker's ``reference_price`` with this stream: the streamed price while the
        stream vouches for one, else the cache's, else ``poll``-ed now, which seeds the
        stream (see ``seed``). The first ask of a symbol subscribes the stream to it."""
        streamed = self.current(symbol)
        if streamed is not None:
            return streamed
        self.add(symbol)
        connection = self.connection()

        async def polled() -> Decimal | None:
            price = await poll()
            if price is not None:
                self.seed(symbol, price, connection)
            return price
        return await self.cache.get(symbol, polled)

    def connection(self) -> int | None:
        """The connection up now (an opaque token for ``seed``), None when none is."""
        return self._generation if self._up else None

    def seed(self, symbol: str, price: Decimal, connection: int | None) -> None:
        """A price polled after ``connection`` (``connection()`` before the poll) was up:
        what the venue said since came on it, so the poll is the symbol's price on this
        connection until the stream tells a newer one. For a venue that sends no snapshot
        on connect (Binance's trade streams), this spares a quiet symbol a poll every
        ``price_cache_ms``."""
        if (connection is None or connection != self.connection()
                or symbol not in self.subscribed or symbol in self._prices):
            return
        self._prices[symbol] = price

    # -- for the broker's wire --------------------------------------------------------------

    def _alive(self) -> bool:
        """Whether the connection is alive (between messages)."""
        raise NotImplementedError

    def _extend(self, symbol: str) -> bool:
        """Subscribe the live connection to ``symbol`` too; False: it cannot (the
        connection is restarted with the larger set)."""
        return False

    async def _open(self, names: frozenset[str]) -> None:
        """One connection to ``names``: call ``_opened`` once the venue accepted it, then
        ``_heard`` at every message and ``_priced`` at every price; return or raise
        ``StreamLost`` when it is over."""
        raise NotImplementedError

    def _opened(self) -> None:
        self.connects += 1
        self._generation += 1
        self._up = True
        self.health.up()

    def _resubscribed(self, names: frozenset[str]) -> None:
        """The set the venue says the connection holds now (its answer to a subscription
        made on it). A poll begun before cannot seed: it may predate a new symbol's first
        quote, which the venue would not send again."""
        self.subscribed = names
        self._generation += 1
        for symbol in set(self._prices) - names:
            del self._prices[symbol]

    def _heard(self) -> None:
        self._heard_at = self.clock()
        self.backoff.reset()  # it speaks: the next loss starts from a short wait

    def _priced(self, symbol: str, price: Decimal | None) -> None:
        """A message's price of ``symbol``; None: it has none that can be used now (the
        cache's last one ages out, then the poll answers)."""
        if symbol not in self.subscribed:
            return
        if price is None:
            self._prices.pop(symbol, None)
            return
        self._prices[symbol] = price
        self.cache.put(symbol, price)

    # -- lifecycle --------------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)
            if self.symbols:
                self._wanted.set()  # asked for while paused: connect to them now

    @property
    def running(self) -> bool:
        """Whether the stream runs (started and not paused)."""
        return self._task is not None

    def resume(self) -> None:
        """Run again after ``pause`` (once the paused connection is closed): the symbols
        asked for meanwhile are subscribed on the next connection."""
        self.health.on()
        self._start()

    def pause(self) -> None:
        """Stop streaming now, without waiting: the connection is closed in the background
        (``close`` waits for it); prices are polled as without a stream, the symbols asked
        are still kept, and nothing is logged or exported about the stream until
        ``resume`` (``StreamHealth.off``)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if self._connection is not None:
                self._connection.cancel()  # no price of it is taken from now on
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._forget()
        self.backoff.reset()
        self.health.off()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
        await self._stopped()
        self._forget()

    async def _stopped(self) -> None:
        """Once the connections of paused loops are closed (within 5 s)."""
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=5)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        # The connection of a loop paused just before is closed first: at a venue that
        # allows one connection (Alpaca), a new one next to it would be refused.
        await self._stopped()
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                await asyncio.sleep(max(SETTLE_S, self.backoff.delay()))
                self._wanted.clear()  # what was asked meanwhile is in this set too
                names = frozenset(self.symbols)
                self._connection = asyncio.create_task(self._connect(names))
                await asyncio.wait({self._connection})
                if self._connection.cancelled():
                    continue  # restarted for a new symbol (_wanted is set)
                error = self._connection.exception()
                if error is None:
                    error = StreamLost("closed by the server")
                if isinstance(error, StreamLost):
                    self.backoff.failed()
                    self.health.lost(str(error))
                else:  # a bug of ours: told, and tried again later
                    self.backoff.failed()
                    self.log.error("%s failed (%s: %s)", self.health.what,
                                   type(error).__name__, error)
                self._wanted.set()  # always reconnect
        finally:
            connection = self._connection
            if connection is not None and not connection.done():
                connection.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection

    async def _connect(self, names: frozenset[str]) -> None:
        self._forget()
        self.subscribed = names
        try:
            await self._open(names)
        finally:
            self._forget()

    def _forget(self) -> None:
        """No price vouched for: the connection is gone (or not made yet)."""
        self._prices.clear()
        self._heard_at = None
        self._up = False
        self.subscribed = frozenset()
