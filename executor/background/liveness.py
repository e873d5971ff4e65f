"""Which workers are alive, and removing the consumers of those that are gone.

Each worker keeps a heartbeat key ``<prefix>:worker:<consumer>`` alive with a TTL of
``HEARTBEAT_TTL_BEATS`` beats; its value says who it is. It also stamps its last beat in
the zset ``<prefix>:workers``, from which every worker reads its live peers (the tracker
shares the open orders out among them). A consumer of the group whose
heartbeat has expired is gone. Its pending entries are reclaimed by the others after the
visibility timeout (reclaim.py); once it owns none, the sweep removes it from the group so
the group lists the workers that exist. The removal re-checks both conditions atomically
(infra/lua/forget.lua): XGROUP DELCONSUMER drops a consumer's pending entries, which must never
happen to an entry that still needs an outcome.

A live worker removed by mistake (its heartbeat late past the TTL on a starved machine)
loses nothing: it owned no entry, and its next read creates it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.keys import GROUP, Keys
from producer.replies import text

log = logging.getLogger(__name__)

HEARTBEAT_TTL_BEATS = 5  # missed beats before a worker counts as gone


class WorkerInfo(msgspec.Struct, kw_only=True):
    """The value of a heartbeat key: enough for an operator to find the process."""

    consumer: str
    host: str
    pid: int
    version: str
    started_at: int  # epoch ms
    mode: str = ""  # paper, practice or live ("": a worker from before modes)


class Liveness:
    def __init__(self, redis: aioredis.Redis, keys: Keys, info: WorkerInfo, *,
                 heartbeat_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.info = info
        self.consumer = info.consumer
        self.heartbeat_ms = heartbeat_ms
        self.ttl_ms = heartbeat_ms * HEARTBEAT_TTL_BEATS
        self._value = msgspec.json.encode(info)
        self._forget = redis.register_script(
            (resources.files("executor.infra") / "lua" / "forget.lua").read_text())

    async def beat(self) -> None:
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(self.consumer), self._value, px=self.ttl_ms)
            pipe.zadd(self.keys.workers, {self.consumer: now})
            # Long-gone workers leave the registry; recently gone ones are filtered by age.
            pipe.zremrangebyscore(self.keys.workers, "-inf", now - 100 * self.ttl_ms)
            await pipe.execute()

    async def peers(self) -> list[str]:
        """The workers alive now (heartbeat within the TTL), this one included, sorted."""
        since = int(time.time() * 1000) - self.ttl_ms
        raw: Any = await self.redis.zrangebyscore(self.keys.workers, since, "+inf")
        names = {text(n) for n in raw}
        names.add(self.consumer)
        return sorted(names)

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        while running():
            try:
                await self.beat()
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            await sleep(self.heartbeat_ms / 1000)

    async def alive(self, consumers: list[str]) -> list[bool]:
        if not consumers:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in consumers:
                pipe.exists(self.keys.worker(name))
            return [bool(n) for n in await pipe.execute()]

    async def sweep(self, min_idle_ms: int) -> list[str]:
        """Remove the consumers that are gone and own no pending entry; returns their names.
        ``min_idle_ms`` spares a consumer that read recently, whatever its heartbeat says."""
        consumers: Any = await self.redis.xinfo_consumers(self.keys.pending, GROUP)
        candidates = [
            text(c["name"]) for c in consumers
            if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) >= min_idle_ms
        ]
        candidates = [c for c in candidates if c != self.consumer]
        removed = [c for c, up in zip(candidates, await self.alive(candidates), strict=True)
                   if not up and await self._remove(c)]
        if removed:
            log.info("removed %d gone consumers from the group: %s", len(removed),
                     ", ".join(removed))
        return removed

    async def leave(self) -> bool:
        """On a clean stop: drop the heartbeat, and the consumer too if it owns nothing (what
        it still owns is reclaimed by the others, and the sweep removes it after)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(self.consumer))
            pipe.zrem(self.keys.workers, self.consumer)
            await pipe.execute()
        return await self._remove(self.consumer)

    async def _remove(self, consumer: str) -> bool:
        removed = await self._forget(keys=[self.keys.pending, self.keys.worker(consumer)],
                                     args=[GROUP, consumer])
        return bool(removed)
