"""Wire contract v1: the request and result entries that cross the Redis streams.

Producers in any language write a request as one stream entry whose field ``data`` holds a
UTF-8 JSON object; workers answer with one result entry per request. Everything here is
pure data: msgspec types, the closed enums of the contract and the codecs for them.

Decimal amounts travel as JSON strings in fixed-point notation (``"0.00001"``, never
``"1E-5"``); requests may also give them as JSON numbers, which are read exactly (never
through a float).

A request is hostile input until proven otherwise, so its cost is bounded before anything
is built from it: ``data`` nests at most ``MAX_DEPTH`` objects and arrays (checked on the
raw bytes), and every JSON number with a fraction or an exponent, like every decimal field,
has at most ``DECIMAL_DIGITS`` integer and fraction digits in fixed-point notation (checked
on the number's text: ``1e9999999999`` would otherwise be a ten-gigabyte string).
"""

from __future__ import annotations

import decimal
import enum
import operator
import re
from collections.abc import Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec

CONTRACT_VERSION = 1

# Binance's own grammar for numbers in order parameters; anything looser (exponents, signs,
# blanks, underscores) is refused so that what we forward is exactly what the producer meant.
_DECIMAL_TEXT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
DECIMAL_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?$"
# The same bound for decimals given as JSON numbers: integer and fraction digits each.
DECIMAL_DIGITS = 20
# Objects and arrays in a request's ``data``, the request object itself included. msgspec
# and the encoders after it recurse, so a 2 KB request 1,100 levels deep raised
# RecursionError; no real request comes near this.
MAX_DEPTH = 32
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,36}$"
ACCOUNT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9._/:-]{1,32}$"
MAX_TAG_LENGTH = 128


# Called directly: a super() object per amount is a measurable share of making one.
_decimal_new = Decimal.__new__


class WireDecimal(Decimal):
    """A Decimal that crosses the wire: decoded strictly, encoded in fixed-point notation.

    Arithmetic on it returns plain ``Decimal``; wrap results with ``wire()`` before putting
    them into a wire struct, which the type checker enforces.
    """

    # Its wire text, made with it: an order's quantity, prices and fills are written in
    # several records and events each, and the encoder reads it in C (see ``_enc_hook``).
    __slots__ = ("_text",)
    _text: str

    def __new__(cls, value: Decimal | float | str | tuple[int, Sequence[int], int] = "0",
                context: Context | None = None) -> WireDecimal:
        self = _decimal_new(cls, value, context)
        # str() is the fast path; it switches to an exponent for large exponents and for
        # values below 1e-6, and only then is the slower fixed-point formatting needed.
        text = str(self)
        self._text = text if "E" not in text else format(self, "f")
        return self


# Decimals are immutable, so every default zero can be one object (whose text is made once).
_ZERO = WireDecimal(0)


def zero() -> WireDecimal:
    return _ZERO


def wire(value: Decimal) -> WireDecimal:
    return value if type(value) is WireDecimal else WireDecimal(value)


_SUM = decimal.Context(prec=200)


def plus(total: WireDecimal, amount: WireDecimal) -> WireDecimal:
    """``total + amount`` as a wire decimal. From the zero every new record starts at, that
    is ``amount`` itself: the same value and the same fixed-point text (zero's exponent is
    0), without arithmetic or a new decimal; the first fill of every order takes this path."""
    # A 200-digit context: the default one rounds at 28 digits, and amounts reach 40.
    return amount if total is _ZERO else wire(_SUM.add(total, amount))


def wire_opt(value: Decimal | None) -> WireDecimal | None:
    return None if value is None else wire(value)


def decimal_text(value: Decimal) -> str:
    """Fixed-point text of a decimal: ``1E-7`` -> ``0.0000001``, ``1E+3`` -> ``1000``."""
    return format(value, "f")


# The decimal texts a process reads repeat: an order's quantity and price are in its
# request, its records and each of its events, an exchange's prices and fees in every fill.
# Each text is checked and made into a decimal once, and that decimal is shared (a
# WireDecimal never changes). Emptied when full, so a stream of distinct texts costs
# memory up to the bound and no more.
_PARSED: dict[str, WireDecimal] = {}
_PARSED_MOST = 4096


