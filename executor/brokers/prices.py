"""Reference prices an adapter has asked its broker for, reused for a while: risk asks for
one with every order, and each ask is a request that counts against the broker's limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

from .base import BrokerError

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PriceCache:
    def __init__(self, what: str, ttl_ms: int, clock: Callable[[], int] = _now_ms) -> None:
        self.what = what  # "<broker> <account>", for the log
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._prices: dict[str, tuple[int, Decimal]] = {}  # symbol -> (fetched at, price)

    def last(self, symbol: str) -> Decimal | None:
        """The last price known, however old (None: never fetched)."""
        cached = self._prices.get(symbol)
        return None if cached is None else cached[1]

    def fresh(self, symbol: str) -> Decimal | None:
        """The price fetched less than ``ttl_ms`` ago (None: none that fresh)."""
        cached = self._prices.get(symbol)
        if cached is None or self.clock() - cached[0] >= self.ttl_ms:
            return None
        return cached[1]

    def put(self, symbol: str, price: Decimal) -> None:
        """A price fetched now by another call (all of a venue's tickers at once)."""
        self._prices[symbol] = (self.clock(), price)

    async def get(self, symbol: str,
                  fetch: Callable[[], Awaitable[Decimal | None]]) -> Decimal | None:
        """The price fetched less than ``ttl_ms`` ago, else a new one; None when the broker
        has none or cannot be asked now (risk then denies what needs it)."""
        now = self.clock()
        cached = self._prices.get(symbol)
        if cached is not None and now - cached[0] < self.ttl_ms:
            return cached[1]
        try:
            price = await fetch()
        except BrokerError as exc:
            log.info("%s: no price for %s (%s)", self.what, symbol, exc)
            return None
        if price is not None:
            self._prices[symbol] = (now, price)
        return price
