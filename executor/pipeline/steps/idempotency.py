"""Step 3: a client_order_id already seen. Before any risk check or broker call, look up
the ids of the batch's place requests in one round trip.

- The same request again (same stream id: it was redelivered after a crash): carry on with
  the order as recorded; the submit step resolves it without sending twice.
- Another request with the same client id (a producer's retry): ``duplicate``, carrying the
  first order's current state. Never a second order.

The persist step repeats the check atomically, so two workers racing on one id are safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from producer.contract import Action, ReasonCode

from ...model.order import Order
from .. import results
from ..job import Job
from ..services import Services


def adopt_or_refuse(job: Job, request_id: str, order: Order, now: int, worker: str) -> None:
    """Decide a job whose client id already has an order recorded under ``request_id``."""
    if request_id == job.request_id:
        job.order = order
        job.expected_seq = order.seq
        job.resumed = True
        return
    job.result = results.failure(
        job,
        ReasonCode.DUPLICATE,
        f"client_order_id {order.client_order_id} was already used by request {request_id} "
        f"(order is {order.state})",
        now,
        worker,
        order=order,
    )


class Idempotency:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> None:
        places = [j for j in jobs if j.action in (Action.PLACE, Action.AMEND)
                  and j.client_order_id and j.spec is not None]
        cids = [j.client_order_id or "" for j in places]
        reads = places[0].reads if places else None
        if reads is not None and all(cid in reads.orders for cid in cids):
            orders = [reads.orders[cid] for cid in cids]
        else:
            orders = await self.svc.store.load_orders(cids)
        now = self.svc.clock()
        for job, order in zip(places, orders, strict=True):
            if order is not None:
                adopt_or_refuse(job, order.request_id, order, now, self.svc.worker)
