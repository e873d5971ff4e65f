"""Step 5: send each persisted order to its broker and apply what the broker reports.

The rules that keep an order from reaching the broker twice:
- only ``RetryableError`` (the call certainly did not take effect) is sent again, with
  exponential backoff and jitter, within the attempt budget and the request's deadline;
- ``UnknownOutcome`` is never resent blindly: the order is looked up by client id over a
  window, and only a broker that keeps saying "no such order" for the whole window lets us
  send again;
- a redelivered request whose order is still ``pending_submit`` starts with that lookup.
If the outcome stays unknown, the request is left pending (no result, no ack): it is
redelivered later and resolved then, never answered with a guess.

The first attempt of a batch's new orders is one call per broker where the broker can
batch (``submit_all``); only orders that need more (errors, redeliveries) go on one by one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from producer.contract import OrderState, ReasonCode

from .. import results
from ..brokers.base import (
    Broker,
    BrokerOrder,
    OrderNotFound,
    PermanentError,
    RetryableError,
    Throttled,
    UnknownOutcome,
    submit_all,
)
from ..job import Job
from ..logs import about
from ..order import Context, Order, apply_report, transition
from ..services import Services
from ..states import IllegalTransition
from .deadline import past_deadline

log = logging.getLogger(__name__)

_FIRST_WAIT_S = 0.05
_backoff = wait_exponential(multiplier=_FIRST_WAIT_S * 2, max=2.0) + wait_random(0, _FIRST_WAIT_S)


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, but never shorter than the broker's Retry-After."""
    delay = _backoff(state)
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    if isinstance(exc, RetryableError) and exc.retry_after:
        delay = max(delay, exc.retry_after)
    return delay


class Unresolved(Exception):
    """The broker could not tell whether the order exists; the request stays pending."""


class _Final(Exception):
    """The order ends here without a broker report: refused, or never sent."""

    def __init__(self, code: str, reason: str, state: OrderState = OrderState.REJECTED) -> None:
        super().__init__(reason)
        self.code, self.reason, self.state = code, reason, state