def parse_decimal(value: object) -> WireDecimal:
    """Read a decimal given as a JSON string, integer or (exactly parsed) JSON number, within
    the bounds of ``DECIMAL_PATTERN`` (checked before its fixed-point text is made)."""
    if isinstance(value, str):
        parsed = _PARSED.get(value)
        if parsed is not None:
            return parsed
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError(
                f"Expected a decimal string like '0.010' (digits, optional fraction), "
                f"got {value[:48]!r}"
            )
        parsed = WireDecimal(value)
        if len(_PARSED) >= _PARSED_MOST:
            _PARSED.clear()
        _PARSED[value] = parsed
        return parsed
    if isinstance(value, bool):
        raise ValueError("Expected a decimal, got `bool`")
    if isinstance(value, int):
        if not -_INTEGER_BOUND < value < _INTEGER_BOUND:
            raise ValueError(f"Expected a decimal of at most {DECIMAL_DIGITS} integer digits, "
                             f"got an integer of {len(str(abs(value)))} digits")
        return WireDecimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("Expected a finite decimal")
        _sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite
        _check_digits(len(digits) if any(digits) else 0, exponent)
        return WireDecimal(value)
    raise ValueError(f"Expected a decimal string or number, got `{type(value).__name__}`")


_INTEGER_BOUND = 10**DECIMAL_DIGITS
# A JSON number as msgspec hands it to a float hook: its exact text.
_NUMBER_TEXT = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?)0*([0-9]*))?")
# Exponents past this many digits are out of bounds whatever the digits (and int() of a
# long digit string is itself quadratic).
_EXPONENT_DIGITS = 6


def _check_digits(digits: int, exponent: int) -> None:
    """Refuse a decimal whose fixed-point text would have more than ``DECIMAL_DIGITS``
    integer or fraction digits; ``digits`` counts its coefficient from the first non-zero
    digit (0 for zero), ``exponent`` is that of its last digit."""
    fraction = max(0, -exponent)
    integer = max(0, digits + exponent) if digits else 0
    if integer > DECIMAL_DIGITS or fraction > DECIMAL_DIGITS:
        raise ValueError(
            f"Expected a decimal of at most {DECIMAL_DIGITS} integer and {DECIMAL_DIGITS} "
            f"fraction digits, got one of {integer} integer and {fraction} fraction digits")


def bounded_number(text: str) -> Decimal:
    """The float hook of request decoding: a JSON number with a fraction or an exponent,
    read exactly as a Decimal once its text shows it within the decimal bounds. Nothing is
    built before that: ``1e9999999999`` costs a regular expression, not ten gigabytes."""
    if len(text) <= DECIMAL_DIGITS and "e" not in text and "E" not in text:
        return Decimal(text)  # at most 20 digits in all: within the bounds (the usual case)
    match = _NUMBER_TEXT.fullmatch(text)
    if match is None:  # msgspec hands over valid JSON numbers only
        raise ValueError(f"Expected a number, got {text[:48]!r}")
    whole, fraction, sign, exponent = match.groups()
    if len(exponent or "") > _EXPONENT_DIGITS:
        raise ValueError(f"Expected a decimal of at most {DECIMAL_DIGITS} integer and "
                         f"{DECIMAL_DIGITS} fraction digits, got an exponent of "
                         f"{len(exponent)} digits")
    fraction = fraction or ""
    shift = int(exponent or 0) * (-1 if sign == "-" else 1)
    _check_digits(len((whole + fraction).lstrip("0")), shift - len(fraction))
    return Decimal(text)


def _dec_hook(tp: type, obj: object) -> object:
    if tp is WireDecimal:
        return parse_decimal(obj)
    raise NotImplementedError(f"no decoder for {tp!r}")


# msgspec encodes plain Decimals itself (as str() does, exponents included) and hands every
# other type it does not know to this hook: WireDecimal, the only one in the wire structs,
# answers with its fixed-point text. A C getter rather than a Python function, since the
# hook runs for every amount of every record and event; an unknown type fails with an
# AttributeError naming it.
_enc_hook = operator.attrgetter("_text")


def _schema_hook(tp: type) -> dict[str, Any]:
    if tp is WireDecimal:
        return {
            "anyOf": [
                {"type": "string", "pattern": DECIMAL_PATTERN},
                # The fraction's bound (20 digits) is in the description: multipleOf
                # 1e-20 is a float comparison in most validators.
                {"type": "number", "exclusiveMinimum": -_INTEGER_BOUND,
                 "exclusiveMaximum": _INTEGER_BOUND},
            ],
            "description": ("decimal; a string in fixed-point notation is preferred; a "
                            "number has at most 20 integer and 20 fraction digits in "
                            "fixed-point notation"),
        }
    raise NotImplementedError(f"no schema for {tp!r}")


