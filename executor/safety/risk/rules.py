"""The pre-trade checks: one pure function per check, taking the order, the account's risk
book (executor/safety/risk/book.py, where exposure, equity and balance are defined) and the limits
that apply, and returning a denial naming the numbers that failed, or None.

They run in the order of ``CHECKS``; the first denial decides. A limit that is not set is
not checked. A check that needs a number it cannot get (a reference price) denies: an order
is never passed on a check that was not evaluated. Measures of exposure deny only an order
that takes them over their limit *and* increases them, so an order that reduces exposure is
never held back by a limit the market already pushed the account over.

Boundaries: a value exactly at its limit passes; past it is denied.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from producer.contract import ReasonCode, Side, decimal_text, risk_denied

from ..trading import TradingState
from .book import (
    EXACT,
    ZERO,
    Book,
    Candidate,
    Unpriced,
    available_balance,
    equity,
    net_exposure,
    position_exposure,
    reduces,
    reserved_buys,
    sides,
    total_exposure,
)
from .limits import Limits


@dataclass(frozen=True, slots=True)
class Denial:
    code: str  # ``halted`` or ``risk_denied:<check>``
    message: str


_SHOW = decimal.Context(prec=50)  # for percentages shown in messages, never compared
Check = Callable[[Candidate, Book, Limits], "Denial | None"]


def _t(value: Decimal) -> str:
    return decimal_text(value.normalize(EXACT)) if value else "0"


def _deny(check: str, message: str) -> Denial:
    return Denial(risk_denied(check), message)


def _qty(order: Candidate) -> str:
    """The order's quantity as shown in a message (an estimate for a quote amount)."""
    if order.spec.quantity is not None:
        return _t(order.spec.quantity)
    shown = "?" if order.quantity is None else f"~{_t(order.quantity)}"
    return f"{shown} (quote amount {_t(order.spec.quote_quantity or ZERO)})"


def _unpriced(check: str, symbol: str) -> Denial:
    return _deny(check, f"no reference price for {symbol}: {check} cannot be evaluated, so "
                 "the order is denied")


