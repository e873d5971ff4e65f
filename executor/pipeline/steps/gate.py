"""Step 4a: the circuit breaker. A new order for an account whose broker keeps failing is
refused with ``circuit_open`` before anything is written (or, in ``hold`` mode, waits for
the breaker within its deadline). Only new orders: a redelivered request whose order is
already recorded goes on, as it may be at the broker already and must be resolved there.

When the breaker is half-open, exactly one order (across all workers) is let through as
the trial; the others of the batch are treated as if it were open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis.exceptions import RedisError

from producer.contract import Action, ReasonCode

from ...safety.breaker import Breaker, CircuitState, Verdict
from .. import results
from ..job import Job
from ..reads import Reads
from ..services import Services
from ..turn import pass_turn

log = logging.getLogger(__name__)

_HOLD_POLL_S = 0.1
_CLOSED = Verdict(CircuitState.CLOSED, allowed=True, wait_ms=0, changed=False)
_UNREAD = object()


class Gate:
    def __init__(self, svc: Services, breaker: Breaker) -> None:
        self.svc = svc
        self.breaker = breaker
        self.settings = breaker.settings

    async def __call__(self, jobs: Sequence[Job]) -> None:
        by_account: dict[str, list[Job]] = {}
        for job in jobs:
            if (job.result is None and job.order is None and job.spec is not None
                    and job.action in (Action.PLACE, Action.AMEND)):
                by_account.setdefault(job.spec.account, []).append(job)
        if len(by_account) == 1:  # the usual batch: no task to make and wait for
            ((account, group),) = by_account.items()
            await self._account(account, group)
        elif by_account:
            await asyncio.gather(*(self._account(a, js) for a, js in by_account.items()))

    async def _account(self, account: str, jobs: list[Job]) -> None:
        try:
            verdict = await self._allow(account, jobs[0].reads)
        except RedisError as exc:
            # Fail safe: a breaker we cannot read may be open.
            self._refuse(jobs, f"circuit breaker of account {account} unreadable ({exc})")
            return
        self._observe(account, verdict)
        if verdict.state is CircuitState.CLOSED:
            return
        if verdict.allowed:
            self._trial(account, jobs)
            return
        if self.settings.mode == "hold":
            jobs, verdict = await self._hold(account, jobs, verdict)
            if verdict.state is CircuitState.CLOSED or not jobs:
                return
            if verdict.allowed:
                self._trial(account, jobs)
                return
        self._refuse(jobs, f"circuit breaker of account {account} is {verdict.state} "
                     f"after broker errors; a trial order may go in {verdict.wait_ms} ms")

    async def _allow(self, account: str, reads: Reads | None) -> Verdict:
        """The breaker's verdict. A closed breaker, as the batch's first read found it, lets
        orders through without asking again (the breaker script's answer for a closed one
        is that read alone); any other state asks the script, which grants the trial."""
        stored = reads.breakers.get(account, _UNREAD) if reads is not None else _UNREAD
        if isinstance(stored, RedisError):
            raise stored
        if stored is None or stored == b"closed":
            return _CLOSED
        return await self.breaker.allow(account)

    def _trial(self, account: str, jobs: list[Job]) -> None:
        """This batch holds the half-open trial: its first order goes, the others are
        refused (holding them here would hold the trial's own submit too)."""
        log.warning("account %s: circuit half-open, order %s is the trial", account,
                    jobs[0].client_order_id)
        self._refuse(jobs[1:], f"circuit breaker of account {account} is half-open and "
                     "another order is its trial")

    async def _hold(self, account: str, jobs: list[Job],
                    verdict: Verdict) -> tuple[list[Job], Verdict]:
        """Wait for the breaker to close or grant a trial, refusing each order when its
        deadline or ``hold_max_ms`` comes; returns the orders still waiting and the last
        verdict."""
        start = self.svc.clock()
        limit = start + self.settings.hold_max_ms
        while True:
            now = self.svc.clock()
            due = [j for j in jobs if now >= _until(j, limit)]
            if due:
                jobs = [j for j in jobs if now < _until(j, limit)]
                self._refuse(due, f"circuit breaker of account {account} stayed "
                             f"{verdict.state} for {now - start} ms, up to the order's "
                             "deadline or the hold limit")
            if not jobs:
                return jobs, verdict
            pass_turn()  # the wait may be long: the worker's next lane reads meanwhile
            await asyncio.sleep(_HOLD_POLL_S)
            try:
                verdict = await self.breaker.allow(account)
            except RedisError:
                continue
            self._observe(account, verdict)
            if verdict.state is CircuitState.CLOSED or verdict.allowed:
                return jobs, verdict

    def _observe(self, account: str, verdict: Verdict) -> None:
        self.svc.metrics.circuit_state.labels(account).set(verdict.state.code)

    def _refuse(self, jobs: Sequence[Job], reason: str) -> None:
        now = self.svc.clock()
        for job in jobs:
            job.result = results.failure(job, ReasonCode.CIRCUIT_OPEN, reason, now,
                                         self.svc.worker)


def _until(job: Job, limit: int) -> int:
    deadline = job.spec.deadline if job.spec is not None else None
    return limit if deadline is None else min(limit, deadline)