class Action(enum.StrEnum):
    PLACE = "place"
    CANCEL = "cancel"
    CANCEL_ALL = "cancel_all"
    # Change price, stop_price or quantity of a working order: cancel-replace, since neither
    # Binance spot nor the paper exchange amends in place. See executor/pipeline/steps/amend.py.
    AMEND = "amend"
    # Set the stop-loss / take-profit of a position (account, symbol): the worker closes it
    # with a reduce_only order when the price reaches a level; without any level, clear it.
    # See executor/model/exits.py.
    SL_TP = "sl_tp"


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    LIMIT_MAKER = "limit_maker"  # post-only: refused by the broker if it would take
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TAKE_PROFIT = "take_profit"
    TAKE_PROFIT_LIMIT = "take_profit_limit"
    # One-cancels-the-other, one request with two legs of the same side and quantity: a
    # limit-maker leg at ``price`` and a stop leg triggered at ``stop_price`` (a stop-limit
    # at ``stop_limit_price`` when given, else a stop-market). A sell has price above the
    # market and stop_price below it, a buy the other way round. When one leg fills (or
    # triggers) the broker cancels the other; the request is one order record. Binance only.
    OCO = "oco"
    # Conditional orders (see docs/wire-contract.md): a trailing stop's trigger follows the
    # best reference price since activation at ``trailing_offset``; a touched order is the
    # mirror of a stop (a buy triggers on a fall to ``stop_price``, a sell on a rise).
    # Triggered, each executes as a market order or (the ``*_limit`` types) a limit order.
    TRAILING_STOP = "trailing_stop"
    TRAILING_STOP_LIMIT = "trailing_stop_limit"
    MARKET_IF_TOUCHED = "market_if_touched"
    LIMIT_IF_TOUCHED = "limit_if_touched"


# The conditional types a broker may not have natively (the emulator will trail them).
TRAILING_TYPES = frozenset({OrderType.TRAILING_STOP, OrderType.TRAILING_STOP_LIMIT})
TOUCHED_TYPES = frozenset({OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT_IF_TOUCHED})
CONDITIONAL_TYPES = TRAILING_TYPES | TOUCHED_TYPES


class TrailingOffsetType(enum.StrEnum):
    """How a trailing stop's ``trailing_offset`` reads, applied to the water mark:
    ``price`` an amount of the quote currency, ``bps`` basis points of it (100 bps = 1%),
    ``percent`` a percentage of it."""

    PRICE = "price"
    BPS = "bps"
    PERCENT = "percent"


class AlgoStrategy(enum.StrEnum):
    """How an execution algorithm spreads a parent order's quantity over its horizon:
    ``twap`` in equal slices, ``vwap`` in slices weighted by a volume profile."""

    TWAP = "twap"
    VWAP = "vwap"
    # Set by the worker, never in a request: a limit order with ``display_quantity`` at a
    # broker without icebergs, sent as limit children of that size, one after another.
    ICEBERG = "iceberg"


class OtoTrigger(enum.StrEnum):
    """When the exits of an entry with ``take_profit`` / ``stop_loss`` are placed: ``full``
    once the entry has ended (filled, or cancelled or expired after filling part), for all
    it filled, as Binance and Alpaca release an OTO's children; ``partial`` on each fill, an
    exit order for each part filled since the last."""

    FULL = "full"
    PARTIAL = "partial"


class TimeInForce(enum.StrEnum):
    """How long an order works. gtc: until cancelled; ioc: what fills at once, the rest
    cancelled; fok: all at once or nothing; gtd: until ``expire_at``; day: until the end of
    the trading day (Alpaca ``day``, OANDA ``GFD``); opg / cls: in the opening / closing
    auction (Alpaca). A broker without one refuses it as ``invalid``, naming the field."""

    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    GTD = "gtd"
    DAY = "day"
    OPG = "opg"
    CLS = "cls"


class OrderState(enum.StrEnum):
    CREATED = "created"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DENIED = "denied"


TERMINAL_STATES = frozenset(
    {
        OrderState.FILLED,
        OrderState.CANCELLED,
        OrderState.REJECTED,
        OrderState.EXPIRED,
        OrderState.DENIED,
    }
)


