"""What a broker reports of an order (``BrokerOrder``, ``BrokerStatus``) and the one taxonomy
of broker errors that tells the worker whether a call may be retried. The order model and
the safety state read these; the broker seam (brokers/base.py) re-exports them.

The taxonomy is the safety rule against duplicate orders:
- ``RetryableError``: the call certainly did not take effect; sending again is safe.
- ``PermanentError``: the broker refused; sending again would be refused again.
- ``UnknownOutcome``: it may or may not have taken effect (timeout, 5xx, reset after send);
  the order must be looked up by client id before anything is sent again.
"""

from __future__ import annotations

import enum

import msgspec

from producer.contract import Fill, WireDecimal, zero


class BrokerError(Exception):
    """Base of every error a broker adapter raises. Messages never contain secrets."""


class RetryableError(BrokerError):
    """The call did not take effect (refused before it was sent, throttled, unavailable)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The broker throttled us; ``retry_after`` seconds is its own advice when it gave one."""


class Banned(RateLimited):
    """The broker banned us for sending past its limits (Binance: HTTP 418) until
    ``retry_after`` seconds from now: every worker of the account must stop sending."""


class InconsistentRead(RetryableError):
    """The broker answered, but what it answered did not add up yet: an order read, then its
    trades, while it traded in between (Binance: executedQty and the sum of myTrades
    disagree), even after reading again a few times. Nothing is wrong with the broker: the
    lookup is tried again later, and the circuit breaker counts it as an answer."""


class FeedBroken(RetryableError):
    """A push feed (``PushFeed.updates``) could not be opened or broke: the caller polls and
    asks for it again. ``logged``: the adapter has told it itself, once when it was lost and
    then at a low rate while it stays lost, so a caller that retries every pass need not
    log each attempt."""

    def __init__(self, message: str, *, logged: bool = False) -> None:
        super().__init__(message)
        self.logged = logged


class Throttled(RetryableError):
    """The shared rate limiter (brokers/limited.py) held the call back, and capacity would
    come only after the request's deadline (or the longest wait configured): the call was
    never sent. The submit step ends the order ``rate_limited`` rather than retrying."""


class SendRefused(BrokerError):
    """Not sent, by our own guard at the broker's door (brokers/sending.py): another
    delivery holds the order's send token and may have sent it (``held``), the order's
    outcome is already recorded (``moved_on``), or Redis did not confirm the order's record
    durable (``not_durable``). Never a broker failure."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class PermanentError(BrokerError):
    """The broker refused the call for a reason that retrying will not change."""


class AuthenticationFailed(PermanentError):
    """The broker refused our credentials (Binance: bad signature, key format, key, IP or
    permissions): nothing will pass until an operator fixes them, so the circuit breaker
    opens at once."""


class OrderNotFound(PermanentError):
    """The broker does not know the order (lookup or cancel by client id)."""


class NotCancellable(PermanentError):
    """The order is already final at the broker (filled, cancelled, rejected, expired)."""


class UnknownOutcome(BrokerError):
    """The call may have taken effect: look the order up by client id, never resend blindly."""


class DuplicateClientId(UnknownOutcome):
    """The broker refused a new order because it already has one under our client id
    (Binance -2010 "Duplicate order sent."; OANDA CLIENT_ORDER_ID_ALREADY_EXISTS; Alpaca 422
    "client_order_id must be unique"): an earlier send of ours landed. Never ``rejected``:
    the order is looked up by client id and that one is ours."""


class BrokerStatus(enum.StrEnum):
    """An order's status as the broker reports it."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


FINAL_BROKER_STATUSES = frozenset(
    {BrokerStatus.FILLED, BrokerStatus.CANCELLED, BrokerStatus.REJECTED, BrokerStatus.EXPIRED}
)


class BrokerOrder(msgspec.Struct, kw_only=True, gc=False):
    """The broker's view of one order: every fill so far, cumulative, and its status."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    status: BrokerStatus
    quantity: WireDecimal
    filled_quantity: WireDecimal = msgspec.field(default_factory=zero)
    fills: list[Fill] = []
    reason: str | None = None
    updated_at: int = 0
    # Held by our emulator (brokers/emulating.py), not (yet) at the broker: the broker has
    # no native order of this type.
    emulated: bool = False
    # The entry of a contingent list sent with its exits as one native list (Binance's
    # orderList/oto, /otoco; Alpaca's bracket / oto class): the broker places them itself
    # once the entry has filled.
    native_exits: bool = False
