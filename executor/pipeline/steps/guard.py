"""One request's failure stays its own: a bug of ours met while handling one request
(any exception but a Redis error, which is nobody's request's fault and leaves the batch
pending as before) ends that request, never its batch-mates.

- Before anything of the request is written or sent (decode, authenticate, deadline,
  idempotency, gate, risk), it is answered ``internal_error``: nothing happened, the
  producer may send it again once the bug is fixed.
- After its order may have been written or sent (amend, persist, submit, cancel, the final
  write), it is ``held``: left pending without a result, like a request whose worker
  crashed there, and redone on redelivery from its order record (looked up at the broker,
  never sent blindly); if the bug repeats it is dead-lettered ``poison``.

Either way it is logged with its traceback and counted (``orderstream_internal_errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from producer.contract import ReasonCode

from ...infra.logs import about
from ...model.states import IllegalTransition
from .. import results
from ..job import Job
from ..services import Services

log = logging.getLogger(__name__)


def internal_error(svc: Services, job: Job, step: str, exc: BaseException) -> None:
    """Answer a request whose handling in ``step`` hit a bug, before anything of it was
    written or sent."""
    _count(svc, step, exc, 1)
    log.error("request %s: bug in step %s; answered internal_error", job.request_id, step,
              exc_info=exc, extra=about(job.client_order_id, job.request_id))
    job.held = False
    job.result = results.failure(
        job, ReasonCode.INTERNAL_ERROR,
        f"internal error in step {step} ({type(exc).__name__}); the request was not "
        "executed and nothing was changed", svc.clock(), svc.worker)


def hold(svc: Services, jobs: Iterable[Job], step: str, exc: BaseException) -> None:
    """Leave requests whose order may already be written or sent pending, without a result,
    to be redone from their records on redelivery."""
    held = [job for job in jobs if job.result is None]
    for job in held:
        job.held = True
        job.events.clear()  # nothing of it is written in this delivery
    if held:
        _count(svc, step, exc, len(held))
        log.error("%d requests left pending after a bug in step %s (redone on redelivery): "
                  "%s", len(held), step, ", ".join(j.request_id for j in held), exc_info=exc,
                  extra=about(held[0].client_order_id, held[0].request_id)
                  if len(held) == 1 else None)


def each(svc: Services, step: str, jobs: Iterable[Job], decide: Callable[[Job], None]) -> None:
    """Decide each job on its own: a bug on one is that job's ``internal_error``."""
    for job in jobs:
        try:
            decide(job)
        except Exception as exc:
            internal_error(svc, job, step, exc)


def _count(svc: Services, step: str, exc: BaseException, requests: int) -> None:
    svc.metrics.internal_errors.labels(step).inc(requests)
    if isinstance(exc, IllegalTransition):
        svc.metrics.illegal_transition(exc)
