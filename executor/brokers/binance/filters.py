"""Binance's symbol filters, read from exchangeInfo and checked before anything is sent.

Pure: ``parse`` turns exchangeInfo into ``Rules`` per symbol; ``check`` raises
``ContractError`` naming the filter and the allowed values, or returns the order (with its
quantity rounded down to the step when the account asks for that). The filters that need a
price (PERCENT_PRICE_BY_SIDE, a market order's NOTIONAL) use the last reference price when
one is known and are skipped otherwise: Binance checks them again.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_CEILING, Decimal
from typing import Any

import msgspec

from producer.contract import (
    TRAILING_TYPES,
    ContractError,
    OrderSpec,
    OrderType,
    TimeInForce,
    TrailingOffsetType,
    wire,
)

from ..base import EMULATED, NeedsEmulation

# Remainders of 20-digit amounts by 8-decimal steps, exactly.
_EXACT = decimal.Context(prec=100)
MARKET_TYPES = frozenset({OrderType.MARKET, OrderType.STOP, OrderType.TAKE_PROFIT})
# Binance's name of each of our order types.
BINANCE_TYPE = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.LIMIT_MAKER: "LIMIT_MAKER",
    OrderType.STOP: "STOP_LOSS",
    OrderType.STOP_LIMIT: "STOP_LOSS_LIMIT",
    OrderType.TAKE_PROFIT: "TAKE_PROFIT",
    OrderType.TAKE_PROFIT_LIMIT: "TAKE_PROFIT_LIMIT",
}
# Our conditional types Binance has natively (binance-spot-api-docs faqs/trailing-stop-faq.md
# "What kind of price changes will trigger my trailing stop order?", rest-api.md new order):
# - if-touched: TAKE_PROFIT(_LIMIT)'s stop condition is ours exactly, a BUY's "market price
#   <= stop price" (a dip), a SELL's ">= stop price"; then a MARKET, or a limit at ``price``.
# - trailing_stop: ``trailingDelta`` on any stop type trails the highest trade price for a
#   SELL, the lowest for a BUY (fires after a fall / rise of the delta in bips from it).
#   Without ``stopPrice`` tracking starts at once, from the last trade (scenario E; the
#   FAQ's text says "from the next trade", a trade later at most): our trailing stop
#   without activation_price, on STOP_LOSS. With ``stopPrice``, tracking
#   starts when the type's stop condition is met, and that trade is the first water mark
#   (scenarios A-D): TAKE_PROFIT's condition (SELL >= stop, BUY <= stop) is our activation
#   exactly, so activation_price is sent as a TAKE_PROFIT's ``stopPrice``.
# - trailing_stop_limit is not native: Binance's ``price`` is fixed when the order is
#   placed, ours is the trigger -/+ limit_offset, wherever the trail took the trigger.
CONDITIONAL_TYPE = {
    OrderType.MARKET_IF_TOUCHED: "TAKE_PROFIT",
    OrderType.LIMIT_IF_TOUCHED: "TAKE_PROFIT_LIMIT",
}
_BIPS_PER_PERCENT = Decimal(100)
# The types that take ``icebergQty`` (rest-api.md new order; it needs timeInForce GTC).
ICEBERG_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})


class Range(msgspec.Struct, frozen=True):
    low: Decimal  # 0: no lower bound
    high: Decimal  # 0: no upper bound
    step: Decimal  # 0: any

    def fits(self, value: Decimal, base: Decimal = Decimal(0)) -> bool:
        if (self.low and value < self.low) or (self.high and value > self.high):
            return False
        return not self.step or _EXACT.remainder(value - base, self.step) == 0

    def text(self) -> str:
        return f"min {_t(self.low)}, max {_t(self.high)}, step {_t(self.step)}"


class TrailingBounds(msgspec.Struct, frozen=True):
    """TRAILING_DELTA, in bips: ``above`` bounds the deltas of STOP_LOSS BUY and TAKE_PROFIT
    SELL orders, ``below`` those of STOP_LOSS SELL and TAKE_PROFIT BUY (filters.md)."""

    above: tuple[int, int]  # minTrailingAboveDelta, maxTrailingAboveDelta
    below: tuple[int, int]  # minTrailingBelowDelta, maxTrailingBelowDelta


class Rules(msgspec.Struct, kw_only=True, frozen=True):
    symbol: str
    base_asset: str
    quote_asset: str
    trading: bool
    order_types: frozenset[str]
    price: Range | None = None  # PRICE_FILTER
    lot: Range | None = None  # LOT_SIZE
    market_lot: Range | None = None  # MARKET_LOT_SIZE
    min_notional: Decimal | None = None  # NOTIONAL.minNotional or MIN_NOTIONAL.minNotional
    max_notional: Decimal | None = None  # NOTIONAL.maxNotional
    min_to_market: bool = True
    max_to_market: bool = False
    notional_filter: str = "NOTIONAL"
    # PERCENT_PRICE_BY_SIDE: (bid up, bid down, ask up, ask down)
    percent_by_side: tuple[Decimal, Decimal, Decimal, Decimal] | None = None
    max_num_orders: int | None = None
    oco: bool = True  # ocoAllowed
    oto: bool = False  # otoAllowed (orderList/oto and /otoco); absent: not allowed
    trailing: bool = True  # allowTrailingStop
    trailing_delta: TrailingBounds | None = None  # TRAILING_DELTA
    iceberg: bool = True  # icebergAllowed
    iceberg_parts: int | None = None  # ICEBERG_PARTS.limit


def _t(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _range(f: dict[str, Any], low: str, high: str, step: str) -> Range:
    return Range(Decimal(f[low]), Decimal(f[high]), Decimal(f[step]))


def parse(info: dict[str, Any]) -> dict[str, Rules]:
    """Rules per symbol from an exchangeInfo reply."""
    out: dict[str, Rules] = {}
    for s in info.get("symbols", []):
        kw: dict[str, Any] = {}
        for f in s.get("filters", []):
            kind = f.get("filterType")
            if kind == "PRICE_FILTER":
                kw["price"] = _range(f, "minPrice", "maxPrice", "tickSize")
            elif kind == "LOT_SIZE":
                kw["lot"] = _range(f, "minQty", "maxQty", "stepSize")
            elif kind == "MARKET_LOT_SIZE":
                kw["market_lot"] = _range(f, "minQty", "maxQty", "stepSize")
            elif kind == "NOTIONAL":
                kw.update(min_notional=Decimal(f["minNotional"]),
                          max_notional=Decimal(f["maxNotional"]),
                          min_to_market=bool(f.get("applyMinToMarket", True)),
                          max_to_market=bool(f.get("applyMaxToMarket", False)))
            elif kind == "MIN_NOTIONAL" and "min_notional" not in kw:
                kw.update(min_notional=Decimal(f["minNotional"]),
                          min_to_market=bool(f.get("applyToMarket", True)),
                          notional_filter="MIN_NOTIONAL")
            elif kind == "PERCENT_PRICE_BY_SIDE":
                kw["percent_by_side"] = tuple(Decimal(f[k]) for k in (
                    "bidMultiplierUp", "bidMultiplierDown", "askMultiplierUp",
                    "askMultiplierDown"))
            elif kind == "MAX_NUM_ORDERS":
                kw["max_num_orders"] = int(f["maxNumOrders"])
            elif kind == "ICEBERG_PARTS":
                kw["iceberg_parts"] = int(f["limit"])
            elif kind == "TRAILING_DELTA":
                kw["trailing_delta"] = TrailingBounds(
                    (int(f["minTrailingAboveDelta"]), int(f["maxTrailingAboveDelta"])),
                    (int(f["minTrailingBelowDelta"]), int(f["maxTrailingBelowDelta"])))
        out[s["symbol"]] = Rules(symbol=s["symbol"], base_asset=s["baseAsset"],
                                 quote_asset=s["quoteAsset"],
                                 trading=s.get("status") == "TRADING",
                                 oco=bool(s.get("ocoAllowed", True)),
                                 oto=bool(s.get("otoAllowed", False)),
                                 trailing=bool(s.get("allowTrailingStop", True)),
                                 iceberg=bool(s.get("icebergAllowed", True)),
                                 order_types=frozenset(s.get("orderTypes", [])), **kw)
    return out


def _refuse(name: str, message: str, field: str) -> ContractError:
    return ContractError(f"Binance filter {name}: {message}", field)


def tidy(value: Decimal) -> Decimal:
    """Without trailing zeros and without an exponent: 0.01000000 -> 0.01, 5E+4 -> 50000."""
    value = value.normalize()
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1))
    return value


def round_down(value: Decimal, step: Decimal) -> Decimal:
    if not step:
        return value
    return tidy(_EXACT.multiply(_EXACT.divide_int(value, step), step))


def binance_type(order: OrderSpec) -> str | None:
    """Binance's type for ``order`` (None: it has none), see ``CONDITIONAL_TYPE``."""
    if order.type is OrderType.TRAILING_STOP:
        return "STOP_LOSS" if order.activation_price is None else "TAKE_PROFIT"
    return CONDITIONAL_TYPE.get(order.type) or BINANCE_TYPE.get(order.type)


