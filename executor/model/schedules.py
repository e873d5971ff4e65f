"""Execution schedules (TWAP, VWAP): how a parent order's quantity is cut into child
orders over time, and what is due at a moment (pure; no clock, no I/O).

A schedule is ``n`` slices at ``start``, ``start + interval``, ... (the first at once, as
nautilus_trader and hummingbot send theirs), each the share of the quantity its weight
gives: equal weights for TWAP; for VWAP the weights given, or a U-shaped intraday profile
(``u_shape``: the ends of the horizon twice the middle, where volume is).

Exact and never more: the plan rounds each slice's *cumulative* target down to the
broker's quantity step, so rounding never piles up and the targets end exactly at the
quantity, in ``Decimal``. A slice below the broker's minimum (quantity, or a notional
turned into a quantity by the caller) is merged into the next; a last one below it into
the one before; an order below the minimum is one slice, which the broker judges.

What is due (``due``): a slice's target is cumulative, so a child refused or ended short
gives its rest back to the schedule: the next child is the target then less what is
filled, and a slice missed (no worker owned the schedule) is caught up at once, never sent
twice. One child works at a time, so its fill is known before the next is sized: the
children never add up to more than the quantity.

A participation cap (``participation_room``) cuts a child to its share of the market's
volume since the start less what is filled; a child so cut (``capped``) leaves its slice
open for another once the market has traded more.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from producer.contract import (
    Action,
    Algo,
    AlgoStrategy,
    ContractError,
    OrderSpec,
    OrderType,
    Request,
    Side,
    TimeInForce,
    WireDecimal,
    wire,
    zero,
)
from producer.ids import derived_id
from producer.validation import algo_slices

_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Inexact,
                                         decimal.DivisionByZero])
# For a share of the quantity: a quotient, rounded (down) on purpose to the step after.
_SHARE = decimal.Context(prec=80, rounding=ROUND_FLOOR,
                         traps=[decimal.InvalidOperation, decimal.DivisionByZero])
MAX_SLICES = 1_000
# A child refused without an order is sent again this long after, not at every pass.
RETRY_MS = 5_000


class Slice(msgspec.Struct, frozen=True, gc=False):
    """One planned child: when it is due (epoch ms), its quantity, and the cumulative
    target the schedule has reached once it is sent."""

    at: int
    quantity: Decimal
    target: Decimal


def twap_weights(n: int) -> list[Decimal]:
    return [Decimal(1)] * n


def u_shape(n: int) -> list[Decimal]:
    """A U-shaped intraday volume profile over ``n`` slices: weight ``n² + (2i + 1 - n)²``,
    the first and last slices about twice the middle ones; integers, so exact."""
    return [Decimal(n * n + (2 * i + 1 - n) ** 2) for i in range(n)]


def round_down(quantity: Decimal, step: Decimal | None) -> Decimal:
    if step is None:
        return quantity
    return _EXACT.multiply(
        _EXACT.divide(quantity, step).to_integral_value(ROUND_FLOOR, _EXACT), step)


def plan(quantity: Decimal, start: int, interval_ms: int, weights: Sequence[Decimal], *,
         step: Decimal | None = None, minimum: Decimal | None = None) -> list[Slice]:
    """The slices of ``quantity`` from ``start``, one per weight, ``interval_ms`` apart.

    ``quantity`` is a multiple of ``step`` (the broker's check saw the parent); weights are
    positive. The returned quantities add up to exactly ``quantity``; each is a multiple
    of ``step`` and at least ``minimum``, unless the whole order is one slice."""
    n = len(weights)
    if not 1 <= n <= MAX_SLICES:
        raise ValueError(f"a schedule has 1 to {MAX_SLICES} slices, not {n}")
    if quantity <= 0 or any(w <= 0 for w in weights):
        raise ValueError("the quantity and every weight must be positive")
    total = sum(weights, Decimal(0))
    targets: list[Decimal] = []
    so_far = Decimal(0)
    for i, w in enumerate(weights):
        so_far = _EXACT.add(so_far, w)
        share = quantity if i == n - 1 else _SHARE.divide(_SHARE.multiply(quantity, so_far),
                                                          total)
        targets.append(round_down(share, step))
    # Merge the slices below the minimum forward (a zero slice too: nothing to send).
    slices: list[Slice] = []
    sent = Decimal(0)
    for i, target in enumerate(targets):
        size = _EXACT.subtract(target, sent)
        if size <= 0 or (minimum is not None and size < minimum and i < n - 1):
            continue
        slices.append(Slice(start + i * interval_ms, size, target))
        sent = target
    last = slices[-1]
    if minimum is not None and last.quantity < minimum and len(slices) > 1:
        before = slices[-2]
        slices[-2:] = [Slice(before.at, _EXACT.add(before.quantity, last.quantity),
                             last.target)]
    return slices


class Child(msgspec.Struct, frozen=True, gc=False):
    """What became of a child sent for slice ``slice`` (an index into the plan) at ``at``:
    what it filled, whether it is over (ended at the broker, or refused), and whether it
    was refused without an order (trading halted, a risk check, the broker's filters)."""

    slice: int
    quantity: Decimal
    at: int
    filled: Decimal = Decimal(0)
    over: bool = False
    refused: bool = False
    # Cancelled by the schedule to be sent again at a new price (a limit child unfilled
    # for reprice_ms): its slice may have another child, at once.
    repriced: bool = False
    # Made smaller than its slice by the participation cap: its slice may have another
    # child once the market has traded more.
    capped: bool = False


class Due(msgspec.Struct, frozen=True, gc=False):
    """What the schedule needs now: a child of ``quantity`` for slice ``slice`` (quantity
    0: none now); ``done``: nothing more will be sent (all filled, the last slice's child
    has ended, or the end time has passed); ``left``: then, what will not be filled."""

    quantity: Decimal = Decimal(0)
    slice: int = -1
    done: bool = False
    left: Decimal = Decimal(0)


def due(slices: Sequence[Slice], children: Sequence[Child], now: int, *,
        ended: bool = False) -> Due:
    """The child due at ``now``. Nothing while a child works. Each slice gets one child,
    for the target of the last slice whose time has come less what is filled (a slice
    missed while no worker owned the schedule is caught up then, once); a child that ended
    short leaves its rest to the next slice, and one refused is sent again ``RETRY_MS``
    later; one cancelled to be re-priced, or held back by the participation cap, leaves its
    rest to a new child of its slice (at once; the cap then decides how much).
    ``ended``: the end time has passed, or the parent was cancelled: nothing more is sent,
    and it is done once no child works."""
    filled = sum((c.filled for c in children), Decimal(0))
    left = _EXACT.subtract(slices[-1].target, filled)
    if any(not c.over for c in children):
        return Due()
    if ended or left <= 0:
        return Due(done=True, left=max(left, Decimal(0)))
    k = max((i for i, s in enumerate(slices) if s.at <= now), default=-1)
    if k < 0:
        return Due()
    mine = [c for c in children if c.slice >= k]
    if any(not (c.refused or c.repriced or c.capped) for c in mine):
        # This slice had its child: the rest waits for the next one, or is what is left.
        return Due(done=True, left=left) if k == len(slices) - 1 else Due()
    size = _EXACT.subtract(slices[k].target, filled)
    if size <= 0 or any(c.refused and now - c.at < RETRY_MS for c in mine):
        return Due()
    return Due(quantity=size, slice=k)


class Sent(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One child published for the schedule (``Keys.algos``): its client id, slice,
    quantity, when, the pending entry of its request; once over, what it filled and at
    what notional (so its record may expire); ``cancel``: its cancel was published."""

    id: str
    slice: int
    quantity: WireDecimal
    at: int
    request: str = ""
    seen: bool = False
    over: bool = False
    refused: bool = False
    filled: WireDecimal = msgspec.field(default_factory=zero)
    notional: WireDecimal = msgspec.field(default_factory=zero)
    commissions: dict[str, WireDecimal] = {}  # once over: its fees, per asset
    cancel: bool = False
    repriced: bool = False  # cancelled to be sent again at a new price
    capped: bool = False  # smaller than its slice's due, by the participation cap


class Progress(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """An algorithm's stored state: begin.lua writes ``{"account": ...}`` with the parent;
    the owner adds the reference price on its first pass (``arrival``, for slippage) and
    each child it publishes (``n`` so far: the next one's number); with a participation
    cap, the market's volume counted so far."""

    account: str
    arrival: WireDecimal | None = None
    children: list[Sent] = []
    n: int = 0
    # The participation cap's count: the market's volume from the start up to ``volume_to``
    # (epoch ms; 0: not counted yet), as the broker reports it.
    volume: WireDecimal = msgspec.field(default_factory=zero)
    volume_to: int = 0


def check_parent(check: Callable[[OrderSpec], OrderSpec | None], spec: OrderSpec,
                 step: Decimal | None) -> OrderSpec | None:
    """The broker's check (``Broker.check``) of an algorithm's parent ``spec``: as the one
    order it stands for; or, when that is refused for its quantity alone (above the
    broker's largest order or notional), as its largest planned child, its quantity on the
    step: the children are what the broker gets, and splitting an order too big for one is
    what a schedule is for. Raises the first refusal when the child is refused too."""
    try:
        return check(spec)
    except ContractError as exc:
        if exc.field != "quantity" or spec.algo is None or spec.quantity is None:
            raise
        if step is not None and round_down(spec.quantity, step) != spec.quantity:
            raise
        largest = max(s.quantity for s in plan(spec.quantity, 0, 1_000, weights_of(spec.algo),
                                               step=step))
        if largest == spec.quantity:
            raise
        try:
            check(msgspec.structs.replace(spec, quantity=largest))
        except ContractError:
            raise exc from None
        return None


# An emulated iceberg's parent lasts until filled or cancelled, or until its expire_at.
ICEBERG_TIME_IN_FORCE = (TimeInForce.GTC, TimeInForce.GTD)


def iceberg_parent(check: Callable[[OrderSpec], OrderSpec | None], spec: OrderSpec,
                   step: Decimal | None) -> OrderSpec:
    """``spec``, a limit order whose ``display_quantity`` its broker cannot show
    (``NeedsSlicing``), as the parent of an emulated iceberg: ``algo`` ``iceberg``. Checked
    as its children will be, by the broker's ``check``: a good-till-cancelled limit of
    ``display_quantity`` at its price; its quantity on the step. Raises ``ContractError``
    naming the field."""
    shown = spec.display_quantity
    assert shown is not None and spec.quantity is not None
    if spec.type is not OrderType.LIMIT:
        raise ContractError(f"display_quantity is emulated for a limit order only, not "
                            f"{spec.type}", "display_quantity")
    tif = spec.time_in_force or TimeInForce.GTC
    if tif not in ICEBERG_TIME_IN_FORCE:
        raise ContractError(f"time_in_force {tif} is not allowed with an emulated iceberg "
                            "(gtc or gtd: its children go good till cancelled)",
                            "time_in_force")
    if step is not None and round_down(spec.quantity, step) != spec.quantity:
        raise ContractError(f"quantity {spec.quantity} is not a multiple of the step {step}",
                            "quantity")
    check(msgspec.structs.replace(spec, quantity=shown, display_quantity=None,
                                  time_in_force=TimeInForce.GTC, expire_at=None))
    return msgspec.structs.replace(spec, algo=Algo(strategy=AlgoStrategy.ICEBERG))


def iceberg_due(quantity: Decimal, display: Decimal, children: Sequence[Child], now: int,
                *, ended: bool = False) -> Due:
    """What an emulated iceberg needs now: nothing while a child works; once none does,
    a child of ``display`` (or what is left, when less), at once: the next is shown as
    soon as the last has ended. One refused without an order is sent again ``RETRY_MS``
    later. ``ended`` (cancelled, or past its ``expire_at``): done once no child works."""
    filled = sum((c.filled for c in children), Decimal(0))
    left = _EXACT.subtract(quantity, filled)
    if any(not c.over for c in children):
        return Due()
    if ended or left <= 0:
        return Due(done=True, left=max(left, Decimal(0)))
    if children and children[-1].refused and now - children[-1].at < RETRY_MS:
        return Due()
    return Due(quantity=min(display, left), slice=len(children))


def participation_room(cap: Decimal, volume: Decimal, filled: Decimal,
                       step: Decimal | None) -> Decimal:
    """How much the next child may take under a participation cap: ``cap`` of the market's
    ``volume`` since the start, less what the children ``filled`` (none works while a
    child is sized), on the step, rounded down; never below 0."""
    room = _SHARE.subtract(_SHARE.multiply(cap, volume), filled)
    return max(round_down(room, step), Decimal(0))


def child_id(parent_id: str, n: int) -> str:
    """The client id of the parent's ``n``-th child: ``<parent>-E<n>`` (as nautilus_trader
    names spawned orders), or, too long for a broker (36 characters), the parent id cut
    short with a digest of the whole, so two parents never share children's ids."""
    return derived_id(parent_id, f"-E{n}")


def child_request(parent_id: str, spec: OrderSpec, quantity: Decimal, n: int,
                  slice_: int, price: Decimal | None = None) -> Request:
    """The request of the parent's ``n``-th child: an order of the parent's type for
    ``quantity`` (a limit at ``price``, good till cancelled), on its side, account and
    symbol, ``reduce_only`` as the parent; ``metadata`` names the parent and the slice
    (and the parent's order component)."""
    metadata: dict[str, object] = {"algo_id": parent_id, "slice": slice_}
    for key in ("component", "component_version"):
        if spec.metadata and key in spec.metadata:
            metadata[key] = spec.metadata[key]
    return Request(action=Action.PLACE, client_order_id=child_id(parent_id, n),
                   account=spec.account, symbol=spec.symbol, side=spec.side,
                   type=OrderType.MARKET if price is None else OrderType.LIMIT,
                   quantity=wire(quantity), price=None if price is None else wire(price),
                   reduce_only=spec.reduce_only, strategy_id=spec.strategy_id,
                   signal_id=spec.signal_id, metadata=metadata)


def weights_of(algo: Algo) -> list[Decimal]:
    n, _ = algo_slices(algo)
    if algo.weights is not None:
        return list(algo.weights)
    return u_shape(n) if algo.strategy == AlgoStrategy.VWAP else twap_weights(n)


def child_price(side: Side, reference: Decimal, offset_bps: Decimal, cap: Decimal,
                tick: Decimal | None) -> Decimal:
    """A limit child's price: ``reference`` moved ``offset_bps`` to the passive side (a
    buy's below, a sell's above), never beyond the parent's price ``cap``, on the tick (a
    buy's rounded down, a sell's up: never more aggressive than asked)."""
    shift = _SHARE.divide(_SHARE.multiply(reference, offset_bps), 10_000)
    if side is Side.BUY:
        price = min(_SHARE.subtract(reference, shift), cap)
        rounding = ROUND_FLOOR
    else:
        price = max(_SHARE.add(reference, shift), cap)
        rounding = ROUND_CEILING
    if tick is None:
        return price
    return _EXACT.multiply(_SHARE.divide(price, tick).to_integral_value(rounding, _SHARE),
                           tick)


def slippage_bps(side: Side, average: Decimal, arrival: Decimal) -> Decimal:
    """How much worse than the arrival price the parent filled, in basis points (negative:
    better): paid more on a buy, received less on a sell."""
    sign = 1 if side is Side.BUY else -1
    return _SHARE.divide(_SHARE.multiply(sign * (average - arrival), 10_000), arrival)
