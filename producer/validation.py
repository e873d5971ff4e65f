"""Rules of the contract that a type alone cannot say: which fields each action and order
type needs or forbids, and that amounts are positive.

Pure functions shared by the producer client (to refuse a bad request before sending it)
and the worker (which never trusts the producer).
"""

from __future__ import annotations

from decimal import Decimal

from .contract import (
    TRAILING_TYPES,
    Action,
    Algo,
    AlgoStrategy,
    ContractError,
    OrderType,
    Request,
    TimeInForce,
    TrailingOffsetType,
)

# Which of price / stop_price each order type needs; the other is refused, so a producer
# that confuses the two hears about it instead of getting an order it did not mean.
PRICE_FIELDS: dict[OrderType, tuple[bool, bool]] = {
    OrderType.MARKET: (False, False),
    OrderType.LIMIT: (True, False),
    OrderType.LIMIT_MAKER: (True, False),
    OrderType.STOP: (False, True),
    OrderType.STOP_LIMIT: (True, True),
    OrderType.TAKE_PROFIT: (False, True),
    OrderType.TAKE_PROFIT_LIMIT: (True, True),
    OrderType.OCO: (True, True),  # the limit-maker leg's price, the stop leg's trigger
    # A trailing stop's trigger is computed (trailing_offset), its limit too (limit_offset).
    OrderType.TRAILING_STOP: (False, False),
    OrderType.TRAILING_STOP_LIMIT: (False, False),
    OrderType.MARKET_IF_TOUCHED: (False, True),
    OrderType.LIMIT_IF_TOUCHED: (True, True),
}

# The fields of a trailing stop, refused on every other type.
TRAILING_FIELDS = ("trailing_offset", "trailing_offset_type", "activation_price")
# The types an iceberg (display_quantity) may be: those that rest on the book at a limit.
DISPLAY_TYPES = frozenset({OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LIMIT,
                           OrderType.TAKE_PROFIT_LIMIT})
# An offset in bps or percent of the price must leave a positive trigger under a sell's.
_OFFSET_BOUNDS = {TrailingOffsetType.BPS: Decimal(10_000),
                  TrailingOffsetType.PERCENT: Decimal(100)}

_ORDER_FIELDS = (
    "side",
    "type",
    "quantity",
    "quote_quantity",
    "price",
    "stop_price",
    "stop_limit_price",
    *TRAILING_FIELDS,
    "limit_offset",
    "display_quantity",
    "time_in_force",
    "expire_at",
)


def check_request(req: Request, now_ms: int | None = None) -> None:
    """Raise ContractError (naming the field) unless ``req`` is a well-formed request.

    ``now_ms`` enables the checks that depend on the clock (``expire_at`` in the future).
    """
    if req.reduce_only and req.action is not Action.PLACE:
        raise ContractError(f"reduce_only is only allowed to place, not to {req.action}",
                            "reduce_only")
    if req.action not in (Action.SL_TP, Action.PLACE):
        for name in EXIT_FIELDS:
            if getattr(req, name) is not None:
                raise ContractError(f"{name} is only allowed for place and sl_tp, not for "
                                    f"{req.action}", name)
    if req.oto_trigger is not None and req.action is not Action.PLACE:
        raise ContractError(f"oto_trigger is only allowed to place, not to {req.action}",
                            "oto_trigger")
    if req.algo is not None and req.action is not Action.PLACE:
        raise ContractError(f"algo is only allowed to place, not to {req.action}", "algo")
    if req.action is Action.SL_TP:
        _check_sl_tp(req)
    elif req.action is Action.PLACE:
        _check_place(req, now_ms)
    elif req.action is Action.AMEND:
        _check_amend(req)
    elif req.action is Action.CANCEL:
        if req.client_order_id is None:
            raise ContractError("client_order_id is required to cancel", "client_order_id")
        _refuse_order_fields(req, "cancel", allow_symbol=True)
    else:
        if req.client_order_id is not None:
            raise ContractError(
                "client_order_id is not allowed for cancel_all (use symbol/account filters)",
                "client_order_id",
            )
        _refuse_order_fields(req, "cancel_all", allow_symbol=True)


