"""Step 4: persist before submit. Each new order is written in state ``pending_submit``
with its events, atomically and only if its client id is still free, before any broker
call: a crash after this point leaves a record that tells the next worker to look the
order up at the broker instead of sending it again."""

from __future__ import annotations

from collections.abc import Sequence

from ...infra.store import NewOrder
from ...model.order import Context, new_order
from ..job import Job
from ..services import Services
from .idempotency import adopt_or_refuse


class Persist:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> None:
        fresh = [j for j in jobs if j.order is None and j.spec is not None]
        if not fresh:
            return
        now = self.svc.clock()
        items = []
        for job in fresh:
            assert job.client_order_id is not None and job.spec is not None
            ctx = Context(now=now, worker=self.svc.worker, request_id=job.request_id)
            order, events = new_order(job.client_order_id, job.request_id, job.spec, ctx)
            items.append(NewOrder(order, events))
        existing = await self.svc.store.begin(items)
        for job, item, found in zip(fresh, items, existing, strict=True):
            if found is None:
                job.order = item.order
                job.expected_seq = item.order.seq
            else:
                adopt_or_refuse(job, found.request_id, found.order, now, self.svc.worker)
