"""An account's risk book: what the pre-trade checks measure an order against, built from
one snapshot of the shared state (executor/safety/risk/state.py). Pure; no I/O.

Definitions (all amounts in the quote asset, exact Decimal arithmetic, never float; the
account-wide ones are sums over symbols of one quote asset, which the ``quote_asset``
check of rules.py keeps true):

- Order price: the limit ``price``, else the ``stop_price``, else the reference price; an
  OCO's: the highest of its legs' prices (only one leg fills; the dearer one is reserved).
  Order notional: quantity x order price.
- Reservation: what an open order (one that passed the checks and has not ended) may still
  add: its side, its remaining quantity and the price it was reserved at. It shrinks with
  every fill and vanishes when the order ends (the positions projector does both, in the
  script that moves the fill into the position, so quantity is always either open or held).
- Per symbol, with P = position quantity x reference price (signed), B and S the notional
  of the open buy and sell reservations:
  worst-case long  L = P + B, worst-case short  Sh = -P + S,
  position exposure  E = max(L, Sh, 0)  (what the position can become if the orders on
  one side all fill and those on the other side none).
- Total exposure: the sum of E over symbols. Directional exposure: net long = sum of L,
  net short = sum of Sh.
- Equity: the configured starting ``equity`` plus, over the account's positions, realized
  PnL minus commission plus unrealized PnL at the reference prices (mark to market).
- Available balance: the configured starting ``balance`` plus the cash flows of every fill
  so far (over positions: realized PnL - cost basis - commission, which is the sum of the
  fills' cash flows) minus the reserved notional of open buys. A broker that reports its
  own balances can later replace the starting balance + cash flows (``Book.cash``).
"""

from __future__ import annotations

import datetime
import decimal
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

import msgspec

from producer.contract import OrderSpec, OrderType, Side, WireDecimal, wire

from ...model.positions import Position
from ..trading import TradingState

EXACT = decimal.Context(prec=200, rounding=ROUND_HALF_EVEN,
                        traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
ZERO = Decimal(0)
_ESTIMATE = decimal.Context(prec=34, rounding=ROUND_HALF_EVEN)
_EPOCH = datetime.datetime(1970, 1, 1)
_DAY_MS = 86_400_000


class Reservation(msgspec.Struct, kw_only=True, gc=False):
    """One open order's reservation, a field of ``Keys.risk(account, "open")``."""

    request_id: str  # the place request that made it: only it may release it
    symbol: str
    side: Side
    quantity: WireDecimal  # remaining (unfilled) quantity
    price: WireDecimal  # the order price it was reserved at
    at: int = 0  # epoch ms

    @property
    def notional(self) -> Decimal:
        return EXACT.multiply(self.quantity, self.price)


@dataclass(slots=True)
class Candidate:
    """An order being checked, with the reference price of its symbol (None: unknown)."""

    client_order_id: str
    request_id: str
    spec: OrderSpec
    reference: Decimal | None
    price: Decimal | None = field(init=False)  # the order price (see the module's doc)
    notional: Decimal | None = field(init=False)
    # The base quantity: the order's own, or for a market order by quote amount
    # (``quote_quantity``) that amount at the order price, an estimate to 34 digits (the
    # fills decide the real one). None when unpriced.
    quantity: Decimal | None = field(init=False)

    def __post_init__(self) -> None:
        s = self.spec
        self.price = s.price if s.price is not None else (
            s.stop_price if s.stop_price is not None else self.reference)
        if s.type is OrderType.OCO:
            # Only one leg can fill: valued at the leg that would cost the most.
            self.price = max(p for p in (s.price, s.stop_price, s.stop_limit_price)
                             if p is not None)
        if s.quantity is not None:
            self.quantity = s.quantity
            self.notional = (None if self.price is None
                             else EXACT.multiply(s.quantity, self.price))
        else:
            assert s.quote_quantity is not None, "a place has quantity or quote_quantity"
            self.notional = s.quote_quantity
            self.quantity = (None if self.price is None or self.price <= 0
                             else _ESTIMATE.divide(s.quote_quantity, self.price))


@dataclass(slots=True)
class SymbolBook:
    position: Decimal = ZERO  # signed quantity, long > 0
    cost_basis: Decimal = ZERO
    buy_quantity: Decimal = ZERO  # open reservations
    sell_quantity: Decimal = ZERO
    buy_notional: Decimal = ZERO
    sell_notional: Decimal = ZERO
    orders: int = 0

    @property
    def is_open(self) -> bool:
        """A position held, or orders that may open one."""
        return self.position != 0 or self.orders > 0


@dataclass(slots=True)
class Book:
    account: str
    state: TradingState = TradingState.ACTIVE
    symbols: dict[str, SymbolBook] = field(default_factory=dict)
    open_orders: int = 0
    day_orders: int = 0
    day_pnl: Decimal = ZERO  # realized today, net of commission (negative: a loss)
    pnl: Decimal = ZERO  # realized PnL - commission, all positions, all time
    cash: Decimal = ZERO  # cash flows of every fill: realized - cost basis - commission
    prices: Mapping[str, Decimal | None] = field(default_factory=dict)
    quotes: Mapping[str, str | None] = field(default_factory=dict)  # symbol -> quote asset

    def symbol(self, name: str) -> SymbolBook:
        return self.symbols.get(name) or SymbolBook()

    def reserve(self, reservation: Reservation) -> None:
        """Count an open order's reservation in (in memory)."""
        self._count(reservation, 1)

    def unreserve(self, reservation: Reservation) -> None:
        """Count an open order's reservation out (in memory)."""
        self._count(reservation, -1)

    def _count(self, reservation: Reservation, sign: int) -> None:
        s = self.symbols.get(reservation.symbol)
        if s is None:
            s = self.symbols[reservation.symbol] = SymbolBook()
        # Context methods, not localcontext(): the same arithmetic at a fraction of the cost.
        step = EXACT.add if sign > 0 else EXACT.subtract
        quantity, notional = reservation.quantity, reservation.notional
        if reservation.side is Side.BUY:
            s.buy_quantity = step(s.buy_quantity, quantity)
            s.buy_notional = step(s.buy_notional, notional)
        else:
            s.sell_quantity = step(s.sell_quantity, quantity)
            s.sell_notional = step(s.sell_notional, notional)
        s.orders += sign
        self.open_orders += sign

    def hold(self, position: Position) -> None:
        s = self.symbols.setdefault(position.symbol, SymbolBook())
        s.position, s.cost_basis = position.quantity, position.cost_basis
        with decimal.localcontext(EXACT):
            net = position.realized_pnl - position.commission
            self.pnl += net
            self.cash += net - position.cost_basis


def reservation_of(candidate: Candidate, at: int) -> Reservation:
    price, quantity = candidate.price, candidate.quantity
    assert price is not None and quantity is not None, \
        "an order without a price is denied before it reserves"
    spec = candidate.spec
    return Reservation(request_id=candidate.request_id, symbol=spec.symbol, side=spec.side,
                       quantity=wire(quantity), price=wire(price), at=at)


def reduces_position(position_qty: Decimal, side: Side, quantity: Decimal) -> bool:
    """Whether an order of ``quantity`` on ``side`` only reduces a position of
    ``position_qty`` (signed): it goes against the position and does not go through flat."""
    if side is Side.SELL:
        return position_qty > 0 and quantity <= position_qty
    return position_qty < 0 and quantity <= -position_qty


def reduces(book: Book, order: Candidate) -> bool:
    """Whether the order reduces the position even if every open order on its side fills
    first: the position it may reduce is what those orders leave of it. An order whose
    quantity is unknown (by quote amount, unpriced) is not known to reduce."""
    spec = order.spec
    if order.quantity is None:
        return False
    s = book.symbol(spec.symbol)
    with decimal.localcontext(EXACT):
        left = s.position - s.sell_quantity if spec.side is Side.SELL else (
            s.position + s.buy_quantity)
    return reduces_position(left, spec.side, order.quantity)


class Unpriced(Exception):
    """A measure needs the reference price of ``symbol``, which is unknown."""

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol)
        self.symbol = symbol


