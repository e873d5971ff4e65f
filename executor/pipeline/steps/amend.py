"""The amend action: change a working order's price, stop price or total quantity by
cancel-replace (neither Binance spot nor the paper exchange amends in place).

It runs in two parts around the checks (worker.py ``process``):

1. ``prepare``, before idempotency: the request becomes the place of the new order, whose
   client id is derived from the amend's entry id (so a redelivered amend finds the
   replacement it already made instead of making a second one), naming the old order in
   ``cancelled``. Nothing is sent or written.
2. The circuit breaker (gate.py) and the risk checks, trading state included (risk.py),
   judge the new order as replacing the old one: the old order's reservation and its
   place among the open orders count as the new one's, not in addition.
3. ``__call__``, only for an amend that passed them: the old order is cancelled at the
   broker; then the request carries on as a place of the new order (persist, submit).
   One refused (``halted``, ``circuit_open``, ``risk_denied:<check>``) changes nothing: the
   old order keeps working, and the result names it with that reason code.

The result names the new order, and the old one in ``cancelled``. Quantity is the new
total: what the old order filled counts, and only the rest is placed.

Refused before anything changes: an unknown order (``not_found``), a final one or one still
being submitted (``not_cancellable``), a total quantity not above what is filled, or new
parameters the broker would refuse (``invalid``). If the old order filled before the cancel
reached it, the amend fails ``not_cancellable`` and nothing is placed; fills that came just
before the cancel count against the new total (when they cover it, the result is the
cancelled old order and nothing is placed).

An old order the broker reports cancelled when the amend's cancel comes is replaced too:
that is this amend's own cancel, redone after a crash between the cancel and the write of
the new order (a cancel from elsewhere would have reached our record first).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal

import msgspec

from producer.contract import (
    TRAILING_TYPES,
    ContractError,
    Event,
    OrderSpec,
    OrderState,
    OrderType,
    ReasonCode,
    ResultStatus,
    wire,
)
from producer.ids import client_order_id_for_entry
from producer.validation import check_levels

from ...brokers.base import BrokerError
from ...infra.logs import about
from ...infra.store import Outcome
from ...model.order import Context, Order, apply_report
from ...model.states import IllegalTransition, is_terminal
from .. import results
from ..job import Job
from ..services import Services
from .cancel import SUBMITTING, CancelFailed, cancel_at_broker

log = logging.getLogger(__name__)


class Amend:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def prepare(self, jobs: Sequence[Job]) -> None:
        """Turn each amend into the place of its replacement (or refuse it); nothing is
        sent or written."""
        for job in jobs:
            await self._prepare(job)

    async def __call__(self, jobs: Sequence[Job]) -> list[Outcome]:
        """After the checks: cancel the old orders of the amends that passed them; returns
        the old orders' changes, to be written with the batch's results."""
        changes: list[Outcome] = []
        for job in jobs:
            old = job.replaces
            if old is None:
                continue  # refused by prepare
            if job.result is not None:
                self._refused(job, old)
                continue
            if job.order is not None:  # redelivered: the replacement exists
                change = await self._settle(job, old)
            else:
                change = await self._replace(job, old)
            if change is not None:
                changes.append(change)
        return changes

    async def _prepare(self, job: Job) -> None:
        req = job.request
        assert req is not None and job.client_order_id is not None
        old_cid = job.client_order_id
        (old,) = await self.svc.store.load_orders([old_cid])
        if old is None or (req.account is not None and req.account != old.spec.account):
            self._fail(job, ReasonCode.NOT_FOUND, f"no order with client_order_id {old_cid}")
            return
        new_cid = client_order_id_for_entry(old.spec.symbol, old.spec.side, job.request_id)
        (made,) = await self.svc.store.load_orders([new_cid])
        if made is not None:  # redelivered: the replacement exists, carry on with it
            self._become(job, old, made.spec, new_cid)
            return
        if self._not_amendable(job, old):
            return
        try:
            spec = self._new_spec(job, old)
        except ContractError as exc:
            self._fail(job, ReasonCode.INVALID, str(exc), old)
            return
        self._become(job, old, spec, new_cid)

    def _not_amendable(self, job: Job, old: Order) -> bool:
        if is_terminal(old.state) or old.state in SUBMITTING:
            what = "still being submitted" if old.state in SUBMITTING else "final"
            self._fail(job, ReasonCode.NOT_CANCELLABLE,
                       f"order {old.client_order_id} is {old.state} ({what}); it cannot be "
                       "amended", old)
            return True
        return False

    def _refused(self, job: Job, old: Order) -> None:
        """Refused by the breaker, the trading state or a limit before anything changed:
        the result names the old order, which keeps working."""
        refusal = job.result
        assert refusal is not None
        self._fail(job, refusal.reason_code or ReasonCode.INTERNAL_ERROR, refusal.reason or "",
                   old, refusal.status)

    async def _replace(self, job: Job, old: Order) -> Outcome | None:
        """Cancel the old order; the job goes on as the place of what is left to place."""
        # As it is now: the checks may have taken a while (a breaker in hold mode).
        (now,) = await self.svc.store.load_orders([old.client_order_id])
        if now is None:
            self._fail(job, ReasonCode.NOT_FOUND, f"order {old.client_order_id} is gone", old)
            return None
        if self._not_amendable(job, now):
            return None
        old = job.replaces = now
        try:
            events = await cancel_at_broker(self.svc, old, job.request_id)
        except CancelFailed as exc:
            events = exc.events
            if old.state is not OrderState.CANCELLED:
                self._fail(job, exc.code, f"order {old.client_order_id} could not be "
                           f"cancelled for the amend: {exc}", old)
                return _change(job, old, events)
        # Fills that came before the cancel took effect count against the new total.
        total = _total(job, old)
        if total <= old.filled_quantity:
            job.result = results.of_order(job, old, self.svc.clock(), self.svc.worker)
            return _change(job, old, events)
        assert job.spec is not None
        job.spec = msgspec.structs.replace(job.spec,
                                           quantity=wire(total - old.filled_quantity))
        return _change(job, old, events)

    async def _settle(self, job: Job, old: Order) -> Outcome | None:
        """Record the old order's end, which a crash may have kept from being written; if
        the broker cannot say now, the tracker will."""
        if is_terminal(old.state):
            return None
        ctx = Context(now=self.svc.clock(), worker=self.svc.worker, request_id=job.request_id)
        try:
            with self.svc.metrics.broker_call(old.spec.account, "get_order"):
                report = await self.svc.brokers[old.spec.account].get_order(
                    old.client_order_id, old.spec.symbol)
            events = apply_report(old, report, ctx)
        except (BrokerError, IllegalTransition) as exc:
            log.warning("amend %s: old order %s not settled (%s)", job.request_id,
                        old.client_order_id, exc,
                        extra=about(old.client_order_id, job.request_id))
            return None
        return _change(job, old, events)

    def _new_spec(self, job: Job, old: Order) -> OrderSpec:
        req = job.request
        assert req is not None
        if old.spec.algo is not None:
            raise ContractError(f"order {old.client_order_id} is the parent of an algorithm "
                                "and cannot be amended (cancel it and place a new one)",
                                "client_order_id")
        if old.spec.type is OrderType.OCO:
            raise ContractError(f"order {old.client_order_id} is an oco and cannot be amended "
                                "(cancel it and place a new one)", "client_order_id")
        if old.spec.type in TRAILING_TYPES and req.quantity is not None:
            # Cancel-replace would start the new order's trailing afresh from the price
            # now, losing the water mark the old one reached: not what an amend means.
            raise ContractError(f"quantity of order {old.client_order_id} cannot be amended: "
                                f"it is a {old.spec.type}, whose replacement would trail "
                                "afresh (cancel it and place a new one)", "quantity")
        total = _total(job, old)
        if total <= old.filled_quantity:
            raise ContractError(f"quantity {total} is not above the {old.filled_quantity} "
                                f"order {old.client_order_id} has filled", "quantity")
        # The deadline is the amend's own: the old place's may be long past.
        changes: dict[str, object] = {"quantity": wire(total - old.filled_quantity),
                                      "deadline": req.deadline}
        shown = old.spec.display_quantity
        if shown is not None and total - old.filled_quantity <= shown:
            # An iceberg whose rest is no more than its visible part shows all of it anyway
            # (and Binance refuses an icebergQty not below the quantity): a plain order.
            changes["display_quantity"] = None
        for name in ("price", "stop_price"):
            value = getattr(req, name)
            if value is not None:
                if getattr(old.spec, name) is None:
                    raise ContractError(f"{name} is not allowed for a {old.spec.type} order",
                                        name)
                changes[name] = value
        spec: OrderSpec = msgspec.structs.replace(old.spec, **changes)
        if spec.oto_trigger is not None:
            # A contingent list's entry keeps its levels: its new price must still fit them.
            check_levels(spec.side, spec.price if spec.price is not None else spec.stop_price,
                         spec.take_profit, spec.stop_loss)
        return self.svc.brokers[old.spec.account].check(spec) or spec

    def _become(self, job: Job, old: Order, spec: OrderSpec, new_cid: str) -> None:
        job.spec = spec
        job.client_order_id = new_cid
        job.cancelled = [old.client_order_id]
        job.replaces = old

    def _fail(self, job: Job, code: str, reason: str, order: Order | None = None,
              status: ResultStatus = ResultStatus.FAILED) -> None:
        # Nothing was replaced. The job keeps the new client id, if it had one by then, so
        # that the risk step's settle gives back what was reserved for it.
        job.cancelled = []
        job.result = results.failure(job, code, reason, self.svc.clock(), self.svc.worker,
                                     order=order, status=status)


def _total(job: Job, old: Order) -> Decimal:
    """The order's new total quantity: the amend's, else the old one's."""
    assert job.request is not None
    quantity = job.request.quantity if job.request.quantity is not None else old.spec.quantity
    if quantity is None:
        raise ContractError("an order by quote_quantity has no quantity to amend; give "
                            "quantity", "quantity")
    return quantity


def _change(job: Job, old: Order, events: list[Event]) -> Outcome | None:
    # Its own id in the finish script: a conflict on the old order must not be taken for
    # one on the amend's result. The seq is the one after the pending_cancel written.
    if not events:
        return None
    return Outcome(f"{job.request_id}:replaced", None, old, old.seq - len(events), events)
