"""A broker wrapped in its account's circuit breaker: every call's outcome is counted in
the shared breaker (executor/safety/breaker.py); everything else passes through untouched.

The breaker is told after the call, so it never delays one; a Redis error while counting
is logged and does not change the call's own outcome (the breaker is a guard, and the
order's fate must not depend on whether its bookkeeping got written).

Nor does it delay the answer, while all goes well: answered calls of a closed breaker are
counted in the background, the outcomes of up to ``SUCCESS_LINGER_S`` in one script call,
so the order's result is written while they are counted instead of a round trip later, and
a steady flow of orders costs the breaker one call per linger, not one per batch (at 200
orders/s a batch is one order, and its count was four of the order's Redis commands).
Successes change nothing at once: a closed breaker stays closed. A failure, or any call
while the breaker is not closed, is counted before its answer returns (with every outcome
before it, in order), so a failing broker trips the breaker by the time the worker could
send it the next order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from producer.contract import OrderSpec

from ..infra.metrics import Metrics
from ..safety.breaker import Breaker, CircuitState, outcome_code
from .base import Broker, BrokerError, BrokerOrder, get_all
from .wrapper import BrokerWrapper

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")  # an answer of a call per order: a report or its error

SUCCESS_LINGER_S = 0.05


class CircuitBroker(BrokerWrapper):
    def __init__(self, inner: Broker, breaker: Breaker, *,
                 metrics: Metrics | None = None) -> None:
        super().__init__(inner)
        self.breaker = breaker
        self.metrics = metrics
        self._uncounted = ""  # outcomes of answered calls, not counted yet
        self._lock = asyncio.Lock()
        self._counting: asyncio.Task[None] | None = None
        self._flush = asyncio.Event()  # set at close: the lingering count goes at once
        # Only a broker that batches may look like one (base.submit_all asks getattr).
        self.submit_many: Callable[[Sequence[tuple[str, OrderSpec]]],
                                   Awaitable[list[BrokerOrder | BrokerError]]] | None = (
            self._submit_many if getattr(inner, "submit_many", None) is not None else None)

    def passes(self, order: OrderSpec) -> bool:
        return True  # it only counts outcomes, after the call (the gate step holds orders)

    async def _record(self, outcomes: str) -> None:
        if not outcomes:
            return
        self._uncounted += outcomes
        # Only while this process last found the breaker closed: a half-open trial's
        # success closes it, and must do so before its answer returns.
        if (outcomes.count("S") == len(outcomes)
                and self.breaker.seen(self.account) in (None, CircuitState.CLOSED)):
            if self._counting is None or self._counting.done():
                self._counting = asyncio.create_task(self._count_soon(),
                                                     name=f"breaker-{self.account}")
            return
        await self._count()

    async def _count_soon(self) -> None:
        """Count after the linger what piled up (a failure meanwhile counts it first)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush.wait(), SUCCESS_LINGER_S)
        await self._count()

    async def _count(self) -> None:
        """Count every outcome not counted yet, in the order of the calls (one counter at a
        time: what piles up while one counts is the next one's)."""
        async with self._lock:
            while self._uncounted:
                outcomes, self._uncounted = self._uncounted, ""
                try:
                    verdict = await self.breaker.record(self.account, outcomes)
                except RedisError as exc:
                    log.warning("account %s: could not count broker outcomes in the "
                                "breaker: %s", self.account, exc)
                    continue
                except Exception:
                    log.exception("account %s: broker outcomes not counted", self.account)
                    continue
                if verdict.changed:
                    level = (logging.ERROR if verdict.state is CircuitState.OPEN
                             else logging.WARNING)
                    log.log(level, "account %s: circuit breaker %s", self.account,
                            verdict.state)
                    if self.metrics is not None:
                        self.metrics.circuit_state.labels(self.account).set(verdict.state.code)

    async def taken(self, answers: Sequence[BrokerOrder]) -> None:
        await self._record("S" * len(answers))

    async def start(self) -> None:
        self._flush.clear()
        await super().start()

    async def close(self) -> None:
        self._flush.set()
        if self._counting is not None:
            await asyncio.gather(self._counting, return_exceptions=True)
        await super().close()

    async def _counted(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except BaseException as exc:
            await self._record(outcome_code(exc))
            raise
        await self._record("S")
        return result

    # -- the calls that reach the broker ---------------------------------------------------

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        return await self._counted(self.inner.submit(client_order_id, order))

    async def _each_counted(self, call: Awaitable[list[A]]) -> list[A]:
        """``_counted`` for a call with an answer per order: each answer counted."""
        try:
            answers = await call
        except BaseException as exc:
            await self._record(outcome_code(exc))
            raise
        await self._record("".join(
            outcome_code(a if isinstance(a, BaseException) else None) for a in answers))
        return answers

    async def _submit_many(self, orders: Sequence[tuple[str, OrderSpec]]
                           ) -> list[BrokerOrder | BrokerError]:
        many = self.inner.submit_many  # type: ignore[attr-defined]
        return await self._each_counted(many(orders))

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self._counted(self.inner.cancel(client_order_id, symbol))

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self._counted(self.inner.get_order(client_order_id, symbol))

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                       ) -> list[BrokerOrder | BaseException]:
        return await self._each_counted(get_all(self.inner, orders))

