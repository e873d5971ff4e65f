"""The paper exchange's matching model (pure: Decimal only, no I/O, no clock of its own).

The book is synthetic, rebuilt around the reference price ``ref``: ``depth_levels`` levels a
side, ask level ``i`` at ``ref * (1 + (slippage_bps + i * depth_step_bps) / 10000)``
rounded up to the tick, bid level ``i`` mirrored and rounded down, each holding
``depth_quantity``. Orders never deplete it: every order sees the whole book.

At submission (``submit``):
- market orders walk the book; what exceeds its depth expires ("insufficient liquidity");
- limit orders take the levels within their limit (taker fee); the remainder rests (GTC,
  GTD), expires (IOC), or the whole order expires unless it all fills (FOK);
- stop / take-profit / if-touched orders rest untriggered; one whose trigger is already met
  is rejected ("order would trigger immediately");
- trailing stops rest untriggered, their tracking started (without an activation price)
  from the reference at submission, which never fires them.

On each match pass (``advance``), a resting order:
- expires if it is GTD and its ``expire_at`` has come;
- if untriggered, is triggered when the reference crosses its stop price (buy stop: ref >=
  stop, sell stop: ref <= stop; take-profit and if-touched the other way round) and then
  executes as a market order (stop, take_profit, market_if_touched) or a limit order at
  ``price`` (the ``*_limit`` types);
- if an untriggered trailing stop, has its water mark and trigger advanced from the
  reference (executor/model/triggers.py: the rules the emulator shares), stored with it
  when they moved; triggered, it executes as a market order (trailing_stop) or a limit at
  its computed limit price (trailing_stop_limit);
- if a limit (or triggered limit), fills at its limit price (maker fee) when the reference
  crosses it (buy: ref <= price, sell: ref >= price), at most ``depth_quantity`` per pass.

Fees: notional * bps / 10000 in the quote asset, rounded half-up to 8 places.
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, InvalidOperation

import msgspec

from producer.contract import (
    TOUCHED_TYPES,
    TRAILING_TYPES,
    ContractError,
    Fill,
    OrderSpec,
    OrderType,
    Side,
    TimeInForce,
    TrailingOffsetType,
    WireDecimal,
    plus,
    wire,
    wire_opt,
    zero,
)

from ...model import triggers
from ...model.triggers import TrailState
from ..base import BrokerStatus
from .config import PaperAccount, SymbolConfig
from .records import PaperOrder

_BPS = Decimal(10_000)
_ONE = Decimal(1)
_ZERO = Decimal(0)
_FEE_QUANTUM = Decimal("0.00000001")
# Filters are checked with room to spare: a 20-digit price on a 1e-8 tick has 28 digits.
_WIDE = Context(prec=80)

INSUFFICIENT_LIQUIDITY = "insufficient liquidity"
WOULD_TRIGGER = "order would trigger immediately"
IOC_EXPIRED = "immediate-or-cancel: unfilled remainder expired"
FOK_EXPIRED = "fill-or-kill: the whole quantity cannot fill within the limit price"
GTD_EXPIRED = "good-till-date: expire_at reached"
GTD_IN_PAST = "good-till-date: expire_at is not in the future"

TRIGGERED_TYPES = frozenset(
    {OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT}
) | TOUCHED_TYPES | TRAILING_TYPES
_LIMIT_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT,
                          OrderType.LIMIT_IF_TOUCHED, OrderType.TRAILING_STOP_LIMIT})
# An oco is native too (Binance's semantics, and the emulator's, model/emulation.py): its
# limit leg rests as a maker at ``price``; its stop leg fires at ``stop_price`` as a market
# order, or a limit at ``stop_limit_price``; whichever goes first ends the other.
SUPPORTED_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.OCO}) | TRIGGERED_TYPES


class Direction(enum.StrEnum):
    """Which way the reference price must move to wake a resting order at its level."""

    DOWN = "down"  # wakes when ref <= level: buy limit, sell stop, buy take-profit
    UP = "up"  # wakes when ref >= level: sell limit, buy stop, sell take-profit
    # Every pass: an untriggered trailing stop, whose trigger moves with the reference
    # (its water mark must follow every new high, or low, as well as wake on a crossing).
    EVERY = "every"


# -- filters ---------------------------------------------------------------------------------


# The paper exchange has no trading day and no auctions.
PAPER_TIME_IN_FORCE = (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD)

def _is_multiple(value: Decimal, step: Decimal) -> bool:
    try:
        return _WIDE.remainder(value, step).is_zero()
    except InvalidOperation:
        return False


def quantity_of(spec: OrderSpec) -> WireDecimal:
    """The base quantity of a paper order (``check`` refuses orders by quote amount)."""
    if spec.quantity is None:
        raise ContractError("quote_quantity is not supported by the paper exchange (give "
                            "quantity)", "quote_quantity")
    return spec.quantity


def check(order: OrderSpec, config: PaperAccount) -> SymbolConfig:
    """The symbol's config, or ``ContractError`` naming the field the exchange would refuse."""
    sym = config.symbols.get(order.symbol)
    if sym is None:
        known = ", ".join(sorted(config.symbols))
        raise ContractError(f"unknown symbol {order.symbol!r}; known symbols: {known}", "symbol")
    if order.type not in SUPPORTED_TYPES:
        raise ContractError(f"order type {order.type} is not supported by the paper exchange",
                            "type")
    qty = quantity_of(order)
    if not (sym.min_quantity <= qty <= sym.max_quantity) or not _is_multiple(qty, sym.step_size):
        raise ContractError(
            f"quantity {qty} not allowed for {order.symbol}: it must be from "
            f"{sym.min_quantity} to {sym.max_quantity} in steps of {sym.step_size}",
            "quantity",
        )
    if ((order.type in _LIMIT_TYPES and order.type not in TRAILING_TYPES)
            or order.type is OrderType.OCO) and order.price is None:
        raise ContractError(f"price is required for a {order.type} order", "price")
    if order.type in TRAILING_TYPES:
        if order.trailing_offset is None:
            raise ContractError(f"trailing_offset is required for a {order.type} order",
                                "trailing_offset")
        if order.type is OrderType.TRAILING_STOP_LIMIT and order.limit_offset is None:
            raise ContractError("limit_offset is required for a trailing_stop_limit order",
                                "limit_offset")
    elif (order.type in TRIGGERED_TYPES or order.type is OrderType.OCO) \
            and order.stop_price is None:
        raise ContractError(f"stop_price is required for a {order.type} order", "stop_price")
    for name, value in (("price", order.price), ("stop_price", order.stop_price),
                        ("stop_limit_price", order.stop_limit_price)):
        if value is None:
            continue
        if value <= 0 or not _is_multiple(value, sym.tick_size):
            raise ContractError(
                f"{name} {value} not allowed for {order.symbol}: it must be a positive "
                f"multiple of the tick size {sym.tick_size}",
                name,
            )
    if order.time_in_force not in PAPER_TIME_IN_FORCE:
        raise ContractError(f"time_in_force {order.time_in_force} is not supported by the paper "
                            f"exchange (it takes {', '.join(PAPER_TIME_IN_FORCE)})",
                            "time_in_force")
    if order.time_in_force is TimeInForce.GTD and order.expire_at is None:
        raise ContractError("expire_at is required when time_in_force is gtd", "expire_at")
    return sym


