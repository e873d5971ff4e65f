"""The order record and the pure functions that move it: create, transition, apply fills,
apply a broker report. Each change goes through the state table and yields the events that
describe it; nothing here does I/O.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Any

import msgspec

from producer.contract import (
    TRAILING_TYPES,
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OtoTrigger,
    Request,
    TimeInForce,
    TrailingOffsetType,
    WireDecimal,
    wire,
    zero,
)

from .broker_reports import BrokerOrder, BrokerStatus
from .states import IllegalTransition, can_transition, is_terminal

S = OrderState

# Sums and products of wire decimals (at most 20 digits either side of the point) fit in far
# fewer than 200 digits; Inexact is trapped so that a quantity or a notional is never rounded
# silently (the default context would round at 28 digits).
_EXACT = decimal.Context(prec=200, rounding=ROUND_HALF_EVEN,
                         traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
# A mean of wire decimals is a quotient whose runs of 0s or 9s are far shorter than 200
# digits, so rounding the 200-digit quotient again to 12 places rounds the true mean.
_QUOTIENT = decimal.Context(prec=200, rounding=ROUND_HALF_EVEN,
                            traps=[InvalidOperation, DivisionByZero, Overflow])


def spec_from_request(request: Request, account: str) -> OrderSpec:
    """The order a valid ``place`` request asks for, its defaults filled in: good till
    cancelled, a trailing offset in price, an entry with levels released on its full fill."""
    assert request.symbol and request.side and request.type
    return OrderSpec(
        account=account,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        quantity=request.quantity,
        quote_quantity=request.quote_quantity,
        price=request.price,
        stop_price=request.stop_price,
        stop_limit_price=request.stop_limit_price,
        trailing_offset=request.trailing_offset,
        trailing_offset_type=request.trailing_offset_type or (
            TrailingOffsetType.PRICE if request.type in TRAILING_TYPES else None),
        activation_price=request.activation_price,
        limit_offset=request.limit_offset,
        display_quantity=request.display_quantity,
        time_in_force=request.time_in_force or TimeInForce.GTC,
        expire_at=request.expire_at,
        deadline=request.deadline,
        strategy_id=request.strategy_id,
        signal_id=request.signal_id,
        metadata=request.metadata,
        reduce_only=request.reduce_only,
        take_profit=request.take_profit,
        stop_loss=request.stop_loss,
        oto_trigger=request.oto_trigger or (
            OtoTrigger.FULL if (request.take_profit or request.stop_loss) else None),
        algo=request.algo,
    )


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
    # The fills' commissions (see producer.contract.Result): per asset charged, and the
    # total with its asset while there is one asset (None once there are several).
    commission: WireDecimal | None = msgspec.field(default_factory=zero)
    commission_asset: str | None = None
    commissions: dict[str, WireDecimal] = {}
    fills: list[Fill] = []
    reason_code: str | None = None
    reason: str | None = None
    created_at: int = 0
    updated_at: int = 0
    worker: str = ""
    emulated: bool = False  # held by our emulator, released as a plain order (emulation.py)
    # An entry whose exits the broker holds natively (BrokerOrder.native_exits).
    native_exits: bool = False

    def __post_init__(self) -> None:
        # A record written before the per-asset totals: they are made from its fills (and
        # a total of several assets, which it summed, is dropped).
        if self.fills and not self.commissions:
            self.commission, self.commission_asset, self.commissions = commission_totals(
                self.fills)


def commission_totals(fills: list[Fill]
                      ) -> tuple[WireDecimal | None, str | None, dict[str, WireDecimal]]:
    """(commission, commission_asset, commissions) of these fills, as ``add_fill`` keeps
    them one fill at a time."""
    total: Decimal | None = Decimal(0)
    asset: str | None = None
    per_asset: dict[str, Decimal] = {}
    for f in fills:
        if f.commission_asset is not None:
            per_asset[f.commission_asset] = _EXACT.add(
                per_asset.get(f.commission_asset, Decimal(0)), f.commission)
            asset = f.commission_asset
        total = None if total is None or len(per_asset) > 1 else _EXACT.add(total,
                                                                           f.commission)
    return (None if total is None else wire(total), None if total is None else asset,
            {a: wire(v) for a, v in per_asset.items()})


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
    totals: bool = False,
) -> Event:
    """Move ``order`` to ``target`` (in place) and return the event; refuse what the table
    does not allow. The event carries the running totals with a fill, or with ``totals``
    (a parent's progress, which has no fills of its own: ``progress``)."""
    totals = totals or fill is not None
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
        filled_quantity=order.filled_quantity if totals else None,
        average_price=order.average_price if totals else None,
        commission=order.commission if totals else None,
        commissions=order.commissions if totals else None,
        reason_code=reason_code,
        reason=reason,
        emulated=order.emulated,
        native_exits=order.native_exits,
    )


