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
  ``results_retention_ms`` or beyond ``results_maxlen`` (infra/lua/trim_results.lua),
  behind their registered readers the same way: the hashes ``<prefix>:completed:readers``
  and ``<prefix>:failed:readers`` (reader -> last entry id of that stream it durably
  processed). Their XADD (finish.lua) caps them at ``results_maxlen`` only while they have
  no reader, since the cap would drop what a reader has not read; with readers the cap is
  this pass's, behind them. ``orderstream_result_reader_lag_seconds`` shows a reader that
  stops advancing.
- ``<prefix>:pending`` loses what every consumer group has acknowledged
  (infra/lua/trim_pending.lua); an answered request is normally deleted at once by finish.lua,
  this catches what older versions or other tools acknowledged without deleting.

Trims are approximate (whole stream nodes, ``MINID ~``) and bounded per call
(``TRIM_LIMIT`` entries), so no call holds Redis long; a pass repeats them until one
removes nothing, up to ``MAX_CALLS``.
"""

from __future__ import annotations

import logging
import re
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


def _trim_script(name: str) -> str:
    # The trim scripts share their entry id helpers, prepended (Lua has no import here).
    return _script("stream_ids.lua") + _script(name)


def result_streams(keys: Keys) -> dict[str, tuple[str, str]]:
    """Each result stream by its short name: (stream key, its readers hash)."""
    return {"completed": (keys.completed, keys.completed_readers),
            "failed": (keys.failed, keys.failed_readers)}


class Retention:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, events_retention_ms: int,
                 results_retention_ms: int, interval_ms: int, clock: Callable[[], int],
                 results_maxlen: int = 0, trimmed: Trimmed = lambda _, __: None) -> None:
        self.redis = redis
        self.keys = keys
        self.events_retention_ms = events_retention_ms
        self.results_retention_ms = results_retention_ms
        self.results_maxlen = results_maxlen  # 0: no cap
        self.interval_s = interval_ms / 1000
        self.clock = clock
        self.trimmed = trimmed
        self._events = redis.register_script(_trim_script("trim_events.lua"))
        self._results = redis.register_script(_trim_script("trim_results.lua"))
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
        for name, (stream, readers_key) in result_streams(k).items():
            removed[name] = await self._repeat(self._trim_results(stream, readers_key), cutoff)
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

    def _trim_results(self, stream: str, readers_key: str) -> Callable[[str], Awaitable[int]]:
        async def trim(cutoff: str) -> int:
            return int(await self._results(keys=[stream, readers_key],
                                           args=[cutoff, TRIM_LIMIT, self.results_maxlen]))
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
    ages = await _ages(redis, keys.events, [(keys.events, last) for last in found.values()])
    return dict(zip(found, ages, strict=True))


async def result_reader_lags(redis: aioredis.Redis,
                             keys: Keys) -> dict[tuple[str, str], float]:
    """Per (result stream name, registered reader), as ``reader_lags``: the age in seconds
    of the oldest entry of that stream it has not processed; 0 when it has them all."""
    streams = result_streams(keys)
    async with redis.pipeline(transaction=False) as pipe:
        for _, readers_key in streams.values():
            pipe.hgetall(readers_key)
        hashes = await pipe.execute()
    wanted = {(name, text(reader)): (stream, text(last))
              for (name, (stream, _)), raw in zip(streams.items(), hashes, strict=True)
              for reader, last in raw.items()}
    if not wanted:
        return {}  # no reader: no round trip more
    ages = await _ages(redis, keys.completed, list(wanted.values()))
    return dict(zip(wanted, ages, strict=True))


ENTRY_ID = re.compile(r"[0-9]+-[0-9]+")  # what stream_ids.lua's parse() reads as an entry id


def _after(last: str) -> str:
    # A position that is not an entry id holds everything (the trims' fail safe), so its
    # reader is as far behind as the oldest entry.
    return f"({last}" if ENTRY_ID.fullmatch(last) else "-"


async def _ages(redis: aioredis.Redis, home_key: str,
                positions: list[tuple[str, str]]) -> list[float]:
    """Per (stream, last entry id processed), the age in seconds of the oldest entry after
    it, on the clock of the node holding ``home_key`` (whose clock stamped the entry ids;
    every key of a deployment shares its slot); 0 when there is none."""
    home = await home_node(redis, home_key)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.execute_command("TIME", **home)  # a cluster pipeline has no time()
        for stream, last in positions:
            pipe.xrange(stream, min=_after(last), count=1)
        seconds, *firsts = await pipe.execute()
    now_ms = int(seconds[0]) * 1000 + int(seconds[1]) // 1000
    return [max(now_ms - _stamp_ms(first, now_ms), 0) / 1000 for first in firsts]


def _stamp_ms(entries: Any, default: int) -> int:
    """The ms part of the first entry's id (the time it was added), else ``default``."""
    return int(text(entries[0][0]).partition("-")[0]) if entries else default
