"""Reclaiming requests that a worker took and never finished (it died, hung or lost Redis).

Every ``visibility_timeout_ms / 2`` each worker looks for entries of the group idle longer
than the visibility timeout, claims them with XCLAIM (which re-checks the idle time, so two
workers never both get one) and runs them through the same pipeline as new ones. There the
order records make redoing safe: an order already persisted is looked up at the broker by
client id before anything is sent (see steps/submit.py).

An entry delivered ``max_deliveries`` times without an outcome is poison: it is
dead-lettered to ``<prefix>:failed`` with reason ``poison``, its raw fields kept on the
result entry as ``raw:<field>``, and acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.contract import Action, ReasonCode, Result, ResultStatus, encode
from producer.keys import GROUP, Keys

log = logging.getLogger(__name__)

Process = Callable[[Sequence[tuple[Any, Any]]], Awaitable[None]]


def poison_result(entry_id: str, deliveries: int, worker: str, now: int) -> Result:
    return Result(
        request_id=entry_id,
        action=Action.PLACE,
        status=ResultStatus.FAILED,
        reason_code=ReasonCode.POISON,
        reason=(f"delivered {deliveries} times without an outcome; dead-lettered, its raw "
                "fields are kept on this entry as raw:<field>"),
        enqueued_at=int(entry_id.partition("-")[0]),
        received_at=now,
        completed_at=now,
        worker=worker,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Reclaimer:
    def __init__(self, redis: aioredis.Redis, keys: Keys, consumer: str, *,
                 visibility_timeout_ms: int, max_deliveries: int, batch_size: int,
                 results_maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.idle_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.results_maxlen = results_maxlen

    async def once(self, process: Process) -> int:
        """One pass: claim what is idle too long, dead-letter poison, process the rest.
        Returns how many entries were claimed."""
        k = self.keys
        pending: Any = await self.redis.xpending_range(
            k.pending, GROUP, min="-", max="+", count=self.batch_size, idle=self.idle_ms)
        if not pending:
            return 0
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        claimed: Any = await self.redis.xclaim(
            k.pending, GROUP, self.consumer, self.idle_ms, list(deliveries))
        live: list[tuple[Any, Any]] = []
        poison: list[tuple[str, Mapping[bytes, bytes], int]] = []
        gone: list[str] = []
        for entry_id, fields in claimed:
            rid = _text(entry_id)
            times = deliveries.get(rid, 0) + 1  # XCLAIM counted one more delivery
            if fields is None:
                gone.append(rid)  # trimmed or deleted while pending: nothing to run
            elif times > self.max_deliveries:
                poison.append((rid, fields, times))
            else:
                live.append((entry_id, fields))
        if poison or gone:
            await self._dead_letter(poison, gone)
        if live:
            log.warning("reclaimed %d requests idle over %d ms", len(live), self.idle_ms)
            await process(live)
        return len(claimed)

    async def _dead_letter(self, poison: list[tuple[str, Mapping[bytes, bytes], int]],
                           gone: list[str]) -> None:
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            for rid, fields, times in poison:
                entry: dict[Any, Any] = {
                    "data": encode(poison_result(rid, times, self.consumer, now)),
                    "request_id": rid,
                    "client_order_id": "",
                }
                for name, value in fields.items():
                    entry[b"raw:" + (name if isinstance(name, bytes) else name.encode())] = value
                pipe.xadd(self.keys.failed, entry, maxlen=self.results_maxlen,
                          approximate=True)
            for rid in gone:
                result = poison_result(rid, 0, self.consumer, now)
                result.reason = "the entry was deleted from the stream before it was executed"
                pipe.xadd(self.keys.failed, {"data": encode(result), "request_id": rid,
                                             "client_order_id": ""},
                          maxlen=self.results_maxlen, approximate=True)
            pipe.xack(self.keys.pending, GROUP, *[r for r, _, _ in poison], *gone)
            await pipe.execute()
        for rid, _, times in poison:
            log.error("request %s dead-lettered as poison after %d deliveries", rid, times)

    async def run(self, process: Process, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        interval = max(self.idle_ms / 2000, 0.1)
        while running():
            try:
                while running() and await self.once(process) >= self.batch_size:
                    pass  # a full page: there may be more right away
            except RedisError as exc:
                log.warning("reclaim pass failed: %s", exc)
            await sleep(interval)