def trailing_delta(order: OrderSpec) -> int:
    """A trailing stop's ``trailingDelta``: its offset in whole bips. ``ContractError``
    naming the field when Binance cannot take it exactly (NeedsEmulation: the emulator
    trails it)."""
    offset = order.trailing_offset
    kind = order.trailing_offset_type or TrailingOffsetType.PRICE
    if offset is None:
        raise ContractError(f"trailing_offset is required for a {order.type} order",
                            "trailing_offset")
    if kind is TrailingOffsetType.PRICE:
        raise NeedsEmulation("trailing_offset_type price is not supported natively by binance "
                            f"(trailingDelta is in bips; {EMULATED})",
                            "trailing_offset_type")
    bips = offset if kind is TrailingOffsetType.BPS else _EXACT.multiply(offset,
                                                                        _BIPS_PER_PERCENT)
    if bips != bips.to_integral_value():
        raise NeedsEmulation(f"trailing_offset {_t(offset)} {kind} is {_t(bips)} bips, not a "
                             f"whole number as binance's trailingDelta needs ({EMULATED})",
                             "trailing_offset")
    return int(bips)


def _check_conditional(order: OrderSpec, rules: Rules) -> None:
    """Refuse, naming the field, a conditional order Binance cannot take exactly, or a
    trailing stop its symbol refuses (allowTrailingStop, TRAILING_DELTA)."""
    if order.type is OrderType.TRAILING_STOP_LIMIT:
        raise NeedsEmulation("type trailing_stop_limit is not supported natively by binance "
                            "(its limit price is fixed when placed, ours follows the trigger "
                            f"at limit_offset; {EMULATED})", "type")
    if order.type not in TRAILING_TYPES:
        return
    delta = trailing_delta(order)
    if not rules.trailing:
        raise ContractError(f"trailing stops are not allowed by Binance for {order.symbol} "
                            "(allowTrailingStop is false)", "type")
    if rules.trailing_delta is None:
        return
    kind = binance_type(order) or ""
    above = kind.startswith("STOP") == (order.side == "buy")
    low, high = rules.trailing_delta.above if above else rules.trailing_delta.below
    if not low <= delta <= high:
        raise _refuse("TRAILING_DELTA", f"trailing_offset is {delta} bips, outside min {low}, "
                      f"max {high} for a {kind} {order.side.upper()}", "trailing_offset")


