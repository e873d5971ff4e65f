"""Building the one result of a request from what the pipeline decided. Pure."""

from __future__ import annotations

from decimal import Decimal

from producer.contract import (
    TERMINAL_STATES,
    Action,
    OrderState,
    Result,
    ResultStatus,
    wire,
    zero,
)

from ..infra.streams import parse_stream_id
from ..model.order import Order
from .job import Job

_STATUS_OF_STATE = {
    OrderState.ACCEPTED: ResultStatus.ACCEPTED,
    # Recorded submitted only when the broker has not confirmed it: outcome unknown.
    OrderState.SUBMITTED: ResultStatus.SUBMITTED,
    OrderState.PENDING_CANCEL: ResultStatus.ACCEPTED,
    OrderState.PARTIALLY_FILLED: ResultStatus.PARTIALLY_FILLED,
    OrderState.FILLED: ResultStatus.FILLED,
    OrderState.CANCELLED: ResultStatus.CANCELLED,
    OrderState.EXPIRED: ResultStatus.EXPIRED,
    OrderState.REJECTED: ResultStatus.REJECTED,
    OrderState.DENIED: ResultStatus.DENIED,
    OrderState.CREATED: ResultStatus.FAILED,
    OrderState.PENDING_SUBMIT: ResultStatus.FAILED,
}


def _base(job: Job, now: int, worker: str, order: Order | None) -> Result:
    req = job.request
    spec = order.spec if order is not None else job.spec
    result = Result(
        request_id=job.request_id,
        action=job.action,
        status=ResultStatus.FAILED,
        client_order_id=order.client_order_id if order is not None else job.client_order_id,
        account=spec.account if spec is not None else (req.account if req else None),
        symbol=spec.symbol if spec is not None else (req.symbol if req else None),
        side=spec.side if spec is not None else None,
        type=spec.type if spec is not None else None,
        quantity=spec.quantity if spec is not None else None,
        strategy_id=req.strategy_id if req else None,
        signal_id=req.signal_id if req else None,
        metadata=req.metadata if req else None,
        enqueued_at=job.enqueued_at,
        received_at=job.received_at,
        completed_at=now,
        worker=worker,
        cancelled=job.cancelled,
    )
    if order is not None:
        result.order_state = order.state
        result.broker_order_id = order.broker_order_id
        result.filled_quantity = order.filled_quantity
        result.average_price = order.average_price
        result.commission = order.commission
        result.commission_asset = order.commission_asset
        result.commissions = order.commissions
        result.fills = order.fills
        result.emulated = order.emulated
        result.native_exits = order.native_exits
    return result


def of_order(job: Job, order: Order, now: int, worker: str) -> Result:
    """The result of a request that moved ``order``: its status is the order's state; a
    rejection carries the broker's reason code and message."""
    result = _base(job, now, worker, order)
    result.status = _STATUS_OF_STATE[order.state]
    if order.state in (OrderState.REJECTED, OrderState.DENIED):
        result.reason_code = order.reason_code or "broker_rejected"
    elif order.state is OrderState.EXPIRED:
        # Expired by us (deadline, never sent) is a failure; expired by the exchange (an
        # IOC remainder) is a normal outcome, which keeps the exchange's words as reason.
        result.reason_code = order.reason_code
    if order.state in TERMINAL_STATES or order.state is OrderState.SUBMITTED:
        result.reason = order.reason
    return result


def deferred(job: Job) -> bool:
    """Whether ``job``'s result waits for its order to end: the request that placed an
    algorithm's parent, still working. Its one result comes when the schedule ends
    (background/algos.py, ``late``); the request is acked now, with the parent's record."""
    order = job.order
    return (order is not None and order.spec.algo is not None
            and order.request_id == job.request_id and order.state not in TERMINAL_STATES)


def late(order: Order, now: int, worker: str, fees: dict[str, Decimal]) -> Result:
    """The result of the request that placed ``order`` (an algorithm's parent), once the
    order has ended: its final state and totals, as ``of_order`` would have said then, and
    the ``fees`` its children paid, per asset (the parent has no fills of its own)."""
    spec = order.spec
    single = next(iter(fees.items())) if len(fees) == 1 else None
    return Result(
        request_id=order.request_id, action=Action.PLACE, status=_STATUS_OF_STATE[order.state],
        client_order_id=order.client_order_id, account=spec.account, symbol=spec.symbol,
        side=spec.side, type=spec.type, quantity=spec.quantity, order_state=order.state,
        reason_code=order.reason_code, reason=order.reason,
        broker_order_id=order.broker_order_id, filled_quantity=order.filled_quantity,
        average_price=order.average_price,
        # Amounts in different assets are never added up (as model.order keeps them).
        commission=wire(single[1]) if single else (None if fees else zero()),
        commission_asset=single[0] if single else None,
        commissions={asset: wire(v) for asset, v in fees.items()}, fills=order.fills,
        strategy_id=spec.strategy_id, signal_id=spec.signal_id,
        metadata=spec.metadata, enqueued_at=parse_stream_id(order.request_id)[0],
        received_at=order.created_at, completed_at=now, worker=worker)


def failure(
    job: Job,
    reason_code: str,
    reason: str,
    now: int,
    worker: str,
    *,
    order: Order | None = None,
    status: ResultStatus = ResultStatus.FAILED,
) -> Result:
    """The result of a refused request; ``order`` is the order it refers to, if any (its
    current state is reported, e.g. to a producer's retry that met ``duplicate``)."""
    result = _base(job, now, worker, order)
    result.status = status
    result.reason_code = reason_code
    result.reason = reason
    return result


def summary(job: Job, status: ResultStatus, now: int, worker: str) -> Result:
    """The result of a request about several orders (cancel_all): ``cancelled`` lists them."""
    result = _base(job, now, worker, None)
    result.status = status
    return result
