"""Orders whose outcomes are written in the very script that records them.

Where an exchange takes new orders inside the worker's write that creates them (risk.py's
door, brokers/sending.py ``Door``) and says beforehand what each order's answer is once
taken (``Door.reports``: the paper exchange decides in process and only stores), what the
submit step would make of those answers (the events, the request's result) is known
before the write too. Then that same script also writes the outcomes (finish.lua,
infra/store.py ``reserve_begin_and_open``): the order recorded, taken, ended or resting,
its request answered and acked, in one atomic step. The submit step's call and the final
write, a round trip, are left out; a crash can only find all of it or none. As one write,
it adds one events entry per order, its events from ``created`` to the answer's, and what
the record's creation and its outcome would each have done to the open set and the
tracker's index is done once (begin.lua's ``mode``, finish.lua's fresh items).

The outcomes are made on copies of the orders, so that if the script does not write them
(the door did not take every order, or did not run), nothing of them is kept and the
orders go the usual way, answered through the submit step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from ...brokers.base import BrokerOrder
from ...infra.store import NewOrder, Outcome
from ...model.order import Context, apply_report
from ...model.states import IllegalTransition
from .. import results
from ..job import Job
from ..services import Services

FRESH = -1  # finish.lua's expected seq of an order created in the same script


@dataclass(slots=True)
class Taken:
    """One job's outcome, should the door take its order with the answer it announced."""

    job: Job
    outcome: Outcome


def outcomes(svc: Services, jobs: Sequence[Job], items: Sequence[NewOrder],
             reports: Sequence[BrokerOrder]) -> list[Taken] | None:
    """Each job's outcome once its new order (``items``, as begin.lua creates it) is taken
    with ``reports`` as its answer; None when they cannot all be made so (the orders then
    go the usual way)."""
    if not reports or len(reports) != len(jobs):
        return None
    now = svc.clock()
    out: list[Taken] = []
    for job, item, report in zip(jobs, items, reports, strict=True):
        created = item.order
        # Never an algorithm's parent (answered when it ends) nor a list's entry (which
        # joins its account's hash as it is created: begin.lua's own write).
        if (created.spec.algo is not None or created.spec.oto_trigger is not None
                or report.client_order_id != created.client_order_id):
            return None
        # A copy: the record begin.lua writes stays the created one.
        order = msgspec.structs.replace(created, fills=list(created.fills),
                                        commissions=dict(created.commissions))
        ctx = Context(now=now, worker=svc.worker, request_id=job.request_id)
        try:
            events = apply_report(order, report, ctx)
        except IllegalTransition:
            return None  # the submit step meets it, and counts and logs it
        # A fresh item (expected seq -1): its record is created in the same script, whose
        # events go in this one entry with the outcome's (one write).
        out.append(Taken(job, Outcome(job.request_id, results.of_order(job, order, now,
                                                                        svc.worker),
                                      order, FRESH, [*item.events, *events])))
    return out


def written(taken: Sequence[Taken]) -> None:
    """The jobs once the script wrote their outcomes (all of them: a fresh item is never
    skipped, the script having checked each request still pending)."""
    for item in taken:
        job, outcome = item.job, item.outcome
        assert outcome.order is not None
        job.written = True
        job.order, job.expected_seq = outcome.order, outcome.order.seq
        job.events, job.result = outcome.events, outcome.result
