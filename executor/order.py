"""The order record and the pure functions that move it: create, transition, apply fills,
apply a broker report. Each change goes through the state table and yields the events that
describe it; nothing here does I/O.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    WireDecimal,
    plus,
    wire,
    zero,
)

from .brokers.base import BrokerOrder, BrokerStatus
from .states import IllegalTransition, can_transition

S = OrderState


class Order(msgspec.Struct, kw_only=True, gc=False):
    """Current state of one order, stored under ``<prefix>:order:<client_order_id>``."""

    client_order_id: str
    request_id: str
    spec: OrderSpec
    state: OrderState
    seq: int = 0
    broker_order_id: str | None = None
    filled_quantity: WireDecimal = msgspec.field(default_factory=zero)
    average_price: WireDecimal | None = None
    commission: WireDecimal = msgspec.field(default_factory=zero)
    commission_asset: str | None = None
    fills: list[Fill] = []
    reason_code: str | None = None
    reason: str | None = None
    created_at: int = 0
    updated_at: int = 0
    worker: str = ""


class Context(msgspec.Struct, frozen=True, gc=False):
    """Who makes a change and when; stamped on every event."""

    now: int
    worker: str
    request_id: str | None = None


def new_order(
    client_order_id: str, request_id: str, spec: OrderSpec, ctx: Context
) -> tuple[Order, list[Event]]:
    """An order persisted before it is sent: ``created`` then ``pending_submit``."""
    order = Order(
        client_order_id=client_order_id,
        request_id=request_id,
        spec=spec,
        state=S.CREATED,
        seq=1,
        created_at=ctx.now,
        updated_at=ctx.now,
        worker=ctx.worker,
    )
    created = Event(
        client_order_id=client_order_id,
        seq=1,
        state=S.CREATED,
        at=ctx.now,
        worker=ctx.worker,
        request_id=request_id,
        account=spec.account,
        symbol=spec.symbol,
        order=spec,
    )
    return order, [created, transition(order, S.PENDING_SUBMIT, ctx)]


def transition(
    order: Order,
    target: OrderState,
    ctx: Context,
    *,
    fill: Fill | None = None,
    reason_code: str | None = None,
    reason: str | None = None,
) -> Event:
    """Move ``order`` to ``target`` (in place) and return the event; refuse what the table
    does not allow."""
    if not can_transition(order.state, target):
        raise IllegalTransition(order.client_order_id, order.state, target)
    prev = order.state
    order.state = target
    order.seq += 1
    order.updated_at = ctx.now
    if reason_code is not None:
        order.reason_code = reason_code
    if reason is not None:
        order.reason = reason
    return Event(
        client_order_id=order.client_order_id,
        seq=order.seq,
        state=target,
        prev_state=prev,
        at=ctx.now,
        worker=ctx.worker,
        request_id=ctx.request_id,
        account=order.spec.account,
        symbol=order.spec.symbol,
        broker_order_id=order.broker_order_id,
        fill=fill,
        filled_quantity=order.filled_quantity if fill is not None else None,
        average_price=order.average_price if fill is not None else None,
        commission=order.commission if fill is not None else None,
        reason_code=reason_code,
        reason=reason,
    )


def add_fill(order: Order, fill: Fill) -> None:
    """Add one fill to the running totals; the average is the quantity-weighted mean."""
    filled = plus(order.filled_quantity, fill.quantity)
    if filled > order.spec.quantity:
        raise ValueError(
            f"order {order.client_order_id}: fills {filled} exceed quantity "
            f"{order.spec.quantity}"
        )
    previous_notional = (order.average_price or 0) * order.filled_quantity
    average = (previous_notional + fill.price * fill.quantity) / filled
    order.average_price = wire(_normalize(average))
    order.filled_quantity = filled
    order.commission = plus(order.commission, fill.commission)
    if fill.commission_asset is not None:
        order.commission_asset = fill.commission_asset
    order.fills.append(fill)


def _normalize(value: Decimal) -> Decimal:
    # A weighted mean can have a long expansion; twelve places keep it exact enough for any
    # price while keeping stored values short. Exact fills stay exact.
    exact = value.normalize()
    if exact.as_tuple().exponent >= -12:  # type: ignore[operator]
        return exact
    return value.quantize(Decimal("1e-12"))


_BROKER_TERMINAL = {
    BrokerStatus.CANCELLED: S.CANCELLED,
    BrokerStatus.REJECTED: S.REJECTED,
    BrokerStatus.EXPIRED: S.EXPIRED,
}


def apply_report(order: Order, report: BrokerOrder, ctx: Context) -> list[Event]:
    """Bring ``order`` up to what the broker reports; returns the events, in order.

    Fills already recorded (same ``fill_id``) are skipped, so a report can be applied twice.
    """
    events: list[Event] = []
    if report.broker_order_id and order.broker_order_id is None:
        order.broker_order_id = report.broker_order_id
    if order.state is S.PENDING_SUBMIT:
        if report.status is BrokerStatus.REJECTED:
            events.append(
                transition(order, S.REJECTED, ctx, reason_code="broker_rejected",
                           reason=report.reason)
            )
            return events
        events.append(transition(order, S.SUBMITTED, ctx))
    known = {fill.fill_id for fill in order.fills}
    for fill in report.fills:
        if fill.fill_id in known:
            continue
        add_fill(order, fill)
        full = order.filled_quantity >= order.spec.quantity
        events.append(transition(order, S.FILLED if full else S.PARTIALLY_FILLED, ctx,
                                 fill=fill))
    status = report.status
    if status in _BROKER_TERMINAL and order.state is not _BROKER_TERMINAL[status]:
        code = "broker_rejected" if status is BrokerStatus.REJECTED else None
        events.append(
            transition(order, _BROKER_TERMINAL[status], ctx, reason_code=code,
                       reason=report.reason)
        )
    elif status is BrokerStatus.NEW and order.state is S.SUBMITTED:
        events.append(transition(order, S.ACCEPTED, ctx))
    return events