class ReasonCode(enum.StrEnum):
    """The closed set of failure reasons; ``risk_denied:<check>`` is built by ``risk_denied``."""

    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    HALTED = "halted"
    CIRCUIT_OPEN = "circuit_open"
    RATE_LIMITED = "rate_limited"
    BROKER_REJECTED = "broker_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    POISON = "poison"
    NOT_FOUND = "not_found"
    NOT_CANCELLABLE = "not_cancellable"
    # The request was published to a partition that does not hold its account (a producer
    # routing by a stale or wrong partition map); it changed nothing: publish it again to
    # the partition the message names.
    WRONG_PARTITION = "wrong_partition"
    # A bug of ours while handling this one request (never the input's fault): the request
    # fails alone, its batch-mates are decided as usual.
    INTERNAL_ERROR = "internal_error"


RISK_DENIED_PREFIX = "risk_denied:"


def risk_denied(check: str) -> str:
    return RISK_DENIED_PREFIX + check


class ResultStatus(enum.StrEnum):
    """What became of one request.

    Requests that produced or touched an order report the order's state; ``failed`` means
    the request itself was refused (invalid, duplicate, not found, ...) and no order changed.
    Whether a result is a success is told by ``reason_code`` alone (see ``Result.ok``).
    ``submitted``: the order was sent and the broker has not confirmed it (its answer was
    lost and lookups by client id have not found it yet); it is never sent again, and its
    outcome reaches ``<prefix>:events`` and the order record once the broker shows it.
    """

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DENIED = "denied"
    FAILED = "failed"


# The wire structs are declared gc=False: they hold only strings, numbers, decimals, lists
# and dicts of such, so they can never be part of a reference cycle, and leaving them out of
# the cyclic garbage collector's bookkeeping is a measurable saving per order.
ClientOrderId = Annotated[str, msgspec.Meta(pattern=CLIENT_ORDER_ID_PATTERN)]
AccountName = Annotated[str, msgspec.Meta(pattern=ACCOUNT_PATTERN)]
Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
Tag = Annotated[str, msgspec.Meta(max_length=MAX_TAG_LENGTH)]
EpochMs = Annotated[int, msgspec.Meta(ge=0)]
RequestOrderType = Annotated[OrderType, msgspec.Meta(description=(
    "oco: one request, two legs of the same side and quantity (Binance orderList/oco), "
    "one order record: a limit-maker leg at price and a stop leg triggered at stop_price "
    "(a stop-limit at stop_limit_price when given); a sell needs price > stop_price, a buy "
    "price < stop_price; when one leg fills the other expires. trailing_stop / "
    "trailing_stop_limit: a stop whose trigger follows the best price since activation at "
    "trailing_offset (sell: high - offset, only moving up; buy: low + offset, only moving "
    "down), then a market order / a limit at trigger -/+ limit_offset. market_if_touched / "
    "limit_if_touched: a buy triggers when the price falls to stop_price, a sell when it "
    "rises to it, then a market order / a limit at price"))]
IssuedAt = Annotated[int, msgspec.Meta(ge=0, description=(
    "epoch ms: when the producer made the request. Where workers require signed requests, "
    "a signed request needs it (or a deadline) within the workers' auth.max_age_ms of the "
    "moment Redis added its entry, so a captured entry cannot be replayed later"))]
StopLimitPrice = Annotated[WireDecimal, msgspec.Meta(description=(
    "type oco only, optional: the limit price of the stop leg, which then is a stop-limit "
    "(Binance STOP_LOSS_LIMIT, with time_in_force) instead of a stop-market (STOP_LOSS)"))]
TrailingOffset = Annotated[WireDecimal, msgspec.Meta(description=(
    "trailing_stop and trailing_stop_limit only, required, positive: how far the trigger "
    "trails the water mark, read as trailing_offset_type says (percent below 100, bps "
    "below 10000)"))]
OffsetType = Annotated[TrailingOffsetType, msgspec.Meta(description=(
    "trailing types only, default price: trailing_offset is an amount (price), basis points "
    "(bps) or a percentage (percent) of the water mark"))]
ActivationPrice = Annotated[WireDecimal, msgspec.Meta(description=(
    "trailing types only, optional, positive: trailing starts once the price reaches it "
    "(sell: at or above, buy: at or below); without it, at once"))]
LimitOffset = Annotated[WireDecimal, msgspec.Meta(description=(
    "trailing_stop_limit only, required, not negative: the triggered limit order's price is "
    "trigger - limit_offset (sell) or trigger + limit_offset (buy)"))]
