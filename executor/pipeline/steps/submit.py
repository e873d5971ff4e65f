"""Step 5: send each persisted order to its broker and apply what the broker reports.

The rules that keep an order from reaching the broker twice:
- every send is made by the holder of the order's send token (infra/lua/send.lua), taken once in
  Redis by one delivery of one request: a worker that reclaimed a request from another one
  (paused by GC or SIGSTOP past the visibility timeout, maybe about to send) never sends it,
  it only looks it up;
- only ``RetryableError`` (the call certainly did not take effect) is sent again, by the
  holder, with exponential backoff and jitter, within the attempt budget and the deadline;
- ``UnknownOutcome`` (a timeout, a 5xx, a lost answer, a "duplicate client id") is never
  resent blindly: the order is looked up by client id over the broker's lookup window
  (``lookup_window_ms``: its own backend timeout and more; Binance executes an order up to
  10 s after answering -1007). Found, it is applied. Not found, it is sent once more only
  where the broker's "no such order" is definitive (``definitive_not_found``: the paper
  exchange, whose book is in Redis); elsewhere (Binance) the order is recorded
  ``submitted`` with its outcome unknown, answered with status ``submitted``, followed by
  client id by the tracker, and never sent again;
- a redelivered request whose order is still ``pending_submit`` starts with that lookup,
  and sends only if nobody holds the token.

Several rounds: the first attempt of a batch's new orders is one call per broker where the
broker can batch (``submit_all``); what needs more (errors, redeliveries, lookups) is
returned as follow-ups, which the worker runs after writing the others' outcomes, so one
ambiguous order never holds back its batch-mates' results.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

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

from ...brokers.base import (
    Broker,
    BrokerOrder,
    OrderNotFound,
    PermanentError,
    RetryableError,
    SendRefused,
    Throttled,
    UnknownOutcome,
    submit_all,
)
from ...brokers.sending import SEND_TOKENS
from ...infra.logs import about
from ...infra.store import NotDurable
from ...model.broker_reports import BrokerStatus
from ...model.order import Context, Order, apply_report, transition
from ...model.states import IllegalTransition
from .. import results
from ..job import Job
from ..services import Services
from ..turn import pass_turn
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
    """The broker could not tell whether the order exists (its lookups failed)."""


class _Unknown(Exception):
    """The order may be at the broker and nobody can tell yet: it is recorded
    ``submitted``, followed by client id, and never sent again."""


class _NotSent(Exception):
    """Our own guard kept the order from the broker (moved on, or not durable)."""

    def __init__(self, refusal: SendRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(slots=True)
class FollowUp:
    """An order the first round did not settle. ``sender``: this delivery holds the send
    token (``error`` is its first attempt's failure); otherwise it looks the order up first
    and sends only if it can take the token then."""

    job: Job
    error: BaseException | None
    sender: bool


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
        self.default_window_ms = w.lookup_window_ms

    def window_s(self, broker: Broker) -> float:
        """How long "no such order" after an ambiguous send proves nothing at this broker."""
        window = getattr(broker, "lookup_window_ms", None)
        return (window if isinstance(window, int) and window > 0
                else self.default_window_ms) / 1000

    def _token(self, job: Job) -> str:
        return self.svc.send_token(job)

    async def __call__(self, jobs: Sequence[Job]) -> list[FollowUp]:
        """First round: settle what can be settled at once (one call per broker for the new
        orders); returns the rest, for ``follow_up``."""
        todo = [j for j in jobs if j.order is not None]
        now = self.svc.clock()
        fresh: list[Job] = []
        later: list[FollowUp] = []
        for job in todo:
            order = job.order
            assert order is not None
            try:
                if order.state is not OrderState.PENDING_SUBMIT:
                    self._conclude(job)  # redelivered after its outcome was recorded
                elif job.resumed and order.spec.algo is None:
                    later.append(FollowUp(job, None, sender=False))  # may have been sent
                elif not job.at_record and (reason := past_deadline(job, now)) is not None:
                    self._move(job, order, OrderState.EXPIRED, ReasonCode.EXPIRED, reason)
                    self._conclude(job)
                elif order.spec.algo is not None:
                    # Never sent itself: its schedule's children are (background/algos.py).
                    self._settle(job, scheduled(order))
                else:
                    fresh.append(job)
            except Exception:
                self._bug(job, "concluding it without a send")
        first = await self._first_attempts(fresh)
        for job in fresh:
            outcome = first[id(job)]
            if isinstance(outcome, BrokerOrder):
                self._settle(job, outcome)
            elif isinstance(outcome, SendRefused):
                self._refused(job, outcome, later)
            else:
                later.append(FollowUp(job, outcome, sender=True))
        return later

    def _refused(self, job: Job, refusal: SendRefused, later: list[FollowUp]) -> None:
        """A first send our own guard refused (brokers/sending.py): nothing was sent."""
        assert job.order is not None
        if refusal.why == "held":  # another delivery may have sent it: look it up
            later.append(FollowUp(job, None, sender=False))
        elif refusal.why == "not_durable":
            self._not_durable(job, str(refusal))
        else:
            self._moved_on(job)

    def _not_durable(self, job: Job, why: str) -> None:
        # Not sent, token given back: the request stays pending and is redelivered.
        assert job.order is not None
        self.svc.metrics.not_durable.inc()
        log.error("order %s not sent: %s; the request stays pending", job.order.client_order_id,
                  why, extra=about(job.order.client_order_id, job.request_id))

    def _moved_on(self, job: Job) -> None:
        # Another delivery of this request recorded the order's outcome meanwhile: nothing
        # to send; left without a result, the request is answered by that delivery (or
        # concluded from the record on its next one).
        assert job.order is not None
        log.info("order %s moved on while being submitted; left to the delivery that moved "
                 "it", job.order.client_order_id,
                 extra=about(job.order.client_order_id, job.request_id))

    async def follow_up(self, items: Sequence[FollowUp]) -> None:
        """Second round: errors, redeliveries and lookups, one order each, concurrently."""
        if items:
            await asyncio.gather(*(self._follow_up(item) for item in items))

    async def _first_attempts(self, jobs: list[Job]) -> dict[int, BrokerOrder | BaseException]:
        by_account: dict[str, list[Job]] = {}
        for job in jobs:
            assert job.order is not None
            by_account.setdefault(job.order.spec.account, []).append(job)
        out: dict[int, BrokerOrder | BaseException] = {}
        for account, group in by_account.items():
            orders = [(j.order.client_order_id, j.order.spec) for j in group if j.order]
            tokens = SEND_TOKENS.set({cid: self._token(j) for (cid, _), j in
                                      zip(orders, group, strict=True)})
            try:
                with self.svc.metrics.broker_call(account, "submit"):
                    outcomes = await submit_all(self.svc.brokers[account], orders)
            finally:
                SEND_TOKENS.reset(tokens)
            for job, outcome in zip(group, outcomes, strict=True):
                out[id(job)] = outcome
        return out

    async def _follow_up(self, item: FollowUp) -> None:
        """Finish one order the first round did not settle; nothing is ever sent here by a
        delivery without the send token."""
        job = item.job
        order = job.order
        assert order is not None
        broker = self.svc.brokers[order.spec.account]
        # This delivery's token, for every send it makes (its retries pass the guard).
        SEND_TOKENS.set({order.client_order_id: self._token(job)})
        try:
            if item.sender:
                report: BrokerOrder | None = await self._send(broker, order, item.error)
            else:
                report = await self._resume(job, broker, order)
            if report is not None:
                self._settle(job, report)
        except _Final as final:
            self._move(job, order, final.state, final.code, final.reason)
            self._conclude(job)
        except (_Unknown, Unresolved) as exc:
            self._unknown(job, order, str(exc))
        except _NotSent as exc:
            if exc.refusal.why == "not_durable":
                self._not_durable(job, str(exc.refusal))
            else:
                self._moved_on(job)
        except NotDurable as exc:
            self._not_durable(job, str(exc))
        except Exception:
            # A bug must not take the batch down: the request stays pending, to be redone.
            self.svc.metrics.internal_errors.labels("submit").inc()
            log.exception("order %s: unexpected error while submitting", order.client_order_id,
                          extra=about(order.client_order_id, job.request_id))

    async def _resume(self, job: Job, broker: Broker, order: Order) -> BrokerOrder | None:
        """A delivery that may not be the first to send (a redelivered request, or one whose
        token another delivery took): the broker's record of the order if it shows one
        within the window; else the order is sent only if this delivery can take the token
        (nobody ever sent it), and is of unknown outcome otherwise. None: the order moved
        on under us."""
        found = await self._lookup(broker, order)
        if found is not None:
            return found
        late = past_deadline(job, self.svc.clock())
        if late is None:
            return await self._send(broker, order, None)
        # Too late to send; but it may be expired only if nobody can have sent it.
        (took,) = await self.svc.store.take_send_tokens(
            {order.client_order_id: (SEND_TOKENS.get() or {})[order.client_order_id]})
        if took == 1:
            raise _Final(ReasonCode.EXPIRED, late, OrderState.EXPIRED)
        if took < 0:
            self._moved_on(job)
            return None
        raise _Unknown(self._held(broker))

    def _held(self, broker: Broker) -> str:
        return (f"another delivery of this request took its send token and may have sent it "
                f"(a worker that stalled past the visibility timeout); the broker has not "
                f"shown it in {self.window_s(broker):g} s of lookups by client id")

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
                pass_turn()  # the worker's next lane reads while this one waits
                await asyncio.sleep(self._until_deadline(order, max(
                    _FIRST_WAIT_S + random.uniform(0, _FIRST_WAIT_S), first.retry_after or 0)))

            def wait(state: RetryCallState) -> float:
                return self._until_deadline(order, _wait(state))

            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts_left),
                wait=wait,
                retry=retry_if_exception_type(RetryableError)
                & retry_if_not_exception_type(Throttled),
                before_sleep=lambda _: pass_turn(),
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
            if found is not None:
                return found
            window = self.window_s(broker)
            if getattr(broker, "definitive_not_found", False) is True:
                # This broker's "no such order" is final, and we hold the token: nobody
                # else can send it, and our own send did not take effect.
                return await self._send_once_more(broker, order)
            raise _Unknown(f"the broker's answer was lost ({exc}) and it has not shown the "
                           f"order in {window:g} s of lookups by client id; it may still "
                           "execute, so it is never sent again") from None
        except SendRefused as exc:
            if exc.why == "held":
                raise _Unknown(self._held(broker)) from None
            raise _NotSent(exc) from None
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
        except UnknownOutcome as exc:
            found = await self._lookup(broker, order)
            if found is None:
                raise _Unknown(f"sent again after a definitive \"no such order\", and that "
                               f"answer was lost too ({exc})") from None
            return found
        except SendRefused as exc:
            raise _NotSent(exc) from None
        except RetryableError as exc:
            raise _Final(ReasonCode.RETRIES_EXHAUSTED,
                         f"broker unavailable when the order was sent again: {exc}") from None
        except PermanentError as exc:
            raise _Final(ReasonCode.BROKER_REJECTED, str(exc)) from None

    async def _lookup(self, broker: Broker, order: Order) -> BrokerOrder | None:
        """The broker's record of the order, or None if it consistently has none over the
        lookup window. Raises Unresolved if the broker cannot answer at all."""
        cid, symbol = order.client_order_id, order.spec.symbol
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.window_s(broker)),
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

    def _unknown(self, job: Job, order: Order, why: str) -> None:
        """Record the order sent with its outcome unknown, and answer the request so:
        ``submitted``, never sent again, followed by client id (tracker.py)."""
        self.svc.metrics.unresolved.inc()
        log.warning("order %s: outcome unknown, recorded submitted and followed by client "
                    "id: %s", order.client_order_id, why,
                    extra=about(order.client_order_id, job.request_id))
        job.events.append(transition(
            order, OrderState.SUBMITTED, self._context(job),
            reason=f"outcome unknown: {why}; followed by client id, never sent again"))
        self._conclude(job)

    def _conclude(self, job: Job) -> None:
        assert job.order is not None
        job.result = results.of_order(job, job.order, self.svc.clock(), self.svc.worker)


def scheduled(order: Order) -> BrokerOrder:
    """What an algorithm's parent is once its request is decided: working, at no broker
    (its schedule is registered with it, infra/lua/begin.lua)."""
    assert order.spec.quantity is not None
    return BrokerOrder(client_order_id=order.client_order_id, broker_order_id="",
                       symbol=order.spec.symbol, status=BrokerStatus.NEW,
                       quantity=order.spec.quantity)