class Submit:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        w = svc.settings.worker
        self.attempts = w.submit_attempts
        self.lookup_window_s = w.lookup_window_ms / 1000

    async def __call__(self, jobs: Sequence[Job]) -> None:
        todo = [j for j in jobs if j.order is not None]
        now = self.svc.clock()
        fresh: list[Job] = []
        for job in todo:
            order = job.order
            assert order is not None
            try:
                if order.state is not OrderState.PENDING_SUBMIT:
                    self._conclude(job)  # redelivered after its outcome was recorded
                elif job.resumed:
                    continue  # may have reached the broker already: looked up below
                elif (reason := past_deadline(job, now)) is not None:
                    self._move(job, order, OrderState.EXPIRED, ReasonCode.EXPIRED, reason)
                    self._conclude(job)
                else:
                    fresh.append(job)
            except Exception:
                self._bug(job, "concluding it without a send")
        first = await self._first_attempts(fresh)
        follow_up: list[tuple[Job, BaseException | None]] = []
        for job in todo:
            if job.result is not None or job.held:
                continue
            outcome = first.get(id(job))
            if isinstance(outcome, BrokerOrder):
                self._settle(job, outcome)
            else:
                follow_up.append((job, outcome))
        if follow_up:
            await asyncio.gather(*(self._follow_up(job, exc) for job, exc in follow_up))

    async def _first_attempts(self, jobs: list[Job]) -> dict[int, BrokerOrder | BaseException]:
        by_account: dict[str, list[Job]] = {}
        for job in jobs:
            assert job.order is not None
            by_account.setdefault(job.order.spec.account, []).append(job)
        out: dict[int, BrokerOrder | BaseException] = {}
        for account, group in by_account.items():
            with self.svc.metrics.broker_call(account, "submit"):
                outcomes = await submit_all(
                    self.svc.brokers[account],
                    [(j.order.client_order_id, j.order.spec) for j in group if j.order],
                )
            for job, outcome in zip(group, outcomes, strict=True):
                out[id(job)] = outcome
        return out

    async def _follow_up(self, job: Job, first: BaseException | None) -> None:
        """Finish one order whose first attempt did not give a report (or that was
        redelivered); errors that are nobody's fault leave the request pending."""
        order = job.order
        assert order is not None
        broker = self.svc.brokers[order.spec.account]
        try:
            report = await self._lookup(broker, order) if job.resumed else None
            if report is None:
                # A redelivered order the broker never got is a new send, too late or not.
                late = past_deadline(job, self.svc.clock()) if job.resumed else None
                if late is not None:
                    raise _Final(ReasonCode.EXPIRED, late, OrderState.EXPIRED)
                report = await self._send(broker, order, first)
            self._settle(job, report)
        except _Final as final:
            self._move(job, order, final.state, final.code, final.reason)
            self._conclude(job)
        except Unresolved as exc:
            log.warning("order %s: outcome unknown, left pending: %s",
                        order.client_order_id, exc, extra=about(order.client_order_id,
                                                                job.request_id))
            self.svc.metrics.unresolved.inc()
        except Exception:
            # A bug must not take the batch down: the request stays pending, to be redone.
            self.svc.metrics.internal_errors.labels("submit").inc()
            log.exception("order %s: unexpected error while submitting", order.client_order_id,
                          extra=about(order.client_order_id, job.request_id))

    async def _send(self, broker: Broker, order: Order,
                    first: BaseException | None) -> BrokerOrder:
        """Send (again), retrying only what certainly did not take effect. ``first`` is the
        error of an attempt already made, if any. ``_Final`` when the broker refused or
        stayed unavailable; ``Unresolved`` when nobody can tell."""
        cid = order.client_order_id
        attempts_left = self.attempts - (first is not None)
        try:
            if first is not None and (isinstance(first, Throttled)
                                      or not isinstance(first, RetryableError)):
                raise first
            if isinstance(first, RetryableError):
                if attempts_left <= 0:
                    raise first
                await asyncio.sleep(self._until_deadline(order, max(
                    _FIRST_WAIT_S + random.uniform(0, _FIRST_WAIT_S), first.retry_after or 0)))

            def wait(state: RetryCallState) -> float:
                return self._until_deadline(order, _wait(state))

            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts_left),
                wait=wait,
                retry=retry_if_exception_type(RetryableError)
                & retry_if_not_exception_type(Throttled),
                reraise=True,
            ):
                with attempt:
                    deadline = order.spec.deadline
                    if deadline is not None and self.svc.clock() >= deadline:
                        # Nothing was sent (every failure so far was certainly not sent),
                        # and now it is too late to: the request expires, as it would
                        # have at the door.
                        raise _Final(ReasonCode.EXPIRED,
                                     f"deadline {deadline} passed while the broker was "
                                     "unavailable; the order was never sent",
                                     OrderState.EXPIRED)
                    return await self._timed_submit(broker, order)
        except UnknownOutcome as exc:
            log.warning("order %s: %s; looking it up before anything else", cid, exc,
                        extra=about(cid, order.request_id))
            found = await self._lookup(broker, order)
            if found is None:
                # The broker said "never arrived" for the whole window: one more send is safe.
                return await self._send_once_more(broker, order)
            return found
        except Throttled as exc:
            # The shared rate limiter had no room before the deadline: never sent.
            raise _Final(ReasonCode.RATE_LIMITED, str(exc),
                         OrderState.EXPIRED if order.spec.deadline is not None
                         else OrderState.REJECTED) from None
        except RetryableError as exc:
            raise _Final(ReasonCode.RETRIES_EXHAUSTED,
                         f"broker unavailable after {self.attempts} attempts: {exc}") from None
        except PermanentError as exc:
            raise _Final(ReasonCode.BROKER_REJECTED, str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _until_deadline(self, order: Order, delay_s: float) -> float:
        """A backoff that never sleeps past the request's deadline: at the deadline the
        next attempt sees it and the order expires then, not a whole backoff later."""
        deadline = order.spec.deadline
        if deadline is None:
            return delay_s
        return max(0.0, min(delay_s, (deadline - self.svc.clock()) / 1000))

    async def _timed_submit(self, broker: Broker, order: Order) -> BrokerOrder:
        with self.svc.metrics.broker_call(order.spec.account, "submit"):
            return await broker.submit(order.client_order_id, order.spec)

    async def _send_once_more(self, broker: Broker, order: Order) -> BrokerOrder:
        try:
            return await self._timed_submit(broker, order)
        except (UnknownOutcome, RetryableError) as exc:
            raise Unresolved(str(exc)) from None
        except PermanentError as exc:
            raise _Final(ReasonCode.BROKER_REJECTED, str(exc)) from None

    async def _lookup(self, broker: Broker, order: Order) -> BrokerOrder | None:
        """The broker's record of the order, or None if it consistently has none over the
        lookup window. Raises Unresolved if the broker cannot answer at all."""
        cid, symbol = order.client_order_id, order.spec.symbol
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.lookup_window_s),
                wait=wait_exponential(multiplier=_FIRST_WAIT_S, max=1.0)
                + wait_random(0, _FIRST_WAIT_S),
                retry=retry_if_exception_type((OrderNotFound, RetryableError, UnknownOutcome)),
                reraise=True,
            ):
                with attempt, self.svc.metrics.broker_call(order.spec.account, "get_order"):
                    return await broker.get_order(cid, symbol)
        except OrderNotFound:
            return None
        except (RetryableError, UnknownOutcome) as exc:
            raise Unresolved(f"lookup failed: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _context(self, job: Job) -> Context:
        return Context(now=self.svc.clock(), worker=self.svc.worker, request_id=job.request_id)

    def _settle(self, job: Job, report: BrokerOrder) -> None:
        """Apply the broker's report and conclude. A bug here (the broker was called) leaves
        this request pending, its order looked up again on redelivery, and never costs the
        batch's other orders their outcomes: logged and counted."""
        try:
            if self._apply(job, report):
                self._conclude(job)
        except Exception:
            self._bug(job, f"applying the broker's report ({report.status})")

    def _bug(self, job: Job, doing: str) -> None:
        """Leave one request pending after a bug of ours, without a result (held): its order
        is looked up again on redelivery. Logged and counted."""
        job.result = None
        job.events.clear()
        job.held = True
        self.svc.metrics.internal_errors.labels("submit").inc()
        log.exception("order %s: bug while %s; the request stays pending, to be looked up "
                      "on redelivery", job.client_order_id, doing,
                      extra=about(job.client_order_id, job.request_id))

    def _apply(self, job: Job, report: BrokerOrder) -> bool:
        """Bring the order up to the broker's report. A report the state table refuses is
        logged and counted and changes nothing: the request stays pending, to be looked up
        again on redelivery (and dead-lettered if it never makes sense)."""
        assert job.order is not None
        try:
            job.events += apply_report(job.order, report, self._context(job))
        except IllegalTransition as exc:
            self.svc.metrics.illegal_transition(exc)
            log.error("%s (broker reports %s); the request stays pending", exc, report.status,
                      extra=about(job.order.client_order_id, job.request_id))
            return False
        return True

    def _move(self, job: Job, order: Order, state: OrderState, code: str, reason: str) -> None:
        job.events.append(transition(order, state, self._context(job), reason_code=code,
                                     reason=reason))

    def _conclude(self, job: Job) -> None:
        assert job.order is not None
        job.result = results.of_order(job, job.order, self.svc.clock(), self.svc.worker)