DisplayQuantity = Annotated[WireDecimal, msgspec.Meta(description=(
    "limit, limit_maker, stop_limit and take_profit_limit only, optional, positive, below "
    "quantity: an iceberg order showing at most this much of its quantity on the book at a "
    "time (Binance icebergQty, which needs time_in_force gtc)"))]


Trigger = Annotated[OtoTrigger, msgspec.Meta(description=(
    "place with take_profit or stop_loss only, default full: full places the exits once the "
    "entry has ended, for all it filled; partial places an exit order for each fill"))]


class Algo(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True,
           frozen=True, gc=False):
    """An execution algorithm (``place`` of a market or limit order): the order is a
    parent whose quantity the worker sends as child orders of its type, one per slice,
    over ``horizon_ms`` from ``start_at``, or until ``end_at`` (docs/wire-contract.md)."""

    strategy: AlgoStrategy
    horizon_ms: Annotated[int | None, msgspec.Meta(description=(
        "how long the schedule lasts, from start_at: 1 s to 7 days; exactly one of "
        "horizon_ms and end_at"))] = None
    end_at: Annotated[int | None, msgspec.Meta(description=(
        "epoch ms when the schedule ends (1 s to 7 days after its start): nothing is sent "
        "after it, and what is not filled then is left; needs slices, or start_at with "
        "interval_ms (the number of slices is known when the request is)"))] = None
    interval_ms: Annotated[int | None, msgspec.Meta(description=(
        "time between two slices (at least 1 s; slices = horizon_ms // interval_ms); "
        "exactly one of interval_ms and slices"))] = None
    slices: Annotated[int | None, msgspec.Meta(description=(
        "how many slices, 1 to 1000, spread evenly over the horizon"))] = None
    start_at: Annotated[int | None, msgspec.Meta(description=(
        "epoch ms of the first slice; default: when the parent is accepted"))] = None
    weights: Annotated[list[WireDecimal] | None, msgspec.Meta(description=(
        "vwap only: one positive weight per slice, the volume profile; default: a U-shaped "
        "intraday profile (the first and last slices about twice the middle ones)"))] = None
    limit_offset_bps: Annotated[WireDecimal | None, msgspec.Meta(description=(
        "limit parents only, default 0: each child's price is the reference price then, "
        "this many basis points to the passive side (a buy's below, a sell's above), and "
        "never beyond the parent's price"))] = None
    reprice_ms: Annotated[int | None, msgspec.Meta(description=(
        "limit parents only, at least 1 s, default the interval: a child not filled this "
        "long after it was sent is cancelled, and what it left sent again at the price "
        "then"))] = None
    max_participation: Annotated[WireDecimal | None, msgspec.Meta(description=(
        "above 0, at most 1: the children never add up to more than this share of the "
        "volume the market traded since start_at, as the broker reports it (e.g. 0.1: "
        "10%); a child waits for the volume, and what the cap holds back at the end is "
        "left. Refused at a broker that reports no volume"))] = None


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True,
              gc=False):
    """One order request (the JSON object in a pending entry's ``data`` field).

    At most 32 levels of objects and arrays (this object included); decimals, and numbers
    with a fraction or an exponent anywhere in it, at most 20 integer and 20 fraction
    digits in fixed-point notation."""

    action: Action = Action.PLACE
    client_order_id: ClientOrderId | None = None
    account: AccountName | None = None
    symbol: Symbol | None = None
    side: Side | None = None
    type: RequestOrderType | None = None
    quantity: WireDecimal | None = None
    # A market order by the amount of the quote asset to spend (buy) or receive (sell)
    # instead of a base quantity; exactly one of quantity and quote_quantity.
    quote_quantity: WireDecimal | None = None
    price: WireDecimal | None = None
    stop_price: WireDecimal | None = None
    stop_limit_price: StopLimitPrice | None = None
    trailing_offset: TrailingOffset | None = None
    trailing_offset_type: OffsetType | None = None
    activation_price: ActivationPrice | None = None
    limit_offset: LimitOffset | None = None
    display_quantity: DisplayQuantity | None = None
    time_in_force: TimeInForce | None = None
    expire_at: EpochMs | None = None
    deadline: EpochMs | None = None
    issued_at: IssuedAt | None = None
    strategy_id: Tag | None = None
    signal_id: Tag | None = None
    metadata: dict[str, Any] | None = None
    # Place only: the order may only reduce the account's position in the symbol; one
    # that would increase it is denied (``risk_denied:reduce_only``).
    reduce_only: bool = False
    # sl_tp: the position's stop-loss and take-profit levels. place: the order is the
    # entry of a contingent list, whose exits the worker places once it fills: both
    # levels (a bracket) one oco, one level (an oto) a limit at take_profit or a stop at
    # stop_loss; reduce_only, for what the entry filled (docs/wire-contract.md).
    stop_loss: WireDecimal | None = None
    take_profit: WireDecimal | None = None
    oto_trigger: Trigger | None = None
    # place of a market order only: the order is the parent of an execution algorithm.
    algo: Algo | None = None


