"""Reclaiming requests that a worker took and never finished (it died, hung or lost Redis).

Every ``visibility_timeout_ms / 2`` each worker runs XAUTOCLAIM over the group for entries
idle longer than the visibility timeout (the claim re-checks the idle time, so two workers
never both get one) and runs them through the same pipeline as new ones. There the order
records make redoing safe: an order already persisted is looked up at the broker by client
id before anything is sent (see pipeline/steps/submit.py).

An entry delivered more than ``max_deliveries`` times without an outcome is poison: it is
dead-lettered to ``<prefix>:failed`` with reason ``poison``, its raw fields kept on the
result entry as ``raw:<field>``, acknowledged and deleted from the requests stream (as
every answered request is, infra/lua/finish.lua). If it had made its order, that order is not
left behind: one still ``pending_submit`` ends ``rejected`` if nobody ever took its send
token, else moves to ``submitted`` for the tracker to resolve at the broker, and the result
reports the order (poison.py); the order change, the result, the XACK and the XDEL are one
write (store.py ``finish``). An entry deleted from the stream while it was pending (an
operator's XDEL, or a MAXLEN trim by a producer; workers delete only what they acked)
cannot be executed: Redis 7 reports its id, and it gets a ``poison`` result saying so, so
that its producer is not left waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from producer.contract import OrderState, Result, encode
from producer.keys import GROUP
from producer.replies import text

from ..infra.logs import about
from ..infra.store import NotDurable, Outcome, Store
from ..model.order import Order
from . import poison as dead

log = logging.getLogger(__name__)

Process = Callable[[Sequence[tuple[Any, Any]]], Awaitable[None]]
Record = Callable[[Result], None]
DeadLettered = Callable[[str, int], None]  # ("poison" or "deleted", how many) once written

_DONE = "0-0"  # XAUTOCLAIM's cursor once it has scanned the whole pending list


def gone_result(entry_id: str, worker: str, now: int) -> Result:
    result = dead.plain(entry_id, 0, worker, now)
    result.reason = "the entry was deleted from the stream before it was executed"
    return result


class Reclaimer:
    def __init__(self, store: Store, consumer: str, *,
                 visibility_timeout_ms: int, max_deliveries: int, batch_size: int,
                 record: Record = lambda _: None,
                 dead_lettered: DeadLettered = lambda _, __: None) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.consumer = consumer
        self.idle_ms = visibility_timeout_ms
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
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
        written: list[Result] = []
        if poison:
            written += await self._poison(poison, now)
        if gone:
            written += await self._gone(gone, now)
        for result in written:
            self.record(result)

    async def _poison(self, poison: list[tuple[str, Mapping[bytes, bytes], int]],
                      now: int) -> list[Result]:
        """Dead-letter poison entries, each with the order it made, if any: one write. An
        entry whose order moved meanwhile stays pending, to be dead-lettered again on a
        later pass with the order as it is then."""
        named = [dead.read(fields) for _, fields, _ in poison]
        olds = await self._orders([dead.old_order_id(n) for n in named])
        made = await self._orders([dead.order_id(n, rid, old) for (rid, _, _), n, old
                                   in zip(poison, named, olds, strict=True)])
        never_sent = await self._never_sent(
            [(rid, o) for (rid, _, _), o in zip(poison, made, strict=True) if o is not None
             and o.request_id == rid and o.state is OrderState.PENDING_SUBMIT])
        outcomes: list[Outcome] = []
        for (rid, fields, times), n, order in zip(poison, named, made, strict=True):
            raw = {b"raw:" + (k if isinstance(k, bytes) else k.encode()): v
                   for k, v in fields.items()}
            if order is None or order.request_id != rid:
                outcomes.append(Outcome(rid, dead.plain(rid, times, self.consumer, now, n),
                                        entry_fields=raw))
                continue
            seq = order.seq
            result, events = dead.with_order(rid, times, n, order, self.consumer, now,
                                             never_sent=order.client_order_id in never_sent)
            outcomes.append(Outcome(rid, result, order if events else None, seq, events,
                                    entry_fields=raw))
        conflicts = set(await self.store.finish(outcomes))
        if len(conflicts) < len(outcomes):
            self.dead_lettered("poison", len(outcomes) - len(conflicts))
        times_of = {rid: times for rid, _, times in poison}
        answers = [o.result for o in outcomes if o.result is not None]
        for answer in answers:
            rid, cid = answer.request_id, answer.client_order_id
            if rid in conflicts:
                log.warning("request %s: not dead-lettered now, as it was answered or its "
                            "order %s moved meanwhile", rid, cid, extra=about(cid, rid))
            elif cid is None:
                log.error("request %s dead-lettered as poison after %d deliveries", rid,
                          times_of[rid], extra=about(None, rid))
            else:
                log.error("request %s dead-lettered as poison after %d deliveries; its order "
                          "%s is %s", rid, times_of[rid], cid, answer.order_state,
                          extra=about(cid, rid))
        return [a for a in answers if a.request_id not in conflicts]

    async def _never_sent(self, orders: Sequence[tuple[str, Order]]) -> set[str]:
        """Of these pending_submit orders, those nobody ever sent: the dead letter takes
        their send tokens (infra/lua/send.lua), free until now, so that nobody ever can."""
        if not orders:
            return set()
        tokens = {o.client_order_id: f"poison:{rid}" for rid, o in orders}
        try:
            taken = await self.store.take_send_tokens(tokens)
        except NotDurable:
            return set()  # not sure the tokens will last: treated as maybe sent
        return {cid for cid, took in zip(tokens, taken, strict=True) if took == 1}

    async def _orders(self, cids: Sequence[str | None]) -> list[Order | None]:
        """The records of these client ids, in one round trip; None where there is no id."""
        wanted = [cid for cid in cids if cid is not None]
        found = dict(zip(wanted, await self.store.load_orders(wanted), strict=True))
        return [None if cid is None else found[cid] for cid in cids]

    async def _gone(self, gone: list[str], now: int) -> list[Result]:
        # No longer pending (Redis removed them from the group), so not through finish,
        # which answers only pending requests; and no data to find an order by. Uncapped:
        # a cap here would drop results a registered reader has not read; retention caps
        # the stream behind its readers (trim_results.lua), and these are rare.
        results = [gone_result(rid, self.consumer, now) for rid in gone]
        async with self.redis.pipeline(transaction=True) as pipe:
            for rid, result in zip(gone, results, strict=True):
                pipe.xadd(self.keys.failed, {"data": encode(result), "request_id": rid,
                                             "client_order_id": ""})
            pipe.xack(self.keys.pending, GROUP, *gone)
            await pipe.execute()
        self.dead_lettered("deleted", len(gone))
        for rid in gone:
            log.error("request %s was deleted from the stream while pending", rid,
                      extra=about(None, rid))
        return results