# The fields of the sl_tp action, refused on every other.
EXIT_FIELDS = ("stop_loss", "take_profit")
# What sl_tp takes besides them: the trail, and the close (type market or limit).
_SL_TP_REFUSED = tuple(n for n in _ORDER_FIELDS
                       if n not in ("type", "trailing_offset", "trailing_offset_type"))


def _check_sl_tp(req: Request) -> None:
    """sl_tp: account (or the default) and symbol; levels positive; the close a market or
    limit order; a limit close without a trail (its limit would move). No level: clear."""
    if req.symbol is None:
        raise ContractError("symbol is required for sl_tp (the position to protect)",
                            "symbol")
    if req.client_order_id is not None:
        raise ContractError("client_order_id is not allowed for sl_tp (its closing orders "
                            "get theirs from the exit)", "client_order_id")
    for name in _SL_TP_REFUSED:
        if getattr(req, name) is not None:
            raise ContractError(f"{name} is not allowed for sl_tp", name)
    for name in ("stop_loss", "take_profit", "trailing_offset"):
        value = getattr(req, name)
        if value is not None and value <= 0:
            raise ContractError(f"{name} must be positive, got {value}", name)
    if req.type is not None and req.type not in (OrderType.MARKET, OrderType.LIMIT):
        raise ContractError(f"type {req.type} is not a close for sl_tp (market or limit)",
                            "type")
    if req.type is OrderType.LIMIT and req.trailing_offset is not None:
        raise ContractError("a limit close takes no trailing_offset (its limit would be the "
                            "moving trigger): use a market close", "type")
    if req.trailing_offset is None and req.trailing_offset_type is not None:
        raise ContractError("trailing_offset_type needs a trailing_offset",
                            "trailing_offset_type")
    bound = _OFFSET_BOUNDS.get(req.trailing_offset_type or TrailingOffsetType.PRICE)
    if bound is not None and req.trailing_offset is not None and req.trailing_offset >= bound:
        raise ContractError(f"trailing_offset {req.trailing_offset} "
                            f"{req.trailing_offset_type} would put the trigger at or below 0",
                            "trailing_offset")


AMENDABLE = ("price", "stop_price", "quantity")
AMEND_REFUSED = ("symbol", "side", "type", "time_in_force", "expire_at", "quote_quantity",
                 "stop_limit_price", *TRAILING_FIELDS, "limit_offset",
                 "display_quantity")


def _check_amend(req: Request) -> None:
    if req.client_order_id is None:
        raise ContractError("client_order_id is required to amend (the order to change)",
                            "client_order_id")
    for name in AMEND_REFUSED:
        if getattr(req, name) is not None:
            raise ContractError(f"{name} is not allowed for amend (it changes price, "
                                "stop_price or quantity only)", name)
    if all(getattr(req, name) is None for name in AMENDABLE):
        raise ContractError("amend needs at least one of price, stop_price, quantity",
                            "quantity")
    for name in AMENDABLE:
        value = getattr(req, name)
        if value is not None and value <= 0:
            raise ContractError(f"{name} must be positive, got {value}", name)


def _check_place(req: Request, now_ms: int | None) -> None:
    for name in ("symbol", "side", "type"):
        if getattr(req, name) is None:
            raise ContractError(f"{name} is required to place an order", name)
    assert req.type is not None
    _check_amount(req)
    needs_price, needs_stop = PRICE_FIELDS[req.type]
    for name, needed in (("price", needs_price), ("stop_price", needs_stop)):
        value = getattr(req, name)
        if needed and value is None:
            raise ContractError(f"{name} is required for a {req.type} order", name)
        if not needed and value is not None:
            raise ContractError(f"{name} is not allowed for a {req.type} order", name)
        if value is not None and value <= 0:
            raise ContractError(f"{name} must be positive, got {value}", name)
    tif = req.time_in_force or TimeInForce.GTC
    _check_oco(req, tif)
    _check_trailing(req)
    _check_display(req)
    _check_list(req)
    _check_algo(req, now_ms)
    if req.type is OrderType.MARKET and tif is TimeInForce.GTD:
        raise ContractError("time_in_force gtd is not allowed for a market order", "time_in_force")
    if tif is TimeInForce.GTD:
        if req.expire_at is None:
            raise ContractError("expire_at is required when time_in_force is gtd", "expire_at")
        if now_ms is not None and req.expire_at <= now_ms:
            raise ContractError(
                f"expire_at {req.expire_at} is not in the future (now {now_ms})", "expire_at"
            )
    elif req.expire_at is not None:
        raise ContractError("expire_at is only allowed when time_in_force is gtd", "expire_at")