class Fill(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One execution: ``commission`` is charged in ``commission_asset`` as the broker
    reports it (Binance: the base asset of a buy by default, the quote asset of a sell, or
    BNB); no asset named means the quote asset."""

    fill_id: str
    price: WireDecimal
    quantity: WireDecimal
    commission: WireDecimal = msgspec.field(default_factory=zero)
    commission_asset: str | None = None
    liquidity: str = "taker"
    at: EpochMs = 0


# Commissions of an order's fills, per asset they were charged in, and their total when
# there is one asset: see ``Result``.
Commission = Annotated[WireDecimal | None, msgspec.Meta(description=(
    "the total commission of the fills when they were all charged in one asset "
    "(commission_asset; none named: the quote asset); null when they were charged in "
    "several, which are never added up: see commissions"))]
Commissions = Annotated[dict[str, WireDecimal], msgspec.Meta(description=(
    "the commissions of the fills per asset they were charged in (Binance: the base asset "
    "of a buy, the quote asset of a sell, or BNB), each total exact; fills that name no "
    "asset are left out"))]


class Result(msgspec.Struct, kw_only=True, gc=False):
    """The one answer to one request (the JSON object in a result entry's ``data`` field).

    Commissions: ``commissions`` holds their totals per asset charged; ``commission`` and
    ``commission_asset`` say the total and its asset while there is one asset, and are null
    once the fills were charged in several (a buy's fee in the base asset and another's in
    BNB): amounts in different assets are never added up."""

    request_id: str
    action: Action
    status: ResultStatus
    client_order_id: str | None = None
    account: str | None = None
    symbol: str | None = None
    side: Side | None = None
    type: OrderType | None = None
    order_state: OrderState | None = None
    reason_code: str | None = None
    reason: str | None = None
    broker_order_id: str | None = None
    quantity: WireDecimal | None = None
    filled_quantity: WireDecimal = msgspec.field(default_factory=zero)
    average_price: WireDecimal | None = None
    commission: Commission = msgspec.field(default_factory=zero)
    commission_asset: str | None = None
    commissions: Commissions = {}
    fills: list[Fill] = []
    cancelled: list[str] = []
    # The order is emulated by orderstream (the broker has no native order of its type):
    # held by the worker, sent as a plain market or limit order when it triggers.
    emulated: bool = False
    # The entry of a contingent list whose exits the broker holds natively, placed by the
    # broker itself once the entry has filled (Binance's orderList/oto, /otoco).
    native_exits: bool = False
    strategy_id: str | None = None
    signal_id: str | None = None
    metadata: dict[str, Any] | None = None
    enqueued_at: EpochMs = 0
    received_at: EpochMs = 0
    completed_at: EpochMs = 0
    worker: str = ""
    v: int = CONTRACT_VERSION

    @property
    def ok(self) -> bool:
        """A result without a reason code goes to ``<prefix>:completed``, else to ``failed``.

        An IOC/FOK order the broker expired unfilled is a normal outcome (completed, status
        expired); a request whose deadline passed before it was sent is a failure (reason
        ``expired``)."""
        return self.reason_code is None


class OrderSpec(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The parameters of an accepted place request, as carried by the ``created`` event."""

    account: str
    symbol: str
    side: Side
    type: OrderType
    # None for a market order by quote amount: the broker decides the base quantity, and
    # the order is filled when the broker says so.
    quantity: WireDecimal | None
    quote_quantity: WireDecimal | None = None
    price: WireDecimal | None = None
    stop_price: WireDecimal | None = None
    stop_limit_price: WireDecimal | None = None  # an oco's stop leg as a stop-limit
    # Trailing types only (None on every other type; older events have none of them).
    trailing_offset: WireDecimal | None = None
    trailing_offset_type: TrailingOffsetType | None = None
    activation_price: WireDecimal | None = None
    limit_offset: WireDecimal | None = None  # trailing_stop_limit only
    # An iceberg's visible part (limit types only; None otherwise and on older events).
    display_quantity: WireDecimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    expire_at: EpochMs | None = None
    deadline: EpochMs | None = None
    strategy_id: str | None = None
    signal_id: str | None = None
    metadata: dict[str, Any] | None = None
    reduce_only: bool = False
    # The entry of a contingent list (model/lists.py): its exits' levels, and when they go.
    take_profit: WireDecimal | None = None
    stop_loss: WireDecimal | None = None
    oto_trigger: OtoTrigger | None = None
    # The parent of an execution algorithm (model/schedules.py): its children do the trading.
    algo: Algo | None = None


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One state transition of one order, on ``<prefix>:events``, the audit log. An entry's
    ``data`` is one event (a JSON object) or the several events of one write of one order (a
    JSON array of them, in ``seq`` order: event v2).

    ``seq`` numbers an order's events from 1, so a reader can tell a gap or a replayed event.
    The ``created`` event carries the order's parameters; later ones carry what changed: a
    fill event its fill and the running totals, a rejection its reason.
    """

    client_order_id: str
    seq: int
    state: OrderState
    prev_state: OrderState | None = None
    at: EpochMs
    worker: str = ""
    request_id: str | None = None
    account: str = ""
    symbol: str = ""
    order: OrderSpec | None = None
    broker_order_id: str | None = None
    fill: Fill | None = None
    # Running totals after ``fill``; present on fill events only (``commission`` absent
    # there when the fills were charged in several assets; ``commissions`` absent on the
    # fill events of logs written before it existed).
    filled_quantity: WireDecimal | None = None
    average_price: WireDecimal | None = None
    commission: WireDecimal | None = None
    commissions: dict[str, WireDecimal] | None = None
    reason_code: str | None = None
    reason: str | None = None
    emulated: bool = False  # the order is emulated by orderstream (see Result)
    native_exits: bool = False  # its exits are held natively by the broker (see Result)


class OrderStatus(msgspec.Struct, kw_only=True, gc=False):
    """One order as it is now, read from its record (the ``record`` field of the hash
    ``<prefix>:order:<client_order_id>``) by ``OrderClient.order`` and ``orderstream order``.
    The record holds more; these are the fields a producer may rely on. It is there from
    the moment the order is persisted until ``order_ttl_ms`` (default 7 days) after the
    order is final; every change is also an event on ``<prefix>:events``.
    """

    client_order_id: str
    request_id: str  # the request that made the order
    spec: OrderSpec
    state: OrderState
    seq: int  # the number of its events so far
    broker_order_id: str | None = None
    filled_quantity: WireDecimal = msgspec.field(default_factory=zero)
    average_price: WireDecimal | None = None
    # As on a result (see Result); a record written before per-asset totals existed has
    # no ``commissions``: its fills name each one's asset.
    commission: Commission = msgspec.field(default_factory=zero)
    commission_asset: str | None = None
    commissions: Commissions = {}
    fills: list[Fill] = []
    reason_code: str | None = None
    reason: str | None = None
    created_at: EpochMs = 0
    updated_at: EpochMs = 0
    emulated: bool = False  # as on a result
    native_exits: bool = False  # as on a result


class ContractError(ValueError):
    """A request that does not satisfy the contract; ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_request_decoder = msgspec.json.Decoder(Request, dec_hook=_dec_hook, float_hook=bounded_number)
_result_decoder = msgspec.json.Decoder(Result, dec_hook=_dec_hook, float_hook=Decimal)
_event_decoder = msgspec.json.Decoder(Event, dec_hook=_dec_hook, float_hook=Decimal)
_events_decoder = msgspec.json.Decoder(Event | list[Event], dec_hook=_dec_hook,
                                       float_hook=Decimal)
_raw_events_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_order_status_decoder = msgspec.json.Decoder(OrderStatus, dec_hook=_dec_hook,
                                             float_hook=Decimal)
_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

_FIELD_AT = re.compile(r"at `\$\.([A-Za-z0-9_]{1,64})(?![A-Za-z0-9_])")
_FIELD_QUOTED = re.compile(r"field `([A-Za-z0-9_]{1,64})`")


def _field_of(message: str) -> str | None:
    match = _FIELD_AT.search(message) or _FIELD_QUOTED.search(message)
    return match.group(1) if match else None


def decode_request(data: bytes | str) -> Request:
    """Decode a request strictly; every failure is a ContractError naming the field. Its
    nesting is bounded before it is parsed (``check_depth``), its numbers while they are."""
    if isinstance(data, str) or data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        check_depth(data)  # (the count is its own first test, inlined for the usual case)
    try:
        return _request_decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = _field_of(text)
        return _raise(_shorten(text if field else f"data: {text}"), field or "data")
    except msgspec.DecodeError as exc:
        return _raise(_shorten(f"data is not valid JSON: {exc}"), "data")
    except (InvalidOperation, UnicodeDecodeError) as exc:
        return _raise(_shorten(f"data could not be read: {exc}"), "data")


_MAX_REASON = 300


def _shorten(message: str) -> str:
    """A decoder's message quotes the offending value, which may be 64 KB of anything: it
    is cut, keeping where it is (``- at `$.field```), so that a refused request's result
    stays small."""
    if len(message) <= _MAX_REASON:
        return message
    head, at, where = message.rpartition(" - at `")
    if not at:
        head, where = message, ""
    return f"{head[:_MAX_REASON]}... ({len(message)} characters){at}{where[:100]}"


# A string (to its closing quote, or to the end of an unterminated one: never scanned twice)
# or a bracket; everything else is skipped by the search, in C.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)
_OPENING = frozenset(b"[{")
_QUOTE = ord('"')


def check_depth(data: bytes | str) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH``, naming the top-level field that holds
    the deep part (or ``data``). Linear in the bytes, and nearly free for a real request,
    whose brackets are too few to reach the limit even if all were nested."""
    raw = data.encode(errors="replace") if isinstance(data, str) else data
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return
    depth, last_string, field = 0, b"", "data"
    for match in _STRUCTURE.finditer(raw):
        token = match.group()
        first = token[0]
        if first == _QUOTE:
            if depth == 1:
                last_string = token
        elif first in _OPENING:
            depth += 1
            if depth == 2:  # a top-level value: the last top-level string was its key
                name = last_string[1:-1].decode(errors="replace")
                field = name if name in Request.__struct_fields__ else "data"
            if depth > MAX_DEPTH:
                raise ContractError(f"`{field}` nests objects and arrays deeper than "
                                    f"{MAX_DEPTH} levels (the request object included)",
                                    field)
        else:
            depth -= 1


def _raise(message: str, field: str | None) -> Request:
    raise ContractError(message, field)


def encode(obj: msgspec.Struct) -> bytes:
    return _encoder.encode(obj)


def decode_result(data: bytes | str) -> Result:
    return _result_decoder.decode(data)


def decode_event(data: bytes | str) -> Event:
    """One event, as a single event's JSON (see ``decode_events`` for an entry's data)."""
    return _event_decoder.decode(data)


def encode_events(events: Sequence[Event]) -> bytes:
    """The ``data`` of the ``<prefix>:events`` entry of one atomic write of one order: its one
    event as an object, as every entry was before (event v1), or its several events as an
    array in ``seq`` order (event v2): a write that makes several transitions (created then
    pending_submit; submitted then filled) adds one entry, not one per transition."""
    if len(events) == 1:
        return _encoder.encode(events[0])
    return _encoder.encode(events)


def decode_events(data: bytes | str) -> list[Event]:
    """The events of one ``<prefix>:events`` entry, in order: one (an object: v1, or a v2
    write that made one transition) or several (an array, event v2)."""
    decoded = _events_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def split_events(data: bytes) -> list[bytes]:
    """The JSON of each event of one entry, as the entry holds it (not re-encoded): the
    entry's data itself for one event, each element of its array for several. Raises
    msgspec.DecodeError for data that is neither."""
    if data.lstrip()[:1] != b"[":
        return [data]
    return [bytes(raw) for raw in _raw_events_decoder.decode(data)]


def decode_order_status(data: bytes | str) -> OrderStatus:
    return _order_status_decoder.decode(data)


def decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    """A strict JSON decoder for any struct built from contract types (or a union of them)."""
    return msgspec.json.Decoder(tp, dec_hook=_dec_hook, float_hook=Decimal)


def json_schema(tp: type) -> dict[str, Any]:
    return msgspec.json.schema(tp, schema_hook=_schema_hook)


def to_builtins(obj: object) -> Any:
    return msgspec.to_builtins(obj, enc_hook=_enc_hook)


def convert(obj: object, tp: type[msgspec.Struct]) -> Any:
    return msgspec.convert(obj, tp, dec_hook=_dec_hook)
