"""The amend action: change a working order's price, stop price or total quantity by
cancel-replace (neither Binance spot nor the paper exchange amends in place).

The old order is cancelled at the broker; then the request carries on as a place of the
new order (idempotency, persist, submit), whose client id is derived from the amend's entry
id, so a redelivered amend finds the replacement it already made instead of making a
second one. The result names the new order, and the old one in ``cancelled``. Quantity is
the new total: what the old order filled counts, and only the rest is placed.

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
    ContractError,
    Event,
    OrderSpec,
    OrderState,
    OrderType,
    ReasonCode,
    wire,
)
from producer.ids import client_order_id_for_entry

from .. import results
from ..brokers.base import BrokerError
from ..job import Job
from ..logs import about
from ..order import Context, Order, apply_report
from ..services import Services
from ..states import IllegalTransition, is_terminal
from ..store import Outcome
from .cancel import SUBMITTING, CancelFailed, cancel_at_broker

log = logging.getLogger(__name__)


class Amend:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Cancel the old orders and turn each job into the place of its replacement;
        returns the old orders' changes, to be written with the batch's results."""
        changes: list[Outcome] = []
        for job in jobs:
            change = await self._one(job)
            if change is not None:
                changes.append(change)
        return changes

    async def _one(self, job: Job) -> Outcome | None:
        req = job.request
        assert req is not None and job.client_order_id is not None
        old_cid = job.client_order_id
        (old,) = await self.svc.store.load_orders([old_cid])
        if old is None or (req.account is not None and req.account != old.spec.account):
            self._fail(job, ReasonCode.NOT_FOUND, f"no order with client_order_id {old_cid}")
            return None
        new_cid = client_order_id_for_entry(old.spec.symbol, old.spec.side, job.request_id)
        (made,) = await self.svc.store.load_orders([new_cid])
        if made is not None:  # redelivered: the replacement exists, carry on with it
            self._become(job, old_cid, made.spec, new_cid)
            return await self._settle(job, old)
        if is_terminal(old.state) or old.state in SUBMITTING:
            what = "still being submitted" if old.state in SUBMITTING else "final"
            self._fail(job, ReasonCode.NOT_CANCELLABLE,
                       f"order {old_cid} is {old.state} ({what}); it cannot be amended",
                       old)
            return None
        try:
            spec = self._new_spec(job, old)
        except ContractError as exc:
            self._fail(job, ReasonCode.INVALID, str(exc), old)
            return None
        try:
            events = await cancel_at_broker(self.svc, old, job.request_id)
        except CancelFailed as exc:
            events = exc.events
            if old.state is not OrderState.CANCELLED:
                self._fail(job, exc.code, f"order {old_cid} could not be cancelled for the "
                           f"amend: {exc}", old)
                return _change(job, old, events)
        # Fills that came before the cancel took effect count against the new total.
        if old.spec.type is OrderType.OCO:
            raise ContractError(f"order {old.client_order_id} is an oco and cannot be amended "
                                "(cancel it and place a new one)", "client_order_id")
        total = _total(job, old)
        if total <= old.filled_quantity:
            job.cancelled = [old_cid]
            job.result = results.of_order(job, old, self.svc.clock(), self.svc.worker)
            return _change(job, old, events)
        spec = msgspec.structs.replace(spec, quantity=wire(total - old.filled_quantity))
        self._become(job, old_cid, spec, new_cid)
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
        if old.spec.type is OrderType.OCO:
            raise ContractError(f"order {old.client_order_id} is an oco and cannot be amended "
                                "(cancel it and place a new one)", "client_order_id")
        total = _total(job, old)
        if total <= old.filled_quantity:
            raise ContractError(f"quantity {total} is not above the {old.filled_quantity} "
                                f"order {old.client_order_id} has filled", "quantity")
        # The deadline is the amend's own: the old place's may be long past.
        changes: dict[str, object] = {"quantity": wire(total - old.filled_quantity),
                                      "deadline": req.deadline}
        for name in ("price", "stop_price"):
            value = getattr(req, name)
            if value is not None:
                if getattr(old.spec, name) is None:
                    raise ContractError(f"{name} is not allowed for a {old.spec.type} order",
                                        name)
                changes[name] = value
        spec: OrderSpec = msgspec.structs.replace(old.spec, **changes)
        return self.svc.brokers[old.spec.account].check(spec) or spec

    def _become(self, job: Job, old_cid: str, spec: OrderSpec, new_cid: str) -> None:
        job.spec = spec
        job.client_order_id = new_cid
        job.cancelled = [old_cid]

    def _fail(self, job: Job, code: str, reason: str, order: Order | None = None) -> None:
        job.result = results.failure(job, code, reason, self.svc.clock(), self.svc.worker,
                                     order=order)


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
