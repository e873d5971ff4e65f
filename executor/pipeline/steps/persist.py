"""Step 4: persist before submit. Each new order is written in state ``pending_submit``
with its events, atomically and only if its client id is still free, before any broker
call: a crash after this point leaves a record that tells the next worker to look the
order up at the broker instead of sending it again.

Most batches' orders are written by the risk checks already, in the script that makes their
reservations (pipeline/steps/risk.py): this step writes the rest (a batch with amends,
whose old orders are cancelled between the two).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...infra.store import Existing, NewOrder
from ...model.order import Context, new_order
from ..job import Job
from ..services import Services
from .idempotency import adopt_or_refuse


def new_orders(svc: Services, jobs: Sequence[Job]) -> list[NewOrder]:
    """The records and first events of these jobs' orders, to create."""
    now = svc.clock()
    items = []
    for job in jobs:
        assert job.client_order_id is not None and job.spec is not None
        ctx = Context(now=now, worker=svc.worker, request_id=job.request_id)
        order, events = new_order(job.client_order_id, job.request_id, job.spec, ctx)
        items.append(NewOrder(order, events))
    return items


def persisted(svc: Services, jobs: Sequence[Job], items: Sequence[NewOrder],
              existing: Sequence[Existing | None]) -> None:
    """Each job's order once the create-if-absent ran: its own, or the one already under
    its client id (a redelivery of this request carries on with it, another request's is
    ``duplicate``)."""
    now = svc.clock()
    for job, item, found in zip(jobs, items, existing, strict=True):
        if found is None:
            job.order = item.order
            job.expected_seq = item.order.seq
        else:
            adopt_or_refuse(job, found.request_id, found.order, now, svc.worker)


class Persist:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> None:
        fresh = [j for j in jobs if j.order is None and j.spec is not None]
        if not fresh:
            return
        items = new_orders(self.svc, fresh)
        persisted(self.svc, fresh, items, await self.svc.store.begin(items))
