"""Reclaiming requests that a worker took and never finished (it died, hung or lost Redis).

Every ``visibility_timeout_ms / 2`` each worker runs XAUTOCLAIM over the group for entries
idle longer than the visibility timeout (the claim re-checks the idle time, so two workers
never both get one) and runs them through the same pipeline as new ones. There the order
records make redoing safe: an order already persisted is looked up at the broker by client
id before anything is sent (see steps/submit.py).

An entry delivered more than ``max_deliveries`` times without an outcome is poison: it is
dead-lettered to ``<prefix>:failed`` with reason ``poison``, its raw fields kept on the
result entry as ``raw:<field>``, acknowledged and deleted from the requests stream (as
every answered request is, lua/finish.lua). An entry deleted from the stream while it was
pending (an operator's XDEL, or a MAXLEN trim by a producer; workers delete only what they
acked) cannot be executed: Redis 7 reports its id, and it gets a ``poison`` result saying
so, so that its producer is not left waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from producer.contract import Action, ReasonCode, Result, ResultStatus, encode
from producer.keys import GROUP, Keys
from producer.replies import text

from .logs import about

log = logging.getLogger(__name__)

Process = Callable[[Sequence[tuple[Any, Any]]], Awaitable[None]]
Record = Callable[[Result], None]
DeadLettered = Callable[[str, int], None]  # ("poison" or "deleted", how many) once written

_DONE = "0-0"  # XAUTOCLAIM's cursor once it has scanned the whole pending list


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


def gone_result(entry_id: str, worker: str, now: int) -> Result:
    result = poison_result(entry_id, 0, worker, now)
    result.reason = "the entry was deleted from the stream before it was executed"
    return result


class Reclaimer:
    def __init__(self, redis: aioredis.Redis, keys: Keys, consumer: str, *,
                 visibility_timeout_ms: int, max_deliveries: int, batch_size: int,
                 results_maxlen: int, record: Record = lambda _: None,
                 dead_lettered: DeadLettered = lambda _, __: None) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.idle_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.results_maxlen = results_maxlen
        self.record = record  # told of each dead letter written, for the metrics
        self.dead_lettered = dead_lettered
        self.interval_s = max(visibility_timeout_ms / 2000, 0.1)

    async def sweep(self, process: Process) -> int:
        """Claim and process every entry idle too long, page by page, from the start of the
        pending list. Returns how many entries were claimed."""
        cursor, total = "0-0", 0
        while True:
            cursor, claimed = await self.once(process, cursor)
            total += claimed
            if cursor == _DONE:
                return total

    async def once(self, process: Process, cursor: str = "0-0") -> tuple[str, int]:
        """One page: claim what is idle too long from ``cursor`` on, dead-letter poison,
        process the rest. Returns the next cursor and how many entries were claimed."""
        k = self.keys
        reply: Any = await self.redis.xautoclaim(
            k.pending, GROUP, self.consumer, self.idle_ms, start_id=cursor,
            count=self.batch_size)
        next_cursor, entries = text(reply[0]), reply[1]
        gone = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
        entries = [(i, f) for i, f in entries if i is not None]
        if len(entries) < len(reply[1]):
            # Redis 6.2 answers nil for a deleted entry without its id and keeps it pending.
            log.warning("%d pending entries were deleted from the stream (Redis < 7 cannot "
                        "say which); they stay pending", len(reply[1]) - len(entries))
        deliveries = await self._deliveries([text(i) for i, _ in entries])
        live: list[tuple[Any, Any]] = []
        poison: list[tuple[str, Mapping[bytes, bytes], int]] = []
        for entry_id, fields in entries:
            rid = text(entry_id)
            times = deliveries.get(rid, 0)
            if times > self.max_deliveries:
                poison.append((rid, fields, times))
            else:
                live.append((entry_id, fields))
        if poison or gone:
            await self._dead_letter(poison, gone)
        if live:
            log.warning("reclaimed %d requests idle over %d ms", len(live), self.idle_ms)
            await process(live)
        return next_cursor, len(entries) + len(gone)

    async def _deliveries(self, ids: Sequence[str]) -> dict[str, int]:
        """How many times each claimed entry has been delivered, this claim included."""
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.keys.pending, GROUP, min=entry_id, max=entry_id,
                                    count=1, consumername=self.consumer)
            replies = await pipe.execute()
        return {text(p["message_id"]): int(p["times_delivered"])
                for reply in replies for p in reply}

    async def _dead_letter(self, poison: list[tuple[str, Mapping[bytes, bytes], int]],
                           gone: list[str]) -> None:
        now = int(time.time() * 1000)
        results = [poison_result(rid, times, self.consumer, now) for rid, _, times in poison]
        results += [gone_result(rid, self.consumer, now) for rid in gone]
        async with self.redis.pipeline(transaction=True) as pipe:
            for (rid, fields, _), result in zip(poison, results, strict=False):
                entry: dict[Any, Any] = {
                    "data": encode(result),
                    "request_id": rid,
                    "client_order_id": "",
                }
                for name, value in fields.items():
                    entry[b"raw:" + (name if isinstance(name, bytes) else name.encode())] = value
                pipe.xadd(self.keys.failed, entry, maxlen=self.results_maxlen,
                          approximate=True)
            for rid, result in zip(gone, results[len(poison):], strict=True):
                pipe.xadd(self.keys.failed, {"data": encode(result), "request_id": rid,
                                             "client_order_id": ""},
                          maxlen=self.results_maxlen, approximate=True)
            pipe.xack(self.keys.pending, GROUP, *[r for r, _, _ in poison], *gone)
            if poison:  # answered, its fields kept on the result: no longer needed here
                pipe.xdel(self.keys.pending, *[r for r, _, _ in poison])
            await pipe.execute()
        for result in results:
            self.record(result)
        for reason, entries in (("poison", poison), ("deleted", gone)):
            if entries:
                self.dead_lettered(reason, len(entries))
        for rid, _, times in poison:
            log.error("request %s dead-lettered as poison after %d deliveries", rid, times,
                      extra=about(None, rid))
        for rid in gone:
            log.error("request %s was deleted from the stream while pending", rid,
                      extra=about(None, rid))