def _check_display(order: OrderSpec, rules: Rules, kind: str, qty: Decimal) -> None:
    """An iceberg (``display_quantity``, sent as ``icebergQty``) as Binance would take it:
    on a limit type of a symbol that allows icebergs, GTC, below the quantity, on the
    LOT_SIZE step and in at most ICEBERG_PARTS parts (ceil(quantity / icebergQty))."""
    shown = order.display_quantity
    if shown is None:
        return
    if kind not in ICEBERG_TYPES:
        raise ContractError(f"display_quantity is not allowed by Binance on a {kind} order "
                            "(LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT only)",
                            "display_quantity")
    if not rules.iceberg:
        raise ContractError(f"display_quantity: iceberg orders are not allowed by Binance for "
                            f"{order.symbol} (icebergAllowed is false)", "display_quantity")
    if order.time_in_force is not TimeInForce.GTC:
        raise ContractError(f"time_in_force {order.time_in_force} is not allowed with "
                            "display_quantity at Binance (an iceberg needs gtc)",
                            "time_in_force")
    if shown <= 0 or shown >= qty:
        raise ContractError(f"display_quantity {_t(shown)} must be positive and below the "
                            f"quantity {_t(qty)}", "display_quantity")
    lot = rules.lot
    if lot is not None and not lot.fits(shown, lot.low):
        raise _refuse("LOT_SIZE", f"display_quantity {_t(shown)} is outside {lot.text()}",
                      "display_quantity")
    if rules.iceberg_parts is not None:
        parts = int(_EXACT.divide(qty, shown).to_integral_value(ROUND_CEILING))
        if parts > rules.iceberg_parts:
            raise _refuse("ICEBERG_PARTS", f"display_quantity {_t(shown)} splits quantity "
                          f"{_t(qty)} into {parts} parts, more than the limit "
                          f"{rules.iceberg_parts}", "display_quantity")


