"""The requests a worker is working on, kept claimed while it works.

The reclaimer of every worker takes over a pending entry idle longer than the visibility
timeout. A request can legitimately take longer than that here: a rate-limit wait, a broker
slow to answer (python-binance waits 10 s), a lookup window after an ambiguous answer
(Binance: 12 s), a send after it. So while a request is in hand its pending entry's idle
time is reset every third of the visibility timeout (infra/lua/hold.lua). Only a worker that
stops running (dead, or paused by GC or SIGSTOP) lets its entries go idle, and only then
are they reclaimed; even so the reclaiming worker never sends an order the first one may
still send (the send token, pipeline/steps/submit.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.keys import GROUP, Keys
from producer.replies import text

log = logging.getLogger(__name__)

_MAX_PER_CALL = 500  # entries per script call, so one call never blocks Redis long


class InFlight:
    def __init__(self, redis: aioredis.Redis, keys: Keys, consumer: str, *,
                 visibility_timeout_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.interval_s = visibility_timeout_ms / 3000
        self._held: Counter[str] = Counter()
        self._hold = redis.register_script(
            (resources.files("executor.infra") / "lua" / "hold.lua").read_text())

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._held

    def hold(self, request_ids: Iterable[str]) -> None:
        self._held.update(request_ids)

    def release(self, request_ids: Iterable[str]) -> None:
        self._held.subtract(request_ids)
        for rid in [r for r, n in self._held.items() if n <= 0]:
            del self._held[rid]

    async def refresh(self) -> list[str]:
        """Reset the idle time of every entry held; returns those another worker took over
        (or that are no longer pending), which are logged: their outcome is written by
        whoever finishes first, and the other's write is refused (infra/lua/finish.lua)."""
        ids = list(self._held)
        lost: list[str] = []
        for start in range(0, len(ids), _MAX_PER_CALL):
            chunk = ids[start:start + _MAX_PER_CALL]
            args: list[Any] = [GROUP, self.consumer, *chunk]
            lost += [text(i) for i in await self._hold(keys=[self.keys.pending], args=args)]
        if lost:
            log.info("%d requests in hand are no longer pending for this worker (answered, "
                     "or taken over after a stall)", len(lost))
        return lost

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        while running():
            await sleep(self.interval_s)
            if self._held:
                try:
                    await self.refresh()
                except RedisError as exc:
                    log.warning("could not keep the requests in hand claimed: %s", exc)
