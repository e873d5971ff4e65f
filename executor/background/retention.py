"""Retention: the streams keep what someone still needs and lose the rest, so Redis memory
follows the load, not the age of the deployment (redis.conf has ``noeviction``: a Redis
that fills stops every worker).

Every ``retention_interval_ms`` each worker runs one pass (any worker, at any time, safely:
each step is one atomic command or script that decides from what Redis holds):

- ``<prefix>:events`` is trimmed behind everyone who must read it (infra/lua/trim_events.lua):
  an entry goes once it is older than ``events_retention_ms`` AND the positions fold has
  folded it AND every registered reader has processed it. A reader (a SQL archive, say)
  registers by writing the last entry id it has durably processed into the hash
  ``<prefix>:events:readers`` (``HSET orders:events:readers archive 0-0`` before it
  starts, then after each durable step) and unregisters with HDEL. A reader that stops
  advancing holds the trim, and the log grows: ``orderstream_event_reader_lag_seconds``
  shows it (probes.py) and an alert fires (deploy/prometheus/alerts.yml). The same
  script copies the positions as a checkpoint the log never trims past, so ``replay``
  can still check them.
- ``<prefix>:completed`` and ``<prefix>:failed`` lose the results older than
  ``results_retention_ms`` (their XADD also caps them at ``results_maxlen``).
- ``<prefix>:pending`` loses what every consumer group has acknowledged
  (infra/lua/trim_pending.lua); an answered request is normally deleted at once by finish.lua,
  this catches what older versions or other tools acknowledged without deleting.

Trims are approximate (whole stream nodes, ``MINID ~``) and bounded per call
(``TRIM_LIMIT`` entries), so no call holds Redis long; a pass repeats them until one
removes nothing, up to ``MAX_CALLS``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.connect import home_node
from producer.keys import Keys
from producer.replies import text

log = logging.getLogger(__name__)

TRIM_LIMIT = 10_000  # entries one trim call may remove
MAX_CALLS = 100  # trim calls per stream per pass: a pass removes at most 1M entries each

Trimmed = Callable[[str, int], None]  # (stream name, entries removed), for the metrics


def _script(name: str) -> str:
    return (resources.files("executor.infra") / "lua" / name).read_text()


class Retention:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, events_retention_ms: int,
                 results_retention_ms: int, interval_ms: int, clock: Callable[[], int],
                 trimmed: Trimmed = lambda _, __: None) -> None:
        self.redis = redis
        self.keys = keys
        self.events_retention_ms = events_retention_ms
        self.results_retention_ms = results_retention_ms
        self.interval_s = interval_ms / 1000
        self.clock = clock
        self.trimmed = trimmed
        self._events = redis.register_script(_script("trim_events.lua"))
        self._pending = redis.register_script(_script("trim_pending.lua"))

    async def once(self) -> dict[str, int]:
        """One pass; returns the entries removed per stream ("events", "completed", ...)."""
        k = self.keys
        now = self.clock()
        removed = {
            "events": await self._repeat(self._trim_events, f"{now - self.events_retention_ms}-0"),
            "pending": await self._repeat(self._trim_pending, ""),
        }
        cutoff = f"{now - self.results_retention_ms}-0"
        for name, stream in (("completed", k.completed), ("failed", k.failed)):
            removed[name] = await self._repeat(self._trim_results(stream), cutoff)
        for name, n in removed.items():
            if n:
                self.trimmed(name, n)
        return removed

    async def _repeat(self, trim: Callable[[str], Awaitable[int]], arg: str) -> int:
        # Until a call removes nothing: an approximate trim removes whole nodes, so a call
        # that stopped at its limit may return a little less than the limit.
        total = 0
        for _ in range(MAX_CALLS):
            n = await trim(arg)
            total += n
            if n == 0:
                break
        return total

    async def _trim_events(self, cutoff: str) -> int:
        k = self.keys
        reply: Any = await self._events(
            keys=[k.events, k.positions_cursor, k.events_readers, k.positions,
                  k.positions_base, k.positions_base_cursor, k.events_trimmed],
            args=[cutoff, TRIM_LIMIT])
        return int(reply[0])

    async def _trim_pending(self, _: str) -> int:
        return int(await self._pending(keys=[self.keys.pending], args=[TRIM_LIMIT]))

    def _trim_results(self, stream: str) -> Callable[[str], Awaitable[int]]:
        async def trim(cutoff: str) -> int:
            return int(await self.redis.xtrim(stream, minid=cutoff, approximate=True,
                                              limit=TRIM_LIMIT))
        return trim

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        while running():
            try:
                await self.once()
            except RedisError as exc:
                log.warning("retention pass failed: %s", exc)
            await sleep(self.interval_s)


POSITIONS = "positions"  # the positions fold, the reader every deployment has


async def readers(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    """Every reader of the events and the last entry it has processed: the positions fold
    (its cursor; "" before its first fold) and each registered reader (a registered reader
    named "positions" is shown as the fold is; both hold the trim)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.positions_cursor)
        pipe.hgetall(keys.events_readers)
        cursor, raw = await pipe.execute()
    out = {text(name): text(last) for name, last in raw.items()}
    out[POSITIONS] = "" if cursor is None else text(cursor)
    return out


async def reader_lags(redis: aioredis.Redis, keys: Keys) -> dict[str, float]:
    """Per reader, the age in seconds (on the Redis clock, which stamps the entry ids) of
    the oldest events entry it has not processed; 0 when it has them all."""
    found = await readers(redis, keys)
    home = await home_node(redis, keys.events)  # whose clock stamped the entry ids
    async with redis.pipeline(transaction=False) as pipe:
        pipe.execute_command("TIME", **home)  # a cluster pipeline has no time()
        for last in found.values():
            pipe.xrange(keys.events, min=f"({last}" if last else "-", count=1)
        seconds, *firsts = await pipe.execute()
    now_ms = int(seconds[0]) * 1000 + int(seconds[1]) // 1000
    out: dict[str, float] = {}
    for name, first in zip(found, firsts, strict=True):
        at = int(text(first[0][0]).partition("-")[0]) if first else now_ms
        out[name] = max(now_ms - at, 0) / 1000
    return out
