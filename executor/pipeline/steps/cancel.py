"""The cancel and cancel_all actions: find the order(s), ask the broker, record the outcome.

- unknown client id (or one of another account): ``not_found``;
- a final order: ``not_cancellable``, reporting its state;
- an order left ``pending_cancel`` (this request redelivered after its worker died between
  writing that state and asking the broker): the broker is asked again, and for
  ``cancel_all`` (so ``orderstream kill``) such orders are cancelled with the working ones;
- an order still being submitted (``pending_submit``, maybe on another worker), or sent
  with its outcome unknown (``submitted``: the broker has not shown it yet): the cancel
  is recorded in ``<prefix>:cancels`` and answered ``pending_cancel`` at once; the tracker
  sends it to the broker as soon as the place has landed (tracker.py), so it is never lost;
- a broker that says the order is already final (it filled meanwhile): the order is
  brought up to date from a lookup and the cancel fails ``not_cancellable``;
- a broker that is unavailable, or whose answer was lost: the cancel is sent again with
  backoff (cancelling is idempotent: a cancel that did land is answered "already final"
  and looked up as above), up to ``submit_attempts`` sends, then ``retries_exhausted``;
  held back by the shared rate limiter: ``rate_limited``; refused: ``broker_rejected``.
  The order stays working in each case, and the producer may send the cancel again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from producer.contract import Action, Event, OrderState, ReasonCode, ResultStatus

from ...brokers.base import (
    Broker,
    BrokerError,
    BrokerOrder,
    NotCancellable,
    OrderNotFound,
    RetryableError,
    Throttled,
    UnknownOutcome,
)
from ...infra.failpoints import failpoint
from ...infra.store import Outcome
from ...model.lists import is_entry
from ...model.order import Context, Order, apply_report, restore, snapshot, transition
from ...model.states import is_terminal
from .. import results
from ..job import Job
from ..services import Services

WORKING = (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
# Not confirmed by the broker yet: being submitted, or sent with its outcome unknown
# (submitted: pipeline/steps/submit.py). A cancel of one waits until the broker shows the order.
SUBMITTING = (OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED)
CANCELLABLE = (*WORKING, OrderState.PENDING_CANCEL)  # what cancel_at_broker takes
LIST_CANCELLED = ("; its contingent list is cancelled: its open exit orders are cancelled, "
                  "each with a result of its own, and no more are placed")


ALGO_CANCELLED = ("its schedule stops: no more child orders; the working one, if any, is "
                  "cancelled, and the order ends cancelled with what its children filled")


class CancelFailed(Exception):
    """A cancel that did not happen; ``events`` are changes learnt on the way (a fill, or
    pending_cancel and back), which must still be recorded."""

    def __init__(self, code: str, reason: str, events: list[Event] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.events = events or []


def _working_state(order: Order) -> OrderState:
    return OrderState.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderState.ACCEPTED


class Cancel:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Decide the cancel jobs; returns the order changes of cancel_all requests (one per
        order), to be written atomically with the batch's results."""
        extra: list[Outcome] = []
        for job in jobs:
            if job.action is Action.CANCEL:
                await self._cancel_one(job)
            elif job.action is Action.CANCEL_ALL:
                extra += await self._cancel_all(job)
        return extra

    async def _cancel_one(self, job: Job) -> None:
        assert job.client_order_id is not None
        (order,) = await self.svc.store.load_orders([job.client_order_id])
        account = job.request.account if job.request else None
        if order is None or (account is not None and account != order.spec.account):
            where = f" in account {account}" if account else ""
            job.result = results.failure(
                job, ReasonCode.NOT_FOUND,
                f"no order with client_order_id {job.client_order_id}{where}",
                self.svc.clock(), self.svc.worker)
            return
        job.order, job.expected_seq = order, order.seq
        # Before the entry's own cancel: its exits must not be placed after it (model/lists.py)
        listed = is_entry(order.spec) and await self.svc.store.cancel_list(
            order.spec.account, order.client_order_id, job.request_id)
        if order.state in SUBMITTING:
            await self._defer([job], [order])
            job.result = results.of_order(job, order, self.svc.clock(), self.svc.worker)
            job.result.status = ResultStatus.ACCEPTED
            job.result.order_state = OrderState.PENDING_CANCEL
            return
        try:
            job.events += await self._cancel(job, order)
        except CancelFailed as exc:
            job.events += exc.events
            job.expected_seq = order.seq - len(job.events)
            listed = listed and not await self._keep_list(order)
            why = str(exc) + (LIST_CANCELLED if listed else "")
            job.result = results.failure(job, exc.code, why, self.svc.clock(),
                                         self.svc.worker, order=order)
            return
        job.expected_seq = order.seq - len(job.events)  # after the pending_cancel written
        job.result = results.of_order(job, order, self.svc.clock(), self.svc.worker)

    async def _keep_list(self, order: Order) -> bool:
        """After a failed cancel: an entry still working keeps its list (its exits are
        placed as it fills; the cancel may be sent again). True if it did."""
        if not is_entry(order.spec) or is_terminal(order.state):
            return False
        await self.svc.store.keep_list(order.client_order_id)
        return True

    async def _cancel(self, job: Job, order: Order) -> list[Event]:
        return await cancel_at_broker(self.svc, order, job.request_id)

    async def _defer(self, jobs: Sequence[Job], orders: Sequence[Order]) -> None:
        """Record cancels of orders still being submitted, for the tracker to send once
        the place lands. Written before the cancel's result: redone harmlessly if the
        worker dies in between (the same field, the same value)."""
        await self.svc.store.defer_cancels(
            {o.client_order_id: j.request_id for j, o in zip(jobs, orders, strict=True)})

    async def _cancel_all(self, job: Job) -> list[Outcome]:
        req = job.request
        assert req is not None
        orders = await self.svc.store.load_orders(await self.svc.store.open_order_ids())
        matching = [
            o for o in orders
            if o is not None
            and (req.symbol is None or o.spec.symbol == req.symbol)
            and (req.account is None or o.spec.account == req.account)
        ]
        for o in matching:
            if is_entry(o.spec):
                await self.svc.store.cancel_list(o.spec.account, o.client_order_id,
                                                 job.request_id)
        # An order left pending_cancel (a cancel whose worker died before asking the
        # broker, or one still in flight) is asked again: cancelling twice is harmless,
        # skipping it would leave it working at the broker.
        chosen = [o for o in matching if o.state in CANCELLABLE]
        deferred = [o for o in matching if o.state in SUBMITTING]
        await self._defer([job] * len(deferred), deferred)
        job.cancelled += [o.client_order_id for o in deferred]

        async def one(order: Order) -> Outcome | None:
            try:
                events = await self._cancel(job, order)
            except CancelFailed as exc:
                events = exc.events
                await self._keep_list(order)
            else:
                job.cancelled.append(order.client_order_id)
            return (Outcome(job.request_id, None, order, order.seq - len(events), events)
                    if events else None)

        outcomes = [o for o in await asyncio.gather(*(one(o) for o in chosen)) if o]
        job.cancelled.sort()
        job.result = results.summary(job, ResultStatus.CANCELLED, self.svc.clock(),
                                     self.svc.worker)
        return outcomes