def _check_quote(order: OrderSpec, rules: Rules) -> None:
    """A market order by quote amount: Binance derives the quantity (and applies LOT_SIZE to
    it); the quote amount is the notional."""
    if "MARKET" not in rules.order_types and rules.order_types:
        raise ContractError(f"market orders are not supported by Binance for {order.symbol}",
                            "type")
    quote = order.quote_quantity
    if quote is None:
        raise ContractError("quantity or quote_quantity is required", "quantity")
    name = rules.notional_filter
    if rules.min_notional is not None and rules.min_to_market and quote < rules.min_notional:
        raise _refuse(name, f"quote_quantity {_t(quote)} is below the minimum notional "
                      f"{_t(rules.min_notional)}", "quote_quantity")
    if rules.max_notional is not None and rules.max_to_market and quote > rules.max_notional:
        raise _refuse(name, f"quote_quantity {_t(quote)} is above the maximum notional "
                      f"{_t(rules.max_notional)}", "quote_quantity")


def oco_legs(order: OrderSpec) -> tuple[tuple[str, OrderSpec], tuple[str, OrderSpec]]:
    """An ``oco`` order's two legs as single orders, with Binance's position of each: the
    limit-maker leg at ``price`` is above the market for a sell and below it for a buy, the
    stop leg (a stop-limit at ``stop_limit_price`` when given) on the other side."""
    replace = msgspec.structs.replace
    limit = replace(order, type=OrderType.LIMIT_MAKER, stop_price=None, stop_limit_price=None,
                    time_in_force=TimeInForce.GTC)
    stop_limit = order.stop_limit_price
    stop = replace(order, type=OrderType.STOP if stop_limit is None else OrderType.STOP_LIMIT,
                   price=stop_limit, stop_limit_price=None,
                   time_in_force=TimeInForce.GTC if stop_limit is None else order.time_in_force)
    if order.side == "sell":
        return ("above", limit), ("below", stop)
    return ("above", stop), ("below", limit)


def _check_oco(order: OrderSpec, rules: Rules, reference: Decimal | None,
               open_orders: int | None, round_quantity: bool) -> OrderSpec:
    """Both legs against the filters (an OCO adds two open orders), and, with a reference
    price, Binance's rule that the legs bracket it."""
    if not rules.oco:
        raise ContractError(f"oco orders are not allowed by Binance for {order.symbol}", "type")
    qty = order.quantity
    for i, (_, leg) in enumerate(oco_legs(order)):
        stop_leg = leg.type is not OrderType.LIMIT_MAKER
        try:
            checked = check(leg, rules, reference=reference,
                            open_orders=None if open_orders is None else open_orders + i,
                            round_quantity=round_quantity)
        except ContractError as exc:
            field = "stop_limit_price" if stop_leg and exc.field == "price" else exc.field
            raise ContractError(f"the oco's {'stop' if stop_leg else 'limit'} leg: {exc}",
                                field) from None
        qty = checked.quantity
    if reference is not None and order.price is not None and order.stop_price is not None:
        sell = order.side == "sell"
        low, high = (order.stop_price, order.price) if sell else (order.price, order.stop_price)
        if not low < reference < high:
            field = "price" if (order.price <= reference if sell else order.price >= reference) \
                else "stop_price"
            raise ContractError(
                f"Binance refuses an oco whose legs do not bracket the last price "
                f"{_t(reference)}: a {order.side} needs {'price' if sell else 'stop_price'} "
                f"{_t(high)} above it and {'stop_price' if sell else 'price'} {_t(low)} "
                "below it", field)
    if qty != order.quantity and qty is not None:
        return msgspec.structs.replace(order, quantity=wire(qty))
    return order