def _marked(book: Book, name: str, s: SymbolBook) -> Decimal:
    """The position at the reference price (signed)."""
    if s.position == 0:
        return ZERO
    price = book.prices.get(name)
    if price is None:
        raise Unpriced(name)
    return EXACT.multiply(s.position, price)


def sides(book: Book, name: str) -> tuple[Decimal, Decimal]:
    """Worst-case long and short exposure of one symbol: (P + B, -P + S)."""
    s = book.symbol(name)
    marked = _marked(book, name, s)
    with decimal.localcontext(EXACT):
        return marked + s.buy_notional, s.sell_notional - marked


def position_exposure(book: Book, name: str) -> Decimal:
    long, short = sides(book, name)
    return max(long, short, ZERO)


def total_exposure(book: Book) -> Decimal:
    with decimal.localcontext(EXACT):
        return sum((position_exposure(book, name) for name in book.symbols), ZERO)


def net_exposure(book: Book) -> tuple[Decimal, Decimal]:
    """(net long, net short): the sums of the symbols' worst-case sides."""
    long = short = ZERO
    with decimal.localcontext(EXACT):
        for name in book.symbols:
            lo, sh = sides(book, name)
            long += lo
            short += sh
    return long, short


def equity(book: Book, starting: Decimal) -> Decimal:
    """Starting equity + realized PnL - commission + unrealized PnL at reference prices."""
    with decimal.localcontext(EXACT):
        value = starting + book.pnl
        for name, s in book.symbols.items():
            if s.position != 0:
                value += _marked(book, name, s) - s.cost_basis
        return value


def reserved_buys(book: Book) -> Decimal:
    with decimal.localcontext(EXACT):
        return sum((s.buy_notional for s in book.symbols.values()), ZERO)


def available_balance(book: Book, starting: Decimal) -> Decimal:
    """Starting balance + the fills' cash flows - reserved notional of open buys."""
    with decimal.localcontext(EXACT):
        return starting + book.cash - reserved_buys(book)


def day_id(now_ms: int, reset_offset_ms: int) -> str:
    """The trading day of ``now_ms`` (YYYYMMDD), days starting at the UTC reset time."""
    return _day_text((now_ms - reset_offset_ms) // _DAY_MS)


@functools.lru_cache(maxsize=16)
def _day_text(days: int) -> str:
    # Asked per batch and per folded fill, of a handful of distinct days: formatted once.
    return (_EPOCH + datetime.timedelta(days=days)).strftime("%Y%m%d")