MIN_ALGO_INTERVAL_MS = 1_000
MAX_ALGO_HORIZON_MS = 7 * 24 * 3_600_000
MAX_ALGO_SLICES = 1_000
# What an algorithm's children cannot carry: they are plain market or limit orders.
_ALGO_REFUSED = ("quote_quantity", "display_quantity", "take_profit", "stop_loss",
                 "oto_trigger")


def algo_window(algo: Algo, accepted_at: int) -> tuple[int, int]:
    """(start, end) in epoch ms of a valid ``algo`` whose parent was accepted at
    ``accepted_at``: from ``start_at`` (default: then), until ``end_at`` or for
    ``horizon_ms``."""
    start = algo.start_at if algo.start_at is not None else accepted_at
    if algo.end_at is not None:
        return start, algo.end_at
    assert algo.horizon_ms is not None
    return start, start + algo.horizon_ms


def algo_slices(algo: Algo, accepted_at: int = 0) -> tuple[int, int]:
    """(the number of slices, the time between two) of a valid ``algo`` whose parent was
    accepted at ``accepted_at``. The number never depends on it (``end_at`` needs
    ``slices`` or ``start_at``); the time between two may, with ``end_at`` and no
    ``start_at`` (0 or less: the end had passed when the parent was accepted)."""
    start, end = algo_window(algo, accepted_at)
    if algo.slices is not None:
        return algo.slices, (end - start) // algo.slices
    assert algo.interval_ms is not None
    return (end - start) // algo.interval_ms, algo.interval_ms