def add_fill(order: Order, fill: Fill) -> None:
    """Add one fill to the running totals; the average is the quantity-weighted mean of all
    the fills, rounded once (see ``_normalize``).

    Refuses, changing nothing: a fill of no quantity, one that would take the fills past the
    order quantity (ValueError) and any fill of a terminal order (IllegalTransition).
    """
    _add_fill(order, fill, fills_notional(order.fills))


def progress(order: Order, filled: Decimal, notional: Decimal, ctx: Context,
             reason: str | None = None) -> list[Event]:
    """Bring the parent of an execution algorithm up to what its children filled, all
    together: ``filled`` at an exact ``notional`` (the sum of price x quantity). A parent
    has no fills of its own (they are its children's, and the positions fold counts them
    there): its events carry the running totals without a fill. One event when the total
    moved (filled, or partially_filled), none otherwise."""
    quantity = order.spec.quantity
    if filled == order.filled_quantity or filled <= 0:
        return []
    if quantity is not None and filled > quantity:
        raise ValueError(f"order {order.client_order_id}: its children filled {filled}, "
                         f"more than its quantity {quantity}")
    set_totals(order, filled, wire(_normalize(_QUOTIENT.divide(notional, filled))))
    full = quantity is not None and filled >= quantity
    return [transition(order, S.FILLED if full else S.PARTIALLY_FILLED, ctx, totals=True,
                       reason=reason)]


def set_totals(order: Order, filled: Decimal, average: Decimal | None) -> None:
    """A parent's totals as its progress event carries them (replay follows ``progress``)."""
    order.filled_quantity = wire(filled)
    order.average_price = None if average is None else wire(average)


def fills_notional(fills: list[Fill]) -> Decimal:
    """The exact sum of price x quantity of ``fills``."""
    # From the fills, not from the stored average: that one is rounded, and building on it
    # would carry its rounding error into every later average.
    notional = Decimal(0)
    for f in fills:
        notional = _EXACT.add(notional, _EXACT.multiply(f.price, f.quantity))
    return notional


def _add_fill(order: Order, fill: Fill, notional: Decimal) -> Decimal:
    """``add_fill`` given the exact notional of the fills so far; returns the new one, so a
    report of many fills costs one pass over them, not one per fill."""
    if fill.quantity <= 0:
        raise ValueError(f"order {order.client_order_id}: fill quantity {fill.quantity} "
                         "is not positive")
    # Context methods rather than localcontext(): same arithmetic, a fraction of the cost.
    filled = _EXACT.add(order.filled_quantity, fill.quantity)
    quantity = order.spec.quantity  # None: by quote amount, the broker says when it is done
    if is_terminal(order.state):
        target = S.FILLED if quantity is not None and filled >= quantity else S.PARTIALLY_FILLED
        raise IllegalTransition(order.client_order_id, order.state, target)
    if quantity is not None and filled > quantity:
        raise ValueError(
            f"order {order.client_order_id}: fills {filled} exceed quantity "
            f"{order.spec.quantity}"
        )
    notional = _EXACT.add(notional, _EXACT.multiply(fill.price, fill.quantity))
    order.average_price = wire(_normalize(_QUOTIENT.divide(notional, filled)))
    order.filled_quantity = wire(filled)
    asset = fill.commission_asset
    if asset is not None:
        # A new dict, not changed in place: ``snapshot`` keeps the old one to restore.
        order.commissions = {**order.commissions, asset: wire(_EXACT.add(
            order.commissions.get(asset, Decimal(0)), fill.commission))}
    if order.commission is None or len(order.commissions) > 1:
        # Amounts in different assets are never added up.
        order.commission = order.commission_asset = None
    else:
        order.commission = wire(_EXACT.add(order.commission, fill.commission))
        if asset is not None:
            order.commission_asset = asset
    order.fills.append(fill)
    return notional