# -- the book --------------------------------------------------------------------------------


def round_up(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(ROUND_CEILING) * tick


def round_down(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(ROUND_FLOOR) * tick


def ticks(price: Decimal, tick: Decimal) -> int:
    """A price on the tick, in whole ticks."""
    return int(price / tick)


def ticks_up(price: Decimal, tick: Decimal) -> int:
    """The smallest whole number of ticks at or above ``price``."""
    return int((price / tick).to_integral_value(ROUND_CEILING))


def ticks_down(price: Decimal, tick: Decimal) -> int:
    """The largest whole number of ticks at or below ``price``."""
    return int((price / tick).to_integral_value(ROUND_FLOOR))


class Book:
    """The synthetic book around one reference price; best levels first."""

    __slots__ = ("asks", "bids", "depth", "ref")

    def __init__(self, ref: Decimal, sym: SymbolConfig, config: PaperAccount) -> None:
        self.ref = ref
        self.depth = sym.depth_quantity
        tick = sym.tick_size
        self.asks: list[WireDecimal] = []
        self.bids: list[WireDecimal] = []
        for i in range(config.depth_levels):
            away = (config.slippage_bps + i * config.depth_step_bps) / _BPS
            self.asks.append(wire(round_up(ref * (_ONE + away), tick)))
            bid = round_down(ref * (_ONE - away), tick)
            if bid > 0:
                self.bids.append(wire(bid))

    def take(self, side: Side, quantity: Decimal,
             limit: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
        """The (price, quantity) a taker gets, level by level, never beyond ``limit``."""
        buy = side is Side.BUY
        depth = self.depth
        out: list[tuple[Decimal, Decimal]] = []
        if quantity <= 0:
            return out
        remaining = quantity
        for price in self.asks if buy else self.bids:
            if limit is not None and (price > limit if buy else price < limit):
                break
            if remaining <= depth:
                out.append((price, remaining))
                break
            out.append((price, depth))
            remaining -= depth
        return out


# -- fills -----------------------------------------------------------------------------------


def commission(price: Decimal, quantity: Decimal, fee_bps: Decimal) -> Decimal:
    return (price * quantity * fee_bps / _BPS).quantize(_FEE_QUANTUM, ROUND_HALF_UP)


def _fill(order: PaperOrder, n: int, price: Decimal, quantity: Decimal, fee_bps: Decimal,
          liquidity: str, asset: str, now: int) -> Fill:
    return Fill(
        fill_id=f"{order.broker_order_id}-{n}",
        price=wire(price),
        quantity=wire(quantity),
        commission=wire(commission(price, quantity, fee_bps)),
        commission_asset=asset,
        liquidity=liquidity,
        at=now,
    )


def _with_fills(order: PaperOrder, trades: list[tuple[Decimal, Decimal]], fee_bps: Decimal,
                liquidity: str, asset: str, now: int) -> tuple[list[Fill], WireDecimal]:
    fills = list(order.fills)
    filled = order.filled_quantity
    for price, quantity in trades:
        fill = _fill(order, len(fills) + 1, price, quantity, fee_bps, liquidity, asset, now)
        fills.append(fill)
        filled = plus(filled, fill.quantity)
    return fills, filled


# -- decisions -------------------------------------------------------------------------------


def is_triggered(spec: OrderSpec, ref: Decimal) -> bool:
    """Whether a stop / take-profit / if-touched order's trigger is met at the reference."""
    assert spec.stop_price is not None
    return triggers.stop_triggered(spec.type, spec.side, spec.stop_price, ref)


def trail(order: PaperOrder, ref: Decimal, sym: SymbolConfig) -> TrailState:
    """A trailing stop's state after seeing ``ref`` (the same object when unchanged)."""
    spec = order.spec
    assert spec.trailing_offset is not None
    return triggers.track(order.trail or TrailState(), spec.side, ref, spec.trailing_offset,
                          spec.trailing_offset_type or TrailingOffsetType.PRICE,
                          spec.activation_price, sym.tick_size)


def oco_leg(spec: OrderSpec, ref: Decimal) -> tuple[Decimal | None, bool] | None:
    """The leg of an oco ``ref`` fires: (its limit price, None for a stop-market leg;
    whether it is the limit leg), or None while the price is between them."""
    assert spec.price is not None and spec.stop_price is not None
    if triggers.touched(spec.side, spec.price, ref):
        return spec.price, True
    if triggers.stop_triggered(OrderType.STOP, spec.side, spec.stop_price, ref):
        return spec.stop_limit_price, False
    return None


def limit_of(order: PaperOrder) -> Decimal | None:
    """The limit price an order executes at (None: a market order, or not yet triggered):
    a trailing_stop_limit's is computed when it triggers, an oco's is its fired leg's,
    every other one is its price."""
    if order.spec.type in (OrderType.TRAILING_STOP_LIMIT, OrderType.OCO):
        return order.limit_price
    return order.spec.price if order.spec.type in _LIMIT_TYPES else None


def submit(client_order_id: str, broker_order_id: str, spec: OrderSpec, book: Book,
           sym: SymbolConfig, config: PaperAccount, now: int,
           submission: str = "") -> PaperOrder:
    """What the exchange makes of a new order (``check`` has passed) at ``book.ref``."""
    order = PaperOrder(
        version=1,
        client_order_id=client_order_id,
        broker_order_id=broker_order_id,
        spec=spec,
        status=BrokerStatus.NEW,
        created_at=now,
        updated_at=now,
        submission=submission,
    )
    if spec.time_in_force is TimeInForce.GTD and (spec.expire_at or 0) <= now:
        order.status, order.reason = BrokerStatus.REJECTED, GTD_IN_PAST
        return order
    if spec.type in TRAILING_TYPES:
        # The reference that starts the tracking never fires it (triggers.py).
        order.trail = trail(order, book.ref, sym)
        return order
    if spec.type in TRIGGERED_TYPES:
        if is_triggered(spec, book.ref):
            order.status, order.reason = BrokerStatus.REJECTED, WOULD_TRIGGER
        return order
    if spec.type is OrderType.OCO:
        if oco_leg(spec, book.ref) is not None:  # Binance's price rule: limit > last > stop
            order.status, order.reason = BrokerStatus.REJECTED, WOULD_TRIGGER
        return order
    return _take(order, book, sym, config, now)


def advance(order: PaperOrder, book: Book, sym: SymbolConfig, config: PaperAccount,
            now: int) -> PaperOrder | None:
    """A resting order's next state at ``book.ref`` (version + 1), or None if unchanged."""
    if not order.is_open:
        return None
    spec = order.spec
    if spec.time_in_force is TimeInForce.GTD and spec.expire_at is not None \
            and now >= spec.expire_at:
        return msgspec.structs.replace(order, version=order.version + 1, updated_at=now,
                                       status=BrokerStatus.EXPIRED, reason=GTD_EXPIRED)
    if spec.type in TRAILING_TYPES and not order.triggered:
        return _advance_trailing(order, book, sym, config, now)
    if spec.type in TRIGGERED_TYPES and not order.triggered:
        if not is_triggered(spec, book.ref):
            return None
        fired = msgspec.structs.replace(order, version=order.version + 1, updated_at=now,
                                        triggered=True)
        return _take(fired, book, sym, config, now)
    if spec.type is OrderType.OCO and not order.triggered:
        leg = oco_leg(spec, book.ref)
        if leg is None:
            return None
        at, resting = leg
        if not resting:  # the stop leg: a taker, as a triggered stop
            fired = msgspec.structs.replace(order, version=order.version + 1, updated_at=now,
                                            triggered=True, limit_price=wire_opt(at))
            return _take(fired, book, sym, config, now)
        # The limit leg: its maker fill below, at its price, as a resting limit's (which
        # makes the one new version for both changes).
        order = msgspec.structs.replace(order, triggered=True, limit_price=wire_opt(at))
    price = limit_of(order)
    assert price is not None
    if not (book.ref <= price if spec.side is Side.BUY else book.ref >= price):
        return None
    size = min(quantity_of(spec) - order.filled_quantity, sym.depth_quantity)
    fills, filled = _with_fills(order, [(price, size)], config.maker_fee_bps, "maker",
                                sym.quote_asset, now)
    return msgspec.structs.replace(
        order,
        version=order.version + 1,
        updated_at=now,
        fills=fills,
        filled_quantity=filled,
        status=(BrokerStatus.FILLED if filled >= quantity_of(spec)
                else BrokerStatus.PARTIALLY_FILLED),
    )


def _advance_trailing(order: PaperOrder, book: Book, sym: SymbolConfig, config: PaperAccount,
                      now: int) -> PaperOrder | None:
    """An untriggered trailing stop at ``book.ref``: its state moved (stored), or it fired
    (executed as a market order, or a limit at trigger -/+ limit_offset), or neither."""
    spec = order.spec
    state = trail(order, book.ref, sym)
    if not triggers.trailing_fired(spec.side, state, book.ref):
        if state is order.trail:
            return None
        return msgspec.structs.replace(order, version=order.version + 1, updated_at=now,
                                       trail=state)
    limit: WireDecimal | None = None
    if spec.type is OrderType.TRAILING_STOP_LIMIT:
        assert state.trigger is not None and spec.limit_offset is not None
        limit = wire(max(triggers.trailing_limit_price(spec.side, state.trigger,
                                                       spec.limit_offset, sym.tick_size),
                         sym.tick_size))  # a sell's limit stays a positive price
    fired = msgspec.structs.replace(order, version=order.version + 1, updated_at=now,
                                    triggered=True, trail=state, limit_price=limit)
    return _take(fired, book, sym, config, now)


def _take(order: PaperOrder, book: Book, sym: SymbolConfig, config: PaperAccount,
          now: int) -> PaperOrder:
    """Execute ``order`` (market, limit or just-triggered) as a taker against the book."""
    spec = order.spec
    limit = limit_of(order)
    # Nothing filled yet (the zero every new order starts at): all of it, the same object.
    quantity = quantity_of(spec)
    remaining = quantity if order.filled_quantity is zero() \
        else quantity - order.filled_quantity
    trades = book.take(spec.side, remaining, limit)
    tif = spec.time_in_force
    if limit is not None and tif is TimeInForce.FOK \
            and sum((size for _, size in trades), _ZERO) < remaining:
        order.status, order.reason = BrokerStatus.EXPIRED, FOK_EXPIRED
        return order
    fills, filled = _with_fills(order, trades, config.taker_fee_bps, "taker", sym.quote_asset,
                                now)
    order.fills, order.filled_quantity = fills, filled
    if filled >= quantity:
        order.status = BrokerStatus.FILLED
    elif limit is None:
        order.status, order.reason = BrokerStatus.EXPIRED, INSUFFICIENT_LIQUIDITY
    elif tif is TimeInForce.IOC:
        order.status, order.reason = BrokerStatus.EXPIRED, IOC_EXPIRED
    else:
        order.status = BrokerStatus.PARTIALLY_FILLED if filled > 0 else BrokerStatus.NEW
    return order


def watch(order: PaperOrder, sym: SymbolConfig) -> tuple[Direction, int] | None:
    """Where a resting order waits: the direction and level (in ticks) that wake it."""
    if not order.is_open:
        return None
    spec = order.spec
    if spec.type in TRAILING_TYPES and not order.triggered:
        return Direction.EVERY, 0
    if spec.type is OrderType.OCO and not order.triggered:
        return Direction.EVERY, 0  # two levels, on either side of the price
    if spec.type in TRIGGERED_TYPES and not order.triggered:
        assert spec.stop_price is not None
        rises = (spec.type in triggers.STOP_TYPES) == (spec.side is Side.BUY)
        return (Direction.UP if rises else Direction.DOWN), ticks(spec.stop_price, sym.tick_size)
    price = limit_of(order)
    assert price is not None
    down = spec.side is Side.BUY
    return (Direction.DOWN if down else Direction.UP), ticks(price, sym.tick_size)