def _check_algo(req: Request, now_ms: int | None) -> None:
    """An execution algorithm: a market or limit parent by quantity, a horizon or an end
    time, its slices (given, or by interval), for vwap optional weights, one per slice; for
    a limit parent its children's offset and repricing; a participation cap."""
    algo = req.algo
    if algo is None:
        return
    if algo.strategy == AlgoStrategy.ICEBERG:
        raise ContractError("algo.strategy iceberg is the worker's: give a limit order "
                            "display_quantity (emulated where the broker has no icebergs)",
                            "algo.strategy")
    if req.type not in (OrderType.MARKET, OrderType.LIMIT):
        raise ContractError(f"an algo's children are market or limit orders: type must be "
                            f"market or limit, not {req.type}", "type")
    if req.time_in_force not in (None, TimeInForce.GTC):
        raise ContractError(f"time_in_force {req.time_in_force} is not allowed with algo (its "
                            "children go good till cancelled, for the schedule to end)",
                            "time_in_force")
    if req.type is OrderType.MARKET:
        for name in ("limit_offset_bps", "reprice_ms"):
            if getattr(algo, name) is not None:
                raise ContractError(f"algo.{name} is for a limit parent only (its children "
                                    "are limit orders)", f"algo.{name}")
    if algo.limit_offset_bps is not None and not 0 <= algo.limit_offset_bps < 10_000:
        raise ContractError(f"algo.limit_offset_bps must be from 0 to below 10000, got "
                            f"{algo.limit_offset_bps}", "algo.limit_offset_bps")
    if algo.reprice_ms is not None and algo.reprice_ms < MIN_ALGO_INTERVAL_MS:
        raise ContractError(f"algo.reprice_ms must be at least {MIN_ALGO_INTERVAL_MS}, got "
                            f"{algo.reprice_ms}", "algo.reprice_ms")
    if algo.max_participation is not None and not 0 < algo.max_participation <= 1:
        raise ContractError(f"algo.max_participation must be above 0 and at most 1 (a share "
                            f"of the market's volume), got {algo.max_participation}",
                            "algo.max_participation")
    for name in _ALGO_REFUSED:
        if getattr(req, name) is not None:
            raise ContractError(f"{name} is not allowed with algo (its children are plain "
                                "market orders by quantity)", name)
    if algo.start_at is not None and algo.start_at < 0:
        raise ContractError("algo.start_at must be epoch ms", "algo.start_at")
    start = algo.start_at if algo.start_at is not None else now_ms
    horizon = _check_horizon(algo, start, now_ms)
    if (algo.slices is None) == (algo.interval_ms is None):
        raise ContractError("algo needs exactly one of slices and interval_ms",
                            "algo.slices")
    if algo.interval_ms is not None and algo.end_at is not None and algo.start_at is None:
        raise ContractError("algo.end_at with interval_ms needs start_at (or use slices): "
                            "the number of slices must be known from the request",
                            "algo.interval_ms")
    if algo.interval_ms is not None and horizon is not None and not (
            MIN_ALGO_INTERVAL_MS <= algo.interval_ms <= horizon):
        raise ContractError(f"algo.interval_ms must be from {MIN_ALGO_INTERVAL_MS} to the "
                            f"horizon {horizon}, got {algo.interval_ms}", "algo.interval_ms")
    if algo.slices is not None and not 1 <= algo.slices <= MAX_ALGO_SLICES:
        raise ContractError(f"algo.slices must be from 1 to {MAX_ALGO_SLICES}, got "
                            f"{algo.slices}", "algo.slices")
    if horizon is None:
        # end_at and slices, checked where the clock is not known (a producer's own
        # check): the worker checks the times between slices against its clock.
        assert algo.slices is not None
        n = algo.slices
    else:
        n, interval = algo_slices(algo, start or 0)
        if n > MAX_ALGO_SLICES:
            raise ContractError(f"algo would have {n} slices (its horizon / interval_ms), "
                                f"more than {MAX_ALGO_SLICES}", "algo.interval_ms")
        if interval < MIN_ALGO_INTERVAL_MS:
            raise ContractError(f"algo's slices would be {interval} ms apart, less than "
                                f"{MIN_ALGO_INTERVAL_MS}: fewer slices or a longer horizon",
                                "algo.slices")
    if algo.weights is not None:
        if algo.strategy != AlgoStrategy.VWAP:
            raise ContractError("algo.weights are for vwap only (twap's slices are equal)",
                                "algo.weights")
        if len(algo.weights) != n:
            raise ContractError(f"algo.weights has {len(algo.weights)} weights for {n} "
                                "slices: one per slice", "algo.weights")
        if any(w <= 0 for w in algo.weights):
            raise ContractError("algo.weights must all be positive", "algo.weights")


def _check_horizon(algo: Algo, start: int | None, now_ms: int | None) -> int | None:
    """The schedule's length in ms, checked: ``horizon_ms``, or from its start to
    ``end_at`` (in the future); None where that needs a clock and none is given."""
    if (algo.horizon_ms is None) == (algo.end_at is None):
        raise ContractError("algo needs exactly one of horizon_ms and end_at",
                            "algo.horizon_ms")
    if algo.horizon_ms is not None:
        horizon, field, what = algo.horizon_ms, "algo.horizon_ms", "algo.horizon_ms"
    else:
        assert algo.end_at is not None
        if now_ms is not None and algo.end_at <= now_ms:
            raise ContractError(f"algo.end_at {algo.end_at} is not in the future (now "
                                f"{now_ms})", "algo.end_at")
        if start is None:
            return None
        horizon, field = algo.end_at - start, "algo.end_at"
        what = "algo.end_at less the schedule's start"
    if not MIN_ALGO_INTERVAL_MS <= horizon <= MAX_ALGO_HORIZON_MS:
        raise ContractError(f"{what} must be from {MIN_ALGO_INTERVAL_MS} to "
                            f"{MAX_ALGO_HORIZON_MS} (7 days), got {horizon}", field)
    return horizon


