"""Step 2: a request still unprocessed after its deadline is failed ``expired``, never sent.

Checked again right before the broker call (see submit), since persisting takes time too.
"""

from __future__ import annotations

from collections.abc import Sequence

from producer.contract import ReasonCode, ResultStatus

from .. import results
from ..job import Job
from ..services import Services
from .guard import each


def past_deadline(job: Job, now: int) -> str | None:
    """The reason a job is too late, or None."""
    deadline = job.request.deadline if job.request is not None else None
    if deadline is None or now <= deadline:
        return None
    return (
        f"deadline {deadline} passed {now - deadline} ms before the request could be "
        f"executed (enqueued at {job.enqueued_at})"
    )


class Deadline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def __call__(self, jobs: Sequence[Job]) -> None:
        now = self.svc.clock()

        def decide(job: Job) -> None:
            reason = past_deadline(job, now)
            if reason is not None:
                job.result = results.failure(job, ReasonCode.EXPIRED, reason, now,
                                             self.svc.worker, status=ResultStatus.EXPIRED)

        each(self.svc, "deadline", jobs, decide)
