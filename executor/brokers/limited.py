"""``LimitedBroker``: any broker adapter behind the rate limits its account shares with
every other worker (executor/safety/limits/).

Before a call, the wrapper takes the call's weight (the adapter's ``weights`` by method
name, 1 when absent) and, for new orders, the order count, waiting for capacity as long as
the request's deadline (``OrderSpec.deadline``) and ``max_wait_ms`` allow; when it would
have to wait longer it raises ``Throttled`` and nothing is sent. A batch (``submit_many``)
takes its capacity in one script call; if only part fits, that part goes now and the rest
as capacity returns. After a call, the adapter's own ``usage()`` counters raise the shared
ones. A 429 (``RateLimited``) pauses the account for every worker until its Retry-After; a
418 (``Banned``) stops every worker sending to it until the ban ends. With the plan's
``max_in_flight``, a call holds a slot of the worker's gate (safety/limits/gate.py) from before it
asks the limiter until its answer is in and any pause it brought is shared; a call waiting
for capacity holds none.

Anything else of the adapter (``updates()``, ``received_count()``, ...) passes through.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from redis.exceptions import RedisError

from producer.contract import OrderSpec

from ..infra.clock import wall_clock_ms
from ..infra.metrics import Metrics
from ..safety.limits import BAN, PAUSE, Gate, Grant, Limiter
from .base import (
    Banned,
    Broker,
    BrokerError,
    BrokerOrder,
    RateLimited,
    RetryableError,
    Throttled,
    UnknownOutcome,
    Volume,
)
from .wrapper import BrokerWrapper

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PAUSE_MS = 1_000  # a 429 without Retry-After
DEFAULT_BAN_MS = 120_000  # a 418 without Retry-After: Binance's shortest ban
_JITTER_MS = 5  # spreads the waiters that wake as a window opens


def throttle_reason(account: str, grant: Grant, describe: Callable[[str], str],
                    allowed_ms: int, deadline: int | None, waited_ms: int = 0) -> str:
    """Why a call was not sent, with the limit and the wait, for the result's message.
    ``waited_ms`` is what the call had already waited of ``allowed_ms``: without it a
    capacity a little under the bound reads as if it should have been waited for."""
    wait = grant.wait_ms
    if grant.blocked_by == BAN:
        what = f"the broker banned account {account} (HTTP 418); the ban ends in {wait} ms"
    elif grant.blocked_by == PAUSE:
        what = (f"the broker asked account {account} to pause (HTTP 429, Retry-After); "
                f"the pause ends in {wait} ms")
    elif wait < 0:
        return (f"rate limit {describe(grant.blocked_by)} of account {account} is smaller "
                "than this call; never sent")
    else:
        what = (f"rate limit {describe(grant.blocked_by)} of account {account} reached; "
                f"capacity in {wait} ms")
    spent = f", {waited_ms} ms of it already waited" if waited_ms > 0 else ""
    bound = (f"the request's deadline {deadline} ({allowed_ms} ms away{spent})"
             if deadline is not None else f"max_wait_ms ({allowed_ms} ms{spent})")
    return f"{what}, later than {bound}; never sent"


class LimitedBroker(BrokerWrapper):
    """A broker adapter behind its account's shared rate limits (see the module doc)."""

    # A call may wait for capacity, whatever the adapter (Broker.waits).
    waits = True

    def __init__(self, inner: Broker, limiter: Limiter, *, metrics: Metrics | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        super().__init__(inner)
        self.limiter = limiter
        self.clock = clock
        self.max_wait_ms = limiter.plan.max_wait_ms
        self.weights: Mapping[str, int] = getattr(inner, "weights", None) or {}
        self._usage: Callable[[], Mapping[str, int]] | None = getattr(inner, "usage", None)
        self._last_usage: dict[str, int] = {}
        self._ban_logged = 0  # end of the last ban this process logged
        self._used: dict[str, Any] = {}
        cap = limiter.plan.max_in_flight
        self.gate: Gate | None = Gate(cap) if cap > 0 else None
        # Only an adapter that prices many symbols at once may look like one.
        if getattr(inner, "reference_prices", None) is not None:
            self.reference_prices = self._reference_prices
        # Only an adapter that reports traded volume may look like one (emulating.
        # reports_volume asks getattr).
        if getattr(inner, "traded_volume", None) is not None:
            self.traded_volume = self._traded_volume
        # Only an adapter that can be pinged may look like one (probes.ping asks getattr).
        self.ping: Callable[[], Awaitable[None]] | None = (
            self._ping if getattr(inner, "ping", None) is not None else None)
        if metrics is not None:
            plan = limiter.plan
            caps = {w.name: w.cap for w in plan.windows}
            if plan.rate is not None:
                caps["orders_per_second"] = plan.rate.burst
            for name, cap in caps.items():
                metrics.rate_limit_cap.labels(self.account, name).set(cap)
                self._used[name] = metrics.rate_limit_used.labels(self.account, name)

    # -- the calls that cost weight or orders ---------------------------------------------

    async def reference_price(self, symbol: str) -> Decimal | None:
        # Adapters answer it from a cache unless they say it costs weight.
        if "reference_price" not in self.weights:
            return await self.inner.reference_price(symbol)
        return await self._call("reference_price", 0, None,
                                lambda: self.inner.reference_price(symbol))

    async def _reference_prices(self, symbols: Sequence[str]) -> dict[str, Decimal | None]:
        prices: Callable[[Sequence[str]], Awaitable[dict[str, Decimal | None]]] = \
            self.inner.reference_prices  # type: ignore[attr-defined]
        if "reference_prices" not in self.weights:
            return await prices(symbols)
        return await self._call("reference_prices", 0, None, lambda: prices(symbols))

    async def _traded_volume(self, symbol: str, since: int) -> Volume | None:
        volume: Callable[[str, int], Awaitable[Volume | None]] = \
            self.inner.traded_volume  # type: ignore[attr-defined]
        if "traded_volume" not in self.weights:
            return await volume(symbol, since)
        try:
            return await self._call("traded_volume", 0, None, lambda: volume(symbol, since))
        except BrokerError:
            return None  # over its rate limits (a ban, a wait too long): unknown for now

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        return await self._call("submit", 1, order.deadline,
                                lambda: self.inner.submit(client_order_id, order))

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self._call("cancel", 0, None,
                                lambda: self.inner.cancel(client_order_id, symbol))

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self._call("get_order", 0, None,
                                lambda: self.inner.get_order(client_order_id, symbol))

    async def _ping(self) -> None:
        """The health probes' ping, through the limits but waiting for none of them: a
        ping sent into a 429 pause would be one more call ignoring it (Binance bans an IP
        for those), and during one the broker is known to be up, since it just answered.
        A ban is reported as a failed ping; our own windows being full, as a passed one."""
        await self._enter(1)
        try:
            grant = await self._grant(1, self.weights.get("ping", 1), 0)
            if grant.granted:
                await self._answer(self.inner.ping())  # type: ignore[attr-defined]
        finally:
            self._leave(1)
        if not grant.granted and grant.blocked_by == BAN:
            raise Throttled(f"the broker banned account {self.account} (HTTP 418); the ban "
                            f"ends in {grant.wait_ms} ms; not pinged",
                            retry_after=grant.wait_ms / 1000)

    async def submit_many(
        self, orders: Sequence[tuple[str, OrderSpec]]
    ) -> list[BrokerOrder | BrokerError]:
        """A batch with one script call when it all fits; else what fits goes at once and
        the rest as capacity returns, each order waiting only as its deadline allows."""
        out: list[BrokerOrder | BrokerError | None] = [None] * len(orders)
        started = self.clock()
        slept_from: int | None = None  # when the batch first slept for capacity
        latest = [self._latest(started, spec.deadline) for _, spec in orders]
        todo = list(range(len(orders)))
        weight = self.weights.get("submit", 1)
        while todo:
            slots = await self._enter(len(todo))
            try:
                try:
                    grant = await self._grant(slots, weight, 1)
                except RetryableError as exc:
                    for i in todo:
                        out[i] = exc
                    break
                granted_at = self.clock()
                if grant.granted:
                    self._leave(slots - grant.granted)
                    slots = grant.granted
                    chunk, todo = todo[:grant.granted], todo[grant.granted:]
                    for i, outcome in zip(chunk, await self._send([orders[i] for i in chunk]),
                                          strict=True):
                        out[i] = outcome
            finally:
                self._leave(slots)
            if grant.granted and todo and not grant.wait_ms:
                continue  # only the gate held the rest back
            ready_at = granted_at + grant.wait_ms
            waiting = []
            for i in todo:
                if grant.wait_ms < 0 or ready_at > latest[i]:
                    out[i] = self._throttled(grant, started, latest[i],
                                             _waited(slept_from, granted_at))
                else:
                    waiting.append(i)
            todo = waiting
            if todo:
                if slept_from is None:
                    slept_from = granted_at
                await asyncio.sleep(max(ready_at - self.clock(), 0) / 1000 + _jitter())
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    # -- capacity ----------------------------------------------------------------------------

    def _latest(self, now: int, deadline: int | None) -> int:
        """The latest moment a call may start. ``max_wait_ms`` bounds every wait, because a
        batch held longer than the visibility timeout is taken over by another worker."""
        bound = now + self.max_wait_ms
        return bound if deadline is None else min(bound, deadline)

    def _throttled(self, grant: Grant, started: int, latest: int, waited: int) -> Throttled:
        # ``latest`` is the deadline unless max_wait_ms came first.
        allowed = latest - started
        deadline = latest if allowed < self.max_wait_ms else None
        return Throttled(throttle_reason(self.account, grant, self.limiter.plan.describe,
                                         allowed, deadline, waited),
                         retry_after=max(grant.wait_ms, 0) / 1000)

    async def _call(self, method: str, orders: int, deadline: int | None,
                    call: Callable[[], Awaitable[T]]) -> T:
        """One call once there is room for it (or ``Throttled``), holding a gate slot from
        the limiter's grant until its answer and any pause it brings are shared."""
        weight = self.weights.get(method, 1)
        started = self.clock()
        slept_from: int | None = None  # when the call first slept for capacity
        latest = self._latest(started, deadline)
        while True:
            await self._enter(1)
            try:
                grant = await self._grant(1, weight, orders)
                if grant.granted:
                    return await self._answer(call())
            finally:
                self._leave(1)
            now = self.clock()
            if grant.wait_ms < 0 or now + grant.wait_ms > latest:
                raise self._throttled(grant, started, latest, _waited(slept_from, now))
            if slept_from is None:
                slept_from = now
            await asyncio.sleep(grant.wait_ms / 1000 + _jitter())

    async def _enter(self, wanted: int) -> int:
        return wanted if self.gate is None else await self.gate.take(wanted)

    def _leave(self, slots: int) -> None:
        if self.gate is not None:
            self.gate.give(slots)

    async def _grant(self, units: int, weight: int, orders: int) -> Grant:
        try:
            grant = await self.limiter.acquire(units, weight, orders)
        except RedisError as exc:
            raise RetryableError(f"shared rate limiter of account {self.account} "
                                 f"unavailable: {exc}") from None
        self._observe(grant.used)
        if grant.blocked_by == BAN:
            until = grant.now_ms + grant.wait_ms
            if until > self._ban_logged:
                self._ban_logged = until
                log.error("account %s is banned by its broker for %d ms more (until %d): "
                          "nothing is sent to it until then", self.account, grant.wait_ms, until)
        return grant

    def _observe(self, used: Mapping[str, int]) -> None:
        for name, value in used.items():
            gauge = self._used.get(name)
            if gauge is not None:
                gauge.set(value)

    # -- after a call ------------------------------------------------------------------------

    async def _answer(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RateLimited as exc:
            await self._hold([exc])
            raise
        finally:
            await self._report_usage()

    async def _send(self, chunk: Sequence[tuple[str, OrderSpec]]
                    ) -> list[BrokerOrder | BrokerError]:
        many = getattr(self.inner, "submit_many", None)
        try:
            if many is not None:
                outcomes: list[BrokerOrder | BrokerError] = list(await many(chunk))
            else:
                sent = await asyncio.gather(*(self.inner.submit(cid, spec) for cid, spec in chunk),
                                            return_exceptions=True)
                outcomes = [_outcome(x) for x in sent]
        finally:
            await self._report_usage()
        limited = [x for x in outcomes if isinstance(x, RateLimited)]
        if limited:
            await self._hold(limited)
        return outcomes

    async def _hold(self, errors: Sequence[RateLimited]) -> None:
        """Stop every worker sending to this account for as long as the broker asked (a
        ban outranks a pause; the longest advice wins). Once shared, the wait is the
        limiter's: the errors lose their ``retry_after``, so the caller's retry comes back
        here at once and waits only as its deadline allows, or is ``Throttled``."""
        exc = max(errors, key=lambda x: (isinstance(x, Banned), x.retry_after or 0))
        banned = isinstance(exc, Banned)
        if exc.retry_after:
            duration = math.ceil(exc.retry_after * 1000)
        else:
            duration = DEFAULT_BAN_MS if banned else DEFAULT_PAUSE_MS
        try:
            until, _ = await self.limiter.hold(BAN if banned else PAUSE, duration)
        except RedisError as exc2:
            log.warning("account %s: could not share the broker's %s of %d ms (%s)",
                        self.account, "ban" if banned else "pause", duration, exc2)
            return
        for error in errors:
            error.retry_after = None
        if banned:
            self._ban_logged = max(self._ban_logged, until)
            log.error("account %s: banned by its broker (HTTP 418) for %d ms, until %d: "
                      "every worker stops sending to it until then (%s)",
                      self.account, duration, until, exc)
        else:
            log.warning("account %s: rate limited by its broker (HTTP 429); every worker "
                        "pauses for %d ms (%s)", self.account, duration, exc)

    async def _report_usage(self) -> None:
        if self._usage is None:
            return
        usage = dict(self._usage())
        if not usage or usage == self._last_usage:
            return
        self._last_usage = usage
        try:
            self._observe(await self.limiter.report(usage))
        except RedisError as exc:
            log.warning("account %s: could not share the broker's usage counters (%s)",
                        self.account, exc)


class LimitedFeedBroker(LimitedBroker):
    """A limited broker whose adapter pushes order changes (tracker.PushFeed): a class of its
    own, since protocol checks look at the class, not at ``__getattr__``."""

    def updates(self) -> AsyncIterator[BrokerOrder]:
        updates: Callable[[], AsyncIterator[BrokerOrder]] = self.inner.updates  # type: ignore[attr-defined]
        return updates()


def limited(inner: Broker, limiter: Limiter, *, metrics: Metrics | None = None,
            clock: Callable[[], int] = wall_clock_ms) -> LimitedBroker:
    cls = LimitedFeedBroker if callable(getattr(inner, "updates", None)) else LimitedBroker
    return cls(inner, limiter, metrics=metrics, clock=clock)


def _waited(slept_from: int | None, now: int) -> int:
    """How long a call has slept for capacity: 0 before its first sleep, so the few ms a
    first grant takes never reads as a wait."""
    return 0 if slept_from is None else max(now - slept_from, 0)


def _jitter() -> float:
    return random.uniform(0, _JITTER_MS) / 1000


def _outcome(x: BrokerOrder | BaseException) -> BrokerOrder | BrokerError:
    if isinstance(x, BrokerOrder | BrokerError):
        return x
    if not isinstance(x, Exception):
        raise x  # cancellation, interpreter exit
    return UnknownOutcome(f"unexpected error while submitting: {type(x).__name__}: {x}")