_PLACES = Decimal("1e-12")


def _normalize(value: Decimal) -> Decimal:
    # A weighted mean can have a long expansion; twelve places (half-even) keep it exact
    # enough for any price while keeping stored values short. Exact fills stay exact.
    rounded = value.quantize(_PLACES, context=_QUOTIENT)
    return _QUOTIENT.normalize(value) if rounded == value else rounded


_BROKER_TERMINAL = {
    BrokerStatus.CANCELLED: S.CANCELLED,
    BrokerStatus.REJECTED: S.REJECTED,
    BrokerStatus.EXPIRED: S.EXPIRED,
}


Snapshot = tuple[tuple[Any, ...], int]


def snapshot(order: Order) -> Snapshot:
    """What ``restore`` needs to undo changes made to ``order`` in memory since."""
    return msgspec.structs.astuple(order), len(order.fills)


def restore(order: Order, saved: Snapshot) -> None:
    fields, fill_count = saved
    for name, value in zip(order.__struct_fields__, fields, strict=True):
        setattr(order, name, value)
    del order.fills[fill_count:]  # the saved list is the same object, appended to


def apply_report(order: Order, report: BrokerOrder, ctx: Context) -> list[Event]:
    """Bring ``order`` up to what the broker reports; returns the events, in order.

    Fills already recorded (same ``fill_id``) are skipped, so a report can be applied twice.
    All or nothing: a report that would need an illegal transition or too many fills raises
    and leaves the order as it was, so the caller can count it and keep the last good state.
    """
    saved = snapshot(order)
    try:
        return _apply_report(order, report, ctx)
    except BaseException:
        restore(order, saved)
        raise


def _apply_report(order: Order, report: BrokerOrder, ctx: Context) -> list[Event]:
    events: list[Event] = []
    if report.emulated and not order.emulated and not is_terminal(order.state):
        order.emulated = True  # carried by its next events
    if report.native_exits and not order.native_exits and not is_terminal(order.state):
        order.native_exits = True  # carried by its next events, as emulated
    # Not on a terminal order: it is final, and the change would have no event to replay.
    if report.broker_order_id and order.broker_order_id is None and not is_terminal(
            order.state):
        order.broker_order_id = report.broker_order_id
    if order.state is S.PENDING_SUBMIT:
        # A rejection that comes with fills contradicts itself: it goes the long way below,
        # where the table refuses it, rather than dropping real fills.
        if report.status is BrokerStatus.REJECTED and not report.fills:
            events.append(
                transition(order, S.REJECTED, ctx, reason_code="broker_rejected",
                           reason=report.reason)
            )
            return events
        events.append(transition(order, S.SUBMITTED, ctx))
    quantity = order.spec.quantity
    known = {fill.fill_id for fill in order.fills}
    notional: Decimal | None = None
    for fill in report.fills:
        if fill.fill_id in known:
            continue
        known.add(fill.fill_id)  # a report may list one fill twice
        if notional is None:
            notional = fills_notional(order.fills)
        notional = _add_fill(order, fill, notional)
        full = quantity is not None and order.filled_quantity >= quantity
        events.append(transition(order, S.FILLED if full else S.PARTIALLY_FILLED, ctx,
                                 fill=fill))
    status = report.status
    if (quantity is None and status is BrokerStatus.FILLED
            and order.state is S.PARTIALLY_FILLED):
        # An order by quote amount has no base quantity to reach: filled when the broker
        # says so (after its last fill).
        events.append(transition(order, S.FILLED, ctx))
    if status in _BROKER_TERMINAL and order.state is not _BROKER_TERMINAL[status]:
        code = "broker_rejected" if status is BrokerStatus.REJECTED else None
        events.append(
            transition(order, _BROKER_TERMINAL[status], ctx, reason_code=code,
                       reason=report.reason)
        )
    elif status is BrokerStatus.NEW and order.state is S.SUBMITTED:
        events.append(transition(order, S.ACCEPTED, ctx))
    return events