def check(order: OrderSpec, rules: Rules, *, reference: Decimal | None = None,
          open_orders: int | None = None, round_quantity: bool = False) -> OrderSpec:
    """The order as it may be sent, or ``ContractError`` naming the filter it breaks."""
    if order.type is OrderType.OCO:
        return _check_oco(order, rules, reference, open_orders, round_quantity)
    _check_conditional(order, rules)
    if not rules.trading:
        raise ContractError(f"{order.symbol} is not trading at Binance", "symbol")
    kind = binance_type(order)
    if kind is None or (rules.order_types and kind not in rules.order_types):
        raise ContractError(f"order type {order.type} is not supported by Binance for "
                            f"{order.symbol}", "type")
    tif = order.time_in_force
    if tif not in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK):
        raise ContractError(f"time_in_force {tif} is not supported by Binance spot (gtc, ioc, "
                            "fok)", "time_in_force")
    if (kind in ("MARKET", "LIMIT_MAKER", "STOP_LOSS", "TAKE_PROFIT")
            and tif is not TimeInForce.GTC):
        raise ContractError(f"time_in_force {tif} is not allowed for a {order.type} order at "
                            "Binance", "time_in_force")
    market = order.type is OrderType.MARKET
    if order.quantity is None:
        _check_quote(order, rules)
        return order
    qty: Decimal = order.quantity
    for name, lot in (("LOT_SIZE", rules.lot),
                      ("MARKET_LOT_SIZE", rules.market_lot if market else None)):
        if lot is None:
            continue
        if round_quantity and lot.step:
            qty = tidy(round_down(qty - lot.low, lot.step) + lot.low) if qty >= lot.low else qty
        if not lot.fits(qty, lot.low) or qty <= 0:
            raise _refuse(name, f"quantity {_t(order.quantity)} is outside {lot.text()}",
                          "quantity")
    _check_display(order, rules, kind, qty)
    if rules.price is not None:
        for field, value in (("price", order.price), ("stop_price", order.stop_price),
                             ("activation_price", order.activation_price)):
            if value is not None and not rules.price.fits(value):
                raise _refuse("PRICE_FILTER", f"{field} {_t(value)} is outside "
                              f"{rules.price.text().replace('step', 'tick')}", field)
    stop = order.stop_price if order.stop_price is not None else order.activation_price
    at = order.price if order.price is not None else (reference if stop is None else stop)
    if at is not None:
        notional = at * qty
        name = rules.notional_filter
        if (rules.min_notional is not None and (not market or rules.min_to_market)
                and notional < rules.min_notional):
            raise _refuse(name, f"notional {_t(notional)} ({_t(qty)} x {_t(at)}) is below "
                          f"the minimum {_t(rules.min_notional)}", "quantity")
        if (rules.max_notional is not None and (not market or rules.max_to_market)
                and notional > rules.max_notional):
            raise _refuse(name, f"notional {_t(notional)} ({_t(qty)} x {_t(at)}) is above "
                          f"the maximum {_t(rules.max_notional)}", "quantity")
    if rules.percent_by_side is not None and order.price is not None and reference:
        bid_up, bid_down, ask_up, ask_down = rules.percent_by_side
        up, down = (bid_up, bid_down) if order.side == "buy" else (ask_up, ask_down)
        low, high = reference * down, reference * up
        if not low <= order.price <= high:
            raise _refuse("PERCENT_PRICE_BY_SIDE", f"price {_t(order.price)} is outside "
                          f"{_t(low)} to {_t(high)} ({_t(down)}x to {_t(up)}x the reference "
                          f"price {_t(reference)} for a {order.side})", "price")
    if (rules.max_num_orders is not None and open_orders is not None
            and open_orders >= rules.max_num_orders):
        raise _refuse("MAX_NUM_ORDERS", f"{open_orders} orders are open on {order.symbol}, "
                      f"the maximum is {rules.max_num_orders}", "symbol")
    if qty != order.quantity:
        return msgspec.structs.replace(order, quantity=wire(qty))
    return order