def trading_state(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    if book.state is TradingState.HALTED:
        return Denial(ReasonCode.HALTED, f"account {book.account} is halted: no new orders")
    if book.state is TradingState.REDUCING and not reduces(book, order):
        s = book.symbol(order.spec.symbol)
        return Denial(ReasonCode.HALTED, (
            f"account {book.account} is reducing: only orders that reduce a position pass; "
            f"this {order.spec.side} of {_qty(order)} {order.spec.symbol} does "
            f"not (position {_t(s.position)}, open buys {_t(s.buy_quantity)}, open sells "
            f"{_t(s.sell_quantity)})"))
    return None


def symbol(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    name = order.spec.symbol
    if limits.deny_symbols is not None and name in limits.deny_symbols:
        return _deny("symbol", f"{name} is on the deny list of account {book.account}")
    if limits.allow_symbols is not None and name not in limits.allow_symbols:
        return _deny("symbol", f"{name} is not on the allow list of account {book.account} "
                     f"({', '.join(limits.allow_symbols) or 'empty'})")
    return None


# The limits whose measures add up amounts of every symbol of the account (exposure,
# equity, balance, realized PnL): sums of one asset only.
ACCOUNT_WIDE = ("equity", "balance", "max_total_exposure", "max_net_long", "max_net_short",
                "max_daily_loss", "max_position_pct")


def quote_asset(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    """Account-wide sums add the amounts of every symbol in its quote asset, and nothing
    converts one asset into another: 10 BTC and 10 USDT are not 20 of anything. So an order
    quoted in another asset than the symbols the account holds or has orders in is denied,
    as is one whose quote asset is unknown; an order that reduces a position passes, so an
    account can always unwind."""
    name = order.spec.symbol
    mine = book.quotes.get(name)
    others = {s: book.quotes.get(s) for s, held in book.symbols.items()
              if s != name and held.is_open}
    if mine is not None and all(q == mine for q in others.values()):
        return None
    if reduces(book, order):
        return None
    limits_set = ", ".join(n for n in ACCOUNT_WIDE if getattr(limits, n) is not None)
    if mine is None:
        return _deny("quote_asset", f"the quote asset of {name} is unknown, so its amounts "
                     f"cannot be added to the account-wide limits of account {book.account} "
                     f"({limits_set})")
    held = ", ".join(f"{s} in {q or 'an unknown asset'}" for s, q in sorted(others.items())
                     if q != mine)
    return _deny("quote_asset", f"{name} is quoted in {mine}, but account {book.account} "
                 f"holds or has orders in {held}; its account-wide limits ({limits_set}) add "
                 "amounts of one asset and nothing converts between assets: trade each "
                 "quote asset in its own account")


def reference_price(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    """Every order is valued (its reservation holds its notional): one without a price of
    its own needs the reference price."""
    if order.price is None:
        return _deny("reference_price", f"no reference price for {order.spec.symbol}: a "
                     f"{order.spec.type} order cannot be valued, so it is denied")
    return None


def quantity(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    q = order.quantity
    if q is None:  # by quote amount, and no price to convert it with
        return _unpriced("quantity", order.spec.symbol)
    if limits.min_quantity is not None and q < limits.min_quantity:
        return _deny("quantity", f"quantity {_t(q)} is below min_quantity "
                     f"{_t(limits.min_quantity)} ({order.spec.symbol})")
    if limits.max_quantity is not None and q > limits.max_quantity:
        return _deny("quantity", f"quantity {_t(q)} is above max_quantity "
                     f"{_t(limits.max_quantity)} ({order.spec.symbol})")
    return None


def notional(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    low, high = limits.min_notional, limits.max_notional
    if low is None and high is None:
        return None
    n = order.notional
    assert n is not None  # reference_price ran first
    at = f"({_qty(order)} x {_t(order.price or ZERO)})"
    if low is not None and n < low:
        return _deny("notional", f"notional {_t(n)} {at} is below min_notional {_t(low)} "
                     f"({order.spec.symbol})")
    if high is not None and n > high:
        return _deny("notional", f"notional {_t(n)} {at} is above max_notional {_t(high)} "
                     f"({order.spec.symbol})")
    return None


def price_band(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    band, price = limits.price_band_pct, order.spec.price
    if band is None or price is None:
        return None
    ref = order.reference
    if ref is None:
        return _unpriced("price_band", order.spec.symbol)
    with decimal.localcontext(EXACT):
        # |price - ref| / ref > band / 100, without a division.
        if abs(price - ref) * 100 > band * ref:
            off = _SHOW.divide(abs(price - ref) * 100, ref).quantize(Decimal("0.01"), context=_SHOW)
            return _deny("price_band", f"price {_t(price)} is {off}% from the reference "
                         f"price {_t(ref)} of {order.spec.symbol}, beyond price_band_pct "
                         f"{_t(band)}")
    return None


def reduce_only(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    if not order.spec.reduce_only or reduces(book, order):
        return None
    s = book.symbol(order.spec.symbol)
    return _deny("reduce_only", (
        f"reduce_only {order.spec.side} of {_qty(order)} {order.spec.symbol} "
        f"would increase the position (position {_t(s.position)}, open buys "
        f"{_t(s.buy_quantity)}, open sells {_t(s.sell_quantity)})"))


def daily_loss(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    limit = limits.max_daily_loss
    if limit is None or reduces(book, order):
        return None
    loss = -book.day_pnl
    if loss > limit:
        return _deny("daily_loss", f"realized loss today {_t(loss)} is over max_daily_loss "
                     f"{_t(limit)}: only orders that reduce a position pass")
    return None


def daily_orders(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    limit = limits.max_daily_orders
    if limit is not None and book.day_orders + 1 > limit:
        return _deny("daily_orders", f"order {book.day_orders + 1} today would exceed "
                     f"max_daily_orders {limit}")
    return None


def open_orders(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    limit = limits.max_open_orders
    if limit is not None and book.open_orders + 1 > limit:
        return _deny("open_orders", f"{book.open_orders} orders are open; one more would "
                     f"exceed max_open_orders {limit}")
    return None


def open_positions(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    limit = limits.max_open_positions
    if limit is None or book.symbol(order.spec.symbol).is_open:
        return None
    held = sum(1 for s in book.symbols.values() if s.is_open)
    if held + 1 > limit:
        return _deny("open_positions", f"{held} positions are open or being opened; "
                     f"{order.spec.symbol} would exceed max_open_positions {limit}")
    return None


def balance(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    if limits.balance is None or order.spec.side is not Side.BUY:
        return None
    n = order.notional
    assert n is not None
    available = available_balance(book, limits.balance)
    if n > available:
        return _deny("balance", f"notional {_t(n)} is above the available balance "
                     f"{_t(available)} (starting balance {_t(limits.balance)}, fills "
                     f"{_t(book.cash)}, reserved by open buys {_t(reserved_buys(book))})")
    return None


def _after(order: Candidate, book: Book) -> tuple[Decimal, Decimal]:
    """The order's symbol's (long, short) sides with the order added."""
    long, short = sides(book, order.spec.symbol)
    n = order.notional
    assert n is not None
    with decimal.localcontext(EXACT):
        return (long + n, short) if order.spec.side is Side.BUY else (long, short + n)


def position_pct(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    pct = limits.max_position_pct
    if pct is None:
        return None
    name = order.spec.symbol
    if limits.equity is None:
        return _deny("position_exposure", "max_position_pct is set but the account's equity "
                     "is not configured: position exposure cannot be evaluated")
    try:
        before = position_exposure(book, name)
        after = max(*_after(order, book), ZERO)
        eq = equity(book, limits.equity)
    except Unpriced as exc:
        return _unpriced("position_exposure", exc.symbol)
    with decimal.localcontext(EXACT):
        if after > before and after * 100 > pct * eq:
            cap = pct * eq / 100 if eq > 0 else ZERO
            return _deny("position_exposure", (
                f"{name} exposure would be {_t(after)}, over max_position_pct {_t(pct)}% of "
                f"equity {_t(eq)} (= {_t(cap)})"))
    return None


def total(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    limit = limits.max_total_exposure
    if limit is None:
        return None
    try:
        before = total_exposure(book)
        own = position_exposure(book, order.spec.symbol)
        after_own = max(*_after(order, book), ZERO)
    except Unpriced as exc:
        return _unpriced("total_exposure", exc.symbol)
    with decimal.localcontext(EXACT):
        after = before - own + after_own
        if after > before and after > limit:
            return _deny("total_exposure", f"total exposure would be {_t(after)} "
                         f"(now {_t(before)}), over max_total_exposure {_t(limit)}")
    return None


def directional(order: Candidate, book: Book, limits: Limits) -> Denial | None:
    buy = order.spec.side is Side.BUY
    limit = limits.max_net_long if buy else limits.max_net_short
    if limit is None:
        return None
    try:
        long, short = net_exposure(book)
    except Unpriced as exc:
        return _unpriced("directional", exc.symbol)
    n = order.notional
    assert n is not None
    before = long if buy else short
    with decimal.localcontext(EXACT):
        after = before + n
    if after > limit:
        what = "net long" if buy else "net short"
        key = "max_net_long" if buy else "max_net_short"
        return _deny("directional", f"{what} exposure would be {_t(after)} (now "
                     f"{_t(before)}), over {key} {_t(limit)}")
    return None


# The order the checks run in, with the limits that switch each on (none: always on); the
# first denial decides. Cheap, order-only checks first.
CHECKS: tuple[tuple[Check, tuple[str, ...]], ...] = (
    (trading_state, ()),
    (symbol, ("allow_symbols", "deny_symbols")),
    (quote_asset, ACCOUNT_WIDE),
    (reference_price, ()),
    (quantity, ("min_quantity", "max_quantity")),
    (notional, ("min_notional", "max_notional")),
    (price_band, ("price_band_pct",)),
    (reduce_only, ()),
    (daily_loss, ("max_daily_loss",)),
    (daily_orders, ("max_daily_orders",)),
    (open_orders, ("max_open_orders",)),
    (open_positions, ("max_open_positions",)),
    (balance, ("balance",)),
    (position_pct, ("max_position_pct",)),
    (total, ("max_total_exposure",)),
    (directional, ("max_net_long", "max_net_short")),
)


def checks_for(limits: Limits) -> tuple[Check, ...]:
    """The checks that ``limits`` switch on, in order (the others would pass anyway)."""
    return tuple(check for check, needs in CHECKS
                 if not needs or any(getattr(limits, name) is not None for name in needs))


def evaluate(order: Candidate, book: Book, limits: Limits,
             checks: tuple[Check, ...] | None = None) -> Denial | None:
    """The first check that denies ``order``, or None when every one passes. ``checks``:
    ``checks_for(limits)``, when the caller has it already."""
    for check in checks_for(limits) if checks is None else checks:
        denial = check(order, book, limits)
        if denial is not None:
            return denial
    return None
