"""Step 2c: the reads of a batch's new orders in one round trip, before idempotency.

The steps after it each read Redis for themselves: idempotency the order records, the gate
each account's breaker, the risk checks each account's snapshot, and the broker each
reference price. At a few hundred microseconds a round trip, that was most of an order's
time from request to result at ordinary load. So they are read here first, together: one
script call (infra/batch_read.py: the records, the breakers' states, the snapshots, at one
instant as in a MULTI) and, beside it, the reference prices. Each step then takes its part
(pipeline/reads.py).

Nothing is decided here and nothing written, and every decision is still made by the
writes that made it safe before: persist's create-if-absent, the checks' compare-and-set on
their version, the breaker script for anything but a closed breaker. So reading a few steps
early changes no outcome: a read that is stale by then fails the same compare-and-set a
fresh one would have raced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from producer.contract import Action

from ...infra.batch_read import BatchRead, BatchReader
from ...safety.risk.book import day_id
from ...safety.risk.state import RiskState
from ..job import Job
from ..reads import Reads
from ..services import Services


class Prefetch:
    def __init__(self, svc: Services, risk: RiskState) -> None:
        self.svc = svc
        self.risk = risk
        self.reader = BatchReader(svc.store.redis)

    async def __call__(self, jobs: Sequence[Job]) -> None:
        places = [j for j in jobs if j.open and j.spec is not None and j.client_order_id
                  and j.action in (Action.PLACE, Action.AMEND)]
        if not places:
            return
        svc = self.svc
        reads = Reads(day=day_id(svc.clock(), svc.settings.risk.day_offset_ms))
        cids = list(dict.fromkeys(j.client_order_id or "" for j in places))
        wanted: dict[str, list[str]] = {}
        symbols: dict[tuple[str, str], None] = {}
        for job in places:
            assert job.spec is not None
            account = job.spec.account
            wanted.setdefault(account, []).extend((job.client_order_id or "", *job.cancelled))
            symbols[(account, job.spec.symbol)] = None
        batch = BatchRead()
        svc.store.queue_records(batch, cids)
        for account in wanted:
            batch.hget(svc.store.keys.breaker(account), "state")
        for account, ids in wanted.items():
            reads.snapshots[account] = self.risk.queue_snapshot(
                batch, account, reads.day, list(dict.fromkeys(ids)))
        # The prices beside the read (a broker may ask its API): one task, not gather's two.
        asking = asyncio.ensure_future(svc.reference_prices(list(symbols)))
        try:
            replies = await self.reader.execute(batch)
        except BaseException:
            asking.cancel()
            raise
        prices = await asking
        reads.orders = dict(zip(cids, svc.store.parse_records(replies[:len(cids)]),
                                strict=True))
        at = len(cids)
        for account in wanted:
            reads.breakers[account] = replies[at]
            at += 1
        for read in reads.snapshots.values():
            read.replies = replies[at:at + read.size]
            at += read.size
        reads.prices = dict(zip(symbols, prices, strict=True))
        for job in places:
            job.reads = reads
