"""What the pipeline steps share: settings, the store, the brokers, the clock, metrics."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from ..brokers.base import Broker
from ..config import Settings
from ..infra.clock import wall_clock_ms
from ..infra.metrics import Metrics
from ..infra.store import Store
from .job import Job


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    brokers: dict[str, Broker]
    metrics: Metrics
    worker: str
    clock: Callable[[], int] = field(default=wall_clock_ms)
    _quotes: dict[tuple[str, str], str] = field(default_factory=dict)
    _bases: dict[tuple[str, str], str] = field(default_factory=dict)
    # Send tokens (``send_token``): a counter under a salt drawn once per process.
    _salt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _deliveries: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send_token(self, job: Job) -> str:
        """The job's delivery's send token (infra/lua/send.lua), made once, for all its
        sends: another delivery of the same request (even in this process) must not count
        as the holder, this one's retries must. The salt tells apart a worker restarted
        under the same name, whose counter starts at 1 again; a uuid4 per order was a
        system call each (os.urandom)."""
        if not job.send_token:
            job.send_token = f"{self.worker}:{job.request_id}:{self._salt}{next(self._deliveries)}"
        return job.send_token

    def quote_asset(self, account: str, symbol: str) -> str | None:
        """A symbol's quote asset at its account's broker (None: unknown account or symbol).
        Remembered once known, as it never changes; unknown is asked again, since a broker
        may learn its symbols later (Binance's exchangeInfo)."""
        quote = self._quotes.get((account, symbol))
        if quote is None:
            broker = self.brokers.get(account)
            quote = None if broker is None else broker.quote_asset(symbol)
            if quote is not None:
                self._quotes[(account, symbol)] = quote
        return quote

    def base_asset(self, account: str, symbol: str) -> str | None:
        """A symbol's base asset at its account's broker, as ``quote_asset`` (a fee charged
        in it reduces the position: positions.apply_trade)."""
        base = self._bases.get((account, symbol))
        if base is None:
            # getattr: an adapter written before the protocol had it knows no base asset.
            ask = getattr(self.brokers.get(account), "base_asset", None)
            base = None if ask is None else ask(symbol)
            if base is not None:
                self._bases[(account, symbol)] = base
        return base

    async def reference_prices(self, wanted: Sequence[tuple[str, str]]
                               ) -> list[Decimal | BaseException | None]:
        """The reference price of each (account, symbol) at its account's broker, all asked
        at once; an error raised asking is returned in its place (None: no such account,
        or the broker knows no price)."""
        async def ask(account: str, symbol: str) -> Decimal | None:
            broker = self.brokers.get(account)
            return None if broker is None else await broker.reference_price(symbol)
        if len(wanted) == 1:  # the usual batch: no task to make and wait for
            try:
                return [await ask(*wanted[0])]
            except Exception as exc:
                return [exc]
        return list(await asyncio.gather(*(ask(a, s) for a, s in wanted),
                                         return_exceptions=True))