async def cancel_at_broker(svc: Services, order: Order, request_id: str) -> list[Event]:
    """Cancel a working order at its broker; the events of what happened, or CancelFailed
    (carrying the events learnt on the way), still to be written with ``expected seq =
    order.seq - len(events)``.

    ``pending_cancel`` is written before the broker is asked, so that the tracker leaves the
    order to this request (tracker.py): a pushed "cancelled" must not overtake the request's
    own outcome, which would then fail its compare-and-set. An order already pending_cancel
    (this request redelivered after a crash) is asked again; the broker's answer settles it.
    """
    cid = order.client_order_id
    if is_terminal(order.state):
        raise CancelFailed(ReasonCode.NOT_CANCELLABLE, f"order {cid} is already {order.state}")
    if order.state not in CANCELLABLE:
        raise CancelFailed(ReasonCode.NOT_CANCELLABLE, f"order {cid} is {order.state}")
    ctx = Context(now=svc.clock(), worker=svc.worker, request_id=request_id)
    if order.spec.algo is not None:
        # At no broker: its schedule stops, and ends it cancelled once its working child
        # (if any) has been cancelled and has ended (background/algos.py).
        await svc.store.cancel_algo(order.spec.account, cid, request_id)
        if order.state is OrderState.PENDING_CANCEL:
            return []
        return [transition(order, OrderState.PENDING_CANCEL, ctx, reason=ALGO_CANCELLED)]
    broker = svc.brokers[order.spec.account]
    if order.state is not OrderState.PENDING_CANCEL:
        saved, seq = snapshot(order), order.seq
        mark = transition(order, OrderState.PENDING_CANCEL, ctx)
        if await svc.store.finish([Outcome(f"{request_id}:pending_cancel", None, order, seq,
                                           [mark])]):
            restore(order, saved)
            raise CancelFailed(ReasonCode.NOT_CANCELLABLE,
                               f"order {cid} changed while being cancelled; send the cancel "
                               "again if it is still open")
        failpoint("after_pending_cancel")
    events: list[Event] = []
    timed = svc.metrics.broker_call
    try:
        report = await _send_cancel(svc, broker, order)
    except NotCancellable as exc:
        # Final at the broker already (most likely filled): record what really happened.
        with timed(order.spec.account, "get_order"):
            found = await broker.get_order(cid, order.spec.symbol)
        events += apply_report(order, found, ctx)
        if order.state is OrderState.PENDING_CANCEL:
            events.append(transition(order, _working_state(order), ctx))
        raise CancelFailed(ReasonCode.NOT_CANCELLABLE, str(exc), events) from None
    except BrokerError as exc:
        events.append(transition(order, _working_state(order), ctx))
        raise CancelFailed(_failure_code(exc), str(exc), events) from None
    return events + apply_report(order, report, ctx)


async def _send_cancel(svc: Services, broker: Broker, order: Order) -> BrokerOrder:
    """Ask the broker to cancel, again while it is unavailable or its answer was lost."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(svc.settings.worker.submit_attempts),
        wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.05),
        retry=retry_if_exception_type((RetryableError, UnknownOutcome))
        & retry_if_not_exception_type(Throttled),
        reraise=True,
    ):
        with attempt, svc.metrics.broker_call(order.spec.account, "cancel"):
            return await broker.cancel(order.client_order_id, order.spec.symbol)
    raise AssertionError("unreachable")  # pragma: no cover


def _failure_code(exc: BrokerError) -> str:
    if isinstance(exc, OrderNotFound):
        return ReasonCode.NOT_FOUND
    if isinstance(exc, Throttled):
        return ReasonCode.RATE_LIMITED  # our own limiter held it back: never sent
    if isinstance(exc, (RetryableError, UnknownOutcome)):
        return ReasonCode.RETRIES_EXHAUSTED
    return ReasonCode.BROKER_REJECTED
