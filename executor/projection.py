"""``orderstream projector``: the positions fold (background/projector.py) in a process of
its own, so that the workers' event loops spend nothing on it.

In a worker the fold is a quarter of the CPU an order costs at a burst, and a page of it
(a few milliseconds) is time every request of that event loop waits. Run one or two of
these processes (they take turns under the fold's lease, as workers do) and set
``project_positions = false`` on the workers; a worker that still projects takes its turns
too, and every fill counts exactly once whoever folds it.

What it needs of the brokers, each symbol's base and quote assets, it reads from Redis
(Keys.assets, which every worker writes before an account's first order of a symbol:
infra/store.py ``note_assets``; and the paper accounts' symbols), never from the brokers
themselves: it opens no broker session and holds no credentials. It counts the fills it
folds (``orderstream_fills_total`` and the notional) and serves them on the workers'
metrics port setting, with /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time

import redis.asyncio as aioredis
from aiohttp import web

from producer.keys import Keys

from .background.projector import Projector
from .config import Settings, prefixes
from .infra.connection import connect
from .infra.metrics import Metrics, start_http
from .infra.tasks import supervised
from .operations.snapshot import fold_assets

log = logging.getLogger(__name__)

# Assets not known for a pair a fill names are read again at most this often: a pair no
# worker could name the assets of must not cost a read per page.
_REREAD_UNKNOWN_S = 5.0


class StoredAssets:
    """Each (account, symbol)'s base and quote assets as Redis holds them (what the workers
    wrote, over the paper accounts' symbols), read at the first fill and again when a fill
    names a pair not known yet."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.quotes: dict[tuple[str, str], str] = {}
        self.bases: dict[tuple[str, str], str] = {}
        # Pairs a read did not know, and when: looked for again only after a while.
        self._missing: dict[tuple[str, str], float] = {}

    async def learn(self, pairs: set[tuple[str, str]]) -> None:
        now = time.monotonic()
        unknown = [p for p in pairs if p not in self.quotes and p not in self.bases]
        # A pair seen for the first time is read at once: its worker recorded its assets
        # before writing its first order, so before any fill of it.
        if not any(now - self._missing.get(p, -_REREAD_UNKNOWN_S) >= _REREAD_UNKNOWN_S
                   for p in unknown):
            return
        self.quotes, self.bases = await fold_assets(self.redis, self.keys, self.settings)
        missing = [p for p in unknown if p not in self.quotes and p not in self.bases]
        for pair in unknown:
            self._missing.pop(pair, None)
        self._missing.update((p, now) for p in missing)
        if missing:
            log.warning("assets of %s unknown: their fills are folded with no quote or base "
                        "asset (a position gross of fees paid in its base asset)",
                        ", ".join(f"{a}:{s}" for a, s in sorted(missing)))

    def quote(self, account: str, symbol: str) -> str | None:
        return self.quotes.get((account, symbol))

    def base(self, account: str, symbol: str) -> str | None:
        return self.bases.get((account, symbol))


class ProjectorProcess:
    def __init__(self, settings: Settings, *, partition: int | None = None,
                 redis: aioredis.Redis | None = None, metrics: Metrics | None = None,
                 serve_metrics: bool = True) -> None:
        self.settings = settings
        self.redis = redis or connect(settings.redis)
        self.metrics = metrics or Metrics()
        self.serve_metrics = serve_metrics
        self.name = f"projector-{socket.gethostname()}-{os.getpid()}"
        self.projectors = [self._projector(Keys(prefix))
                           for prefix in prefixes(settings, partition)]
        self.metrics_port: int | None = None
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def _projector(self, keys: Keys) -> Projector:
        assets = StoredAssets(self.redis, keys, self.settings)
        accounts = self.settings.accounts
        return Projector(self.redis, keys, self.name, quote_asset=assets.quote,
                         base_asset=assets.base, learn=assets.learn,
                         on_fills=lambda fills: self.metrics.fills_recorded(fills, accounts),
                         day_offset_ms=self.settings.risk.day_offset_ms)

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        w = self.settings.worker
        if self.serve_metrics:
            self._runner, self.metrics_port = await start_http(
                self.metrics.registry, w.metrics_host, w.metrics_port,
                ready=lambda: not self._stopping.is_set())
            log.info("metrics on http://%s:%d/metrics", w.metrics_host, self.metrics_port)
        log.info("projector %s folding positions of %s", self.name,
                 ", ".join(p.keys.events for p in self.projectors))
        try:
            await asyncio.gather(*(supervised(
                f"positions {p.keys.events}", functools.partial(p.run, self._running, self._sleep),
                running=self._running, sleep=self._sleep,
                failed=lambda _: self.metrics.background_errors.labels("positions").inc())
                for p in self.projectors))
        finally:
            for projector in self.projectors:
                with contextlib.suppress(Exception):
                    # Given up on a clean stop, so another projector takes over at once.
                    await projector.release()
            if self._runner is not None:
                await self._runner.cleanup()
            await self.redis.aclose()

    def _running(self) -> bool:
        return not self._stopping.is_set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