def _check_oco(req: Request, tif: TimeInForce) -> None:
    """The structure of an OCO's two legs (Binance's price rules that need no market data):
    a sell's limit leg above its stop leg, a buy's below; time_in_force belongs to a
    stop-limit leg."""
    if req.type is not OrderType.OCO:
        if req.stop_limit_price is not None:
            raise ContractError(f"stop_limit_price is only allowed for an oco order, not "
                                f"{req.type}", "stop_limit_price")
        return
    assert req.price is not None and req.stop_price is not None
    if req.stop_limit_price is not None and req.stop_limit_price <= 0:
        raise ContractError(f"stop_limit_price must be positive, got {req.stop_limit_price}",
                            "stop_limit_price")
    if req.side == "sell" and not req.price > req.stop_price:
        raise ContractError(f"a sell oco needs price (the limit leg, above the market) above "
                            f"stop_price (the stop leg, below it): {req.price} is not above "
                            f"{req.stop_price}", "stop_price")
    if req.side == "buy" and not req.price < req.stop_price:
        raise ContractError(f"a buy oco needs price (the limit leg, below the market) below "
                            f"stop_price (the stop leg, above it): {req.price} is not below "
                            f"{req.stop_price}", "stop_price")
    if tif is TimeInForce.GTD:
        raise ContractError("time_in_force gtd is not allowed for an oco order",
                            "time_in_force")
    if tif is not TimeInForce.GTC and req.stop_limit_price is None:
        raise ContractError(f"time_in_force {tif} applies to an oco's stop-limit leg: it "
                            "needs stop_limit_price", "time_in_force")


def _check_list(req: Request) -> None:
    """The exits of a contingent list's entry: positive levels on the right sides of each
    other and of the entry's price (a buy's take-profit above, its stop-loss below; a
    sell's the other way round); an entry that is not itself a pair (oco) or an exit."""
    tp, sl = req.take_profit, req.stop_loss
    if tp is None and sl is None:
        if req.oto_trigger is not None:
            raise ContractError("oto_trigger needs take_profit or stop_loss (the exits it "
                                "places)", "oto_trigger")
        return
    for name, value in (("take_profit", tp), ("stop_loss", sl)):
        if value is not None and value <= 0:
            raise ContractError(f"{name} must be positive, got {value}", name)
    if req.type is OrderType.OCO:
        raise ContractError("take_profit and stop_loss are not allowed on an oco order (an "
                            "entry's exits are an oco themselves)",
                            "take_profit" if tp is not None else "stop_loss")
    if req.reduce_only:
        raise ContractError("take_profit and stop_loss are not allowed on a reduce_only "
                            "order (they protect a position it opens)", "reduce_only")
    assert req.side is not None
    check_levels(req.side, req.price if req.price is not None else req.stop_price, tp, sl)


def check_levels(side: str, entry: Decimal | None, tp: Decimal | None,
                 sl: Decimal | None) -> None:
    """A list entry's levels on the right sides of each other and of its price (``entry``:
    None for a market order): a buy's take-profit above, its stop-loss below; a sell's the
    other way round. Also for an amend of the entry's price."""
    buy = side == "buy"
    if tp is not None and sl is not None and (tp <= sl if buy else tp >= sl):
        raise ContractError(f"a {side} entry's take_profit must be "
                            f"{'above' if buy else 'below'} its stop_loss: {tp} is not",
                            "take_profit")
    if entry is None:
        return
    if tp is not None and (tp <= entry if buy else tp >= entry):
        raise ContractError(f"a {side} entry's take_profit must be "
                            f"{'above' if buy else 'below'} its price {entry}: {tp} is not",
                            "take_profit")
    if sl is not None and (sl >= entry if buy else sl <= entry):
        raise ContractError(f"a {side} entry's stop_loss must be "
                            f"{'below' if buy else 'above'} its price {entry}: {sl} is not",
                            "stop_loss")


