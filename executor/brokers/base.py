"""The broker seam: the protocol every adapter implements, what it reports, and the one
taxonomy of errors that tells the worker whether a call may be retried.

The taxonomy is the safety rule against duplicate orders:
- ``RetryableError``: the call certainly did not take effect; sending again is safe.
- ``PermanentError``: the broker refused; sending again would be refused again.
- ``UnknownOutcome``: it may or may not have taken effect (timeout, 5xx, reset after send);
  the order must be looked up by client id before anything is sent again.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

import msgspec

from producer.contract import Fill, OrderSpec, WireDecimal, zero


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


class Broker(Protocol):
    """One broker account. Implementations are async, one instance per configured account.

    Optional, looked up with ``getattr`` by the shared rate limiter:
    - ``weights: Mapping[str, int]``: request weight per method name (``submit``, ``cancel``,
      ``get_order``, ``open_orders``, ...) as the broker publishes them; 1 when absent.
    - ``usage() -> Mapping[str, int]``: the broker's own latest usage counters from its
      response headers, e.g. ``{"weight_1m": 120, "orders_10s": 3, "orders_1d": 900}``.

    Optional, looked up with ``getattr`` by the submit step (steps/submit.py):
    - ``lookup_window_ms: int``: how long after an ambiguous send (``UnknownOutcome``) the
      order may still appear at the broker: its own backend timeout and more (Binance: at
      least 10 s). Within it "no such order" proves nothing; past it the order is never sent
      again, it stays ``submitted`` with its outcome unknown and is followed by client id.
      Absent: the worker's ``lookup_window_ms``.

    Optional, looked up with ``getattr`` by the metrics and /readyz (probes.py):
    - ``async def ping(self) -> None``: a cheap call that raises when the broker cannot be
      reached (Binance: GET /api/v3/ping); a broker without it counts as reachable.
    """

    account: str

    async def start(self) -> None:
        """Connect and load what ``check`` needs (symbols, filters). Called once."""

    async def close(self) -> None:
        """Release connections and background tasks. Called once at shutdown."""

    def check(self, order: OrderSpec) -> OrderSpec | None:
        """Raise ``ContractError`` naming the field if the broker would refuse this order's
        parameters (unknown symbol, price off the tick, quantity off the step, ...).

        Returns the order adjusted to the broker's rules where the account asks for that
        (Binance's ``round_quantity``: quantity rounded down to the step), which is what is
        recorded and sent; None: the order as it is.

        Pure and local: no call to the broker, so a bad request never reaches it.
        """

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        """Send a new order. A broker that already has ``client_order_id`` must not create a
        second order: it raises ``PermanentError`` (or reports the existing one)."""

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        """Cancel an open order. ``OrderNotFound`` / ``NotCancellable`` when it cannot."""

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        """Look an order up by our client id; ``OrderNotFound`` when the broker has none."""

    def quote_asset(self, symbol: str) -> str | None:
        """The asset prices and notionals of ``symbol`` are in (None: unknown)."""

    def base_asset(self, symbol: str) -> str | None:
        """The asset ``symbol``'s quantities are in (None: unknown)."""

    async def reference_price(self, symbol: str) -> Decimal | None:
        """The current reference (last or mid) price of ``symbol``; None when unknown.
        Risk checks deny an order whose price they need and cannot get."""



class BatchSubmitter(Protocol):
    """A broker that can take many new orders in one call (the paper exchange: one Redis
    script for a whole batch). Each order gets its own outcome: a report or its error."""

    async def submit_many(
        self, orders: Sequence[tuple[str, OrderSpec]]
    ) -> list[BrokerOrder | BrokerError]: ...


async def submit_all(
    broker: Broker, orders: Sequence[tuple[str, OrderSpec]]
) -> list[BrokerOrder | BaseException]:
    """Submit each order once, in one call where the broker can batch, else concurrently.

    Errors come back in place of reports; nothing is retried here.
    """
    many = getattr(broker, "submit_many", None)
    if many is not None:
        return list(await many(orders))
    return list(await asyncio.gather(*(broker.submit(cid, spec) for cid, spec in orders),
                                     return_exceptions=True))
