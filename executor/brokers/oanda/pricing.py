"""The pricing stream of an OANDA account: the reference prices (the mid, wire.mid_of) of
the instruments the adapter has been asked prices for, as OANDA moves them, instead of a
``GET pricing`` whenever the cached one is older than ``price_cache_ms``. The lifecycle
(lazy subscription, restarts, backoff, health) is the shared ``PriceStream``
(price_stream.py); OANDA's wire is here.

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
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from ..price_stream import PriceStream, StreamLost
from ..prices import PriceCache
from . import stream, wire

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)


class PricingStream(PriceStream):
    def __init__(self, account: str, timeout_ms: int, connect_timeout_ms: int,
                 cache: PriceCache, metrics: Metrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(f"oanda-pricing:{account}", account,
                         f"oanda {account}: pricing stream", cache, metrics, log=log,
                         clock=clock)
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self._session: aiohttp.ClientSession | None = None
        self._url = ""

    @property
    def instruments(self) -> set[str]:
        """The instruments asked for (the next connection's set)."""
        return self.symbols

    def start(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session, self._url = session, url
        self._start()

    def _alive(self) -> bool:
        # OANDA sends a PRICE only when the price moves: silence is measured between any
        # lines (heartbeats included), and a silent stream is dead even before the reader
        # notices.
        return (self._heard_at is not None
                and (self.clock() - self._heard_at) * 1000 < self.timeout_ms)

    async def _open(self, names: frozenset[str]) -> None:
        session = self._session
        if session is None:
            raise StreamLost("not started")
        # No total timeout: silence is measured between lines (timeout_ms).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_ms / 1000)
        params = {"instruments": ",".join(sorted(names)), "snapshot": "true"}
        try:
            async with session.get(self._url, params=params, timeout=timeout) as response:
                if response.status >= 300:
                    raw = await response.read()
                    raise StreamLost(wire.describe(response.status, _body(raw)))
                self._opened()
                await self._read(response)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Named by its type only: its text can carry the URL (the account id).
            raise StreamLost(f"connection failed ({type(exc).__name__})") from None

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        while True:
            try:
                line = await asyncio.wait_for(response.content.readline(),
                                              self.timeout_ms / 1000)
            except TimeoutError:
                raise StreamLost(f"no heartbeat for {self.timeout_ms} ms") from None
            if not line:
                raise StreamLost("closed by the server")
            message = stream.parse_line(line)
            if message is None:
                continue
            self._heard()
            priced = wire.streamed_mid(message)
            if priced is None:
                continue  # a HEARTBEAT (its time alone proves the connection alive)
            # A mid of None: not tradeable now, no current price from here.
            self._priced(*priced)


def _body(raw: bytes) -> dict[str, object]:
    message = stream.parse_line(raw)
    return {} if message is None else message