def _check_trailing(req: Request) -> None:
    """A trailing stop's offset (and activation, limit offset); none of them elsewhere."""
    if req.type not in TRAILING_TYPES:
        for name in TRAILING_FIELDS:
            if getattr(req, name) is not None:
                raise ContractError(f"{name} is only allowed for a trailing_stop or "
                                    f"trailing_stop_limit order, not {req.type}", name)
    else:
        offset, kind = req.trailing_offset, req.trailing_offset_type or TrailingOffsetType.PRICE
        if offset is None:
            raise ContractError(f"trailing_offset is required for a {req.type} order",
                                "trailing_offset")
        if offset <= 0:
            raise ContractError(f"trailing_offset must be positive, got {offset}",
                                "trailing_offset")
        bound = _OFFSET_BOUNDS.get(kind)
        if bound is not None and offset >= bound:
            raise ContractError(f"trailing_offset {offset} {kind} must be below {bound} {kind} "
                                "(the whole price)", "trailing_offset")
        if req.activation_price is not None and req.activation_price <= 0:
            raise ContractError(f"activation_price must be positive, got "
                                f"{req.activation_price}", "activation_price")
    if req.type is not OrderType.TRAILING_STOP_LIMIT:
        if req.limit_offset is not None:
            raise ContractError(f"limit_offset is only allowed for a trailing_stop_limit "
                                f"order, not {req.type}", "limit_offset")
    elif req.limit_offset is None:
        raise ContractError("limit_offset is required for a trailing_stop_limit order (the "
                            "limit's distance from the trigger; 0: at the trigger)",
                            "limit_offset")
    elif req.limit_offset < 0:
        raise ContractError(f"limit_offset must not be negative, got {req.limit_offset}",
                            "limit_offset")


def _check_display(req: Request) -> None:
    """An iceberg's visible part: a limit type's, positive, strictly below its quantity."""
    shown = req.display_quantity
    if shown is None:
        return
    if req.quantity is None:
        raise ContractError("display_quantity is not allowed with quote_quantity (it shows "
                            "part of a base quantity)", "display_quantity")
    if req.type not in DISPLAY_TYPES:
        raise ContractError(f"display_quantity is only allowed for a limit, limit_maker, "
                            f"stop_limit or take_profit_limit order, not {req.type}",
                            "display_quantity")
    if shown <= 0:
        raise ContractError(f"display_quantity must be positive, got {shown}",
                            "display_quantity")
    if shown >= req.quantity:
        raise ContractError(f"display_quantity {shown} must be below quantity {req.quantity} "
                            "(it is the part shown of it)", "display_quantity")


def _check_amount(req: Request) -> None:
    """Exactly one of quantity and quote_quantity (a market order only), positive."""
    if req.quote_quantity is not None:
        if req.quantity is not None:
            raise ContractError("quantity and quote_quantity are exclusive: give one",
                                "quote_quantity")
        if req.type is not OrderType.MARKET:
            raise ContractError(f"quote_quantity is only allowed for a market order, not "
                                f"{req.type}", "quote_quantity")
        if req.quote_quantity <= 0:
            raise ContractError(f"quote_quantity must be positive, got {req.quote_quantity}",
                                "quote_quantity")
        return
    if req.quantity is None:
        raise ContractError("quantity is required to place an order (or quote_quantity for "
                            "a market order)", "quantity")
    if req.quantity <= 0:
        raise ContractError(f"quantity must be positive, got {req.quantity}", "quantity")


def _refuse_order_fields(req: Request, action: str, *, allow_symbol: bool) -> None:
    names = _ORDER_FIELDS if allow_symbol else (*_ORDER_FIELDS, "symbol")
    for name in names:
        if getattr(req, name) is not None:
            raise ContractError(f"{name} is not allowed for {action}", name)
