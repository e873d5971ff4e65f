"""The broker seam: the protocol every adapter implements. What an adapter reports, and the
taxonomy of errors that tells the worker whether a call may be retried, are the model's
(model/broker_reports.py) and are re-exported here, where adapters look for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence, Set
from decimal import Decimal
from typing import NamedTuple, Protocol

from producer.contract import CONDITIONAL_TYPES, ContractError, OrderSpec, OrderType

from ..model.broker_reports import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    Banned,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    FeedBroken,
    InconsistentRead,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    SendRefused,
    Throttled,
    UnknownOutcome,
)

__all__ = [
    "EMULATED",
    "FINAL_BROKER_STATUSES",
    "AuthenticationFailed",
    "Banned",
    "BatchSubmitter",
    "Broker",
    "BrokerError",
    "BrokerOrder",
    "BrokerStatus",
    "DuplicateClientId",
    "FeedBroken",
    "InconsistentRead",
    "NeedsEmulation",
    "NeedsSlicing",
    "NotCancellable",
    "OrderNotFound",
    "PermanentError",
    "RateLimited",
    "RetryableError",
    "SendRefused",
    "Throttled",
    "UnknownOutcome",
    "Volume",
    "VolumeSource",
    "submit_all",
]


# The end of every NeedsEmulation message: what becomes of the order (the message reaches
# a producer only when emulation is off).
EMULATED = "emulated unless [worker] emulate is off"


class NeedsEmulation(ContractError):
    """The broker has no native order for this one (a conditional type, or a variant of
    one it cannot take exactly): the emulator holds it and sends a plain order when it
    triggers (brokers/emulating.py). Without the emulator it is ``invalid`` as any
    ``ContractError``, naming the field."""


class Broker(Protocol):
    """One broker account. Implementations are async, one instance per configured account.

    Optional, looked up with ``getattr`` by the shared rate limiter:
    - ``weights: Mapping[str, int]``: request weight per method name (``submit``, ``cancel``,
      ``get_order``, ``open_orders``, ...) as the broker publishes them; 1 when absent.
    - ``usage() -> Mapping[str, int]``: the broker's own latest usage counters from its
      response headers, e.g. ``{"weight_1m": 120, "orders_10s": 3, "orders_1d": 900}``.

    Optional, looked up with ``getattr`` by the submit step (pipeline/steps/submit.py):
    - ``lookup_window_ms: int``: how long after an ambiguous send (``UnknownOutcome``) the
      order may still appear at the broker: its own backend timeout and more (Binance: at
      least 10 s). Within it "no such order" proves nothing; past it the order is never sent
      again, it stays ``submitted`` with its outcome unknown and is followed by client id.
      Absent: the worker's ``lookup_window_ms``.

    Optional, looked up with ``getattr`` by the worker's lanes (worker.py, pipeline/turn.py):
    - ``waits: bool``: whether a call may wait on anything but this worker's Redis (a
      network round trip, a simulated latency); absent: it may. A batch whose accounts'
      brokers never wait keeps its lane's turn to read until it is done.

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



def refused_by(check: Callable[[OrderSpec], object], spec: OrderSpec) -> str | None:
    """Why a broker's ``check`` (pure and local) refuses ``spec``, naming the field; None
    when it takes it. For an order a worker would publish itself (an exit): one the
    broker's rules refuse is not published, to be refused again at every retry."""
    try:
        check(spec)
    except ContractError as exc:
        return f"{exc.field}: {exc}" if exc.field else str(exc)
    return None


class Volume(NamedTuple):
    """What a venue says was traded of a symbol (everyone's trades, ours too): ``quantity``
    in its base asset from the ``since`` asked up to ``until`` (epoch ms, exclusive), the
    end of the last bucket the venue has closed, so that the next call, from ``until``,
    counts nothing twice and a bucket still filling is counted once it closes."""

    quantity: Decimal
    until: int


class VolumeSource(Protocol):
    """A broker adapter that reports the market's traded volume (for an algorithm's
    participation cap: background/algos.py). Optional: an adapter without it refuses
    ``algo.max_participation``."""

    # How often a new bucket closes, so how often asking again is worth it (default 1 s).
    volume_interval_ms: int

    async def traded_volume(self, symbol: str, since: int) -> Volume | None:
        """The volume of ``symbol`` traded from ``since`` (epoch ms) up to the venue's last
        closed bucket; at most a bounded stretch per call (the caller asks again from
        ``until``). None when unknown: an unknown symbol, no volume for it, or the source
        failed (logged). Raises only ``RateLimited`` (a 429, a ban), for the account's
        guard (limited.py) to share the pause with every worker; the guard then answers
        None."""
        ...


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


class BatchLookup(Protocol):
    """A broker that can look many orders up in one call (the paper exchange: one Redis
    read for them all). Each order gets its own answer: its report or its error
    (``OrderNotFound``, ...)."""

    async def get_many(
        self, orders: Sequence[tuple[str, OrderSpec]]
    ) -> list[BrokerOrder | BaseException]: ...


async def get_all(
    broker: Broker, orders: Sequence[tuple[str, OrderSpec]]
) -> list[BrokerOrder | BaseException]:
    """Look each order (client id, spec) up once: in one call where the broker's class
    can (``BatchLookup``), else concurrently. Asked of the class, not the object: a
    proxy's ``__getattr__`` would hand over the adapter's, skipping the proxy's own
    ``get_order`` (a test's double). Errors come back in place of reports."""
    if getattr(type(broker), "get_many", None) is not None:
        return list(await broker.get_many(orders))  # type: ignore[attr-defined]
    return await get_each(broker, orders)


async def get_each(broker: Broker, orders: Sequence[tuple[str, OrderSpec]]
                   ) -> list[BrokerOrder | BaseException]:
    """Each order looked up alone, through ``broker.get_order``, concurrently; errors in
    place of reports."""
    return list(await asyncio.gather(
        *(broker.get_order(cid, spec.symbol) for cid, spec in orders),
        return_exceptions=True))


def refuse_conditional(order: OrderSpec, broker: str,
                       native: Set[OrderType] = frozenset()) -> None:
    """Leave to the emulator (``NeedsEmulation``, naming ``type``) a conditional type
    (trailing stop, if-touched) that ``broker`` has no native order for (``native``: those
    it has, which its adapter checks further)."""
    if order.type in CONDITIONAL_TYPES and order.type not in native:
        raise NeedsEmulation(f"type {order.type} is not supported natively by {broker} "
                             f"accounts ({EMULATED})", "type")


class NeedsSlicing(ContractError):
    """The broker has no icebergs: a limit order's ``display_quantity`` is emulated, the
    order a parent whose children are limit orders of that size, sent one after another
    (model/schedules.py ``iceberg_parent``, background/algos.py)."""


def refuse_display(order: OrderSpec, broker: str) -> None:
    """An iceberg on a broker without one: a ``limit`` one is sliced by the worker
    (``NeedsSlicing``); any other type is refused, naming ``display_quantity``, before
    anything is sent."""
    if order.display_quantity is None:
        return
    if order.type is OrderType.LIMIT:
        raise NeedsSlicing(f"display_quantity: {broker} has no icebergs; the worker sends "
                           "the order as limit orders of that size", "display_quantity")
    raise ContractError(f"display_quantity is not supported by {broker} on a {order.type} "
                        "order (a limit order's is emulated)", "display_quantity")
