"""Looking many orders up at once (brokers/base.py ``get_all``): in one call of the adapter's
where it has one and no guard between guards lookups; through each guard's own
``get_order`` where one does; counted by the breaker one outcome per order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from executor.brokers.base import (
    BrokerOrder,
    BrokerStatus,
    OrderNotFound,
    RetryableError,
    get_all,
)
from executor.brokers.circuit import CircuitBroker
from executor.brokers.wrapper import BrokerWrapper
from executor.safety.breaker import CircuitState, Verdict
from producer.contract import OrderSpec, OrderType, Side, WireDecimal

SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                 quantity=WireDecimal("1"), price=WireDecimal("40000"))


def report(cid: str) -> BrokerOrder:
    return BrokerOrder(client_order_id=cid, broker_order_id=f"B-{cid}", symbol="BTCUSDT",
                       status=BrokerStatus.NEW, quantity=WireDecimal("1"))


class Exchange:
    """An adapter that knows the orders ``known`` and can look many up at once; it notes
    every call it is made."""

    account = "default"

    def __init__(self, known: Sequence[str] = ("a", "b", "c")) -> None:
        self.known = set(known)
        self.calls: list[tuple[str, list[str]]] = []

    def _answer(self, cid: str) -> BrokerOrder:
        if cid == "down":
            raise RetryableError("the exchange is down")
        if cid not in self.known:
            raise OrderNotFound(f"order {cid} not found")
        return report(cid)

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.calls.append(("get_order", [client_order_id]))
        return self._answer(client_order_id)

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                       ) -> list[BrokerOrder | BaseException]:
        self.calls.append(("get_many", [cid for cid, _ in orders]))
        answers: list[BrokerOrder | BaseException] = []
        for cid, _ in orders:
            try:
                answers.append(self._answer(cid))
            except (OrderNotFound, RetryableError) as exc:
                answers.append(exc)
        return answers

    async def close(self) -> None:
        pass


class OneAtATime(Exchange):
    """An adapter with no batch lookup (Binance, OANDA, Alpaca today)."""

    get_many = None  # type: ignore[assignment]


class Counting(BrokerWrapper):
    """A guard that guards lookups (as the rate limiter does): each passes through it."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.looked: list[str] = []

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.looked.append(client_order_id)
        return await self.inner.get_order(client_order_id, symbol)


class Proxy:
    """A test's double around an adapter: its own ``get_order``, the rest passed on."""

    def __init__(self, inner: Exchange) -> None:
        self.inner = inner
        self.looked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.looked.append(client_order_id)
        return await self.inner.get_order(client_order_id, symbol)


def orders(*cids: str) -> list[tuple[str, OrderSpec]]:
    return [(cid, SPEC) for cid in cids]


def summary(answers: Sequence[BrokerOrder | BaseException]) -> list[str]:
    return [type(a).__name__ if isinstance(a, BaseException) else a.client_order_id
            for a in answers]


async def test_an_adapter_with_a_batch_lookup_answers_every_order_in_one_call() -> None:
    exchange = Exchange()
    answers = await get_all(exchange, orders("a", "x", "b", "down"))  # type: ignore[arg-type]
    assert summary(answers) == ["a", "OrderNotFound", "b", "RetryableError"]
    assert exchange.calls == [("get_many", ["a", "x", "b", "down"])]


async def test_an_adapter_without_one_is_asked_order_by_order_with_the_same_answers() -> None:
    exchange = OneAtATime()
    answers = await get_all(exchange, orders("a", "x", "b", "down"))  # type: ignore[arg-type]
    assert summary(answers) == ["a", "OrderNotFound", "b", "RetryableError"]
    assert sorted(exchange.calls) == sorted(("get_order", [c]) for c in ("a", "x", "b", "down"))


async def test_a_guard_that_does_not_guard_lookups_hands_them_to_the_batch() -> None:
    exchange = Exchange()
    broker = BrokerWrapper(BrokerWrapper(exchange))  # type: ignore[arg-type]
    assert summary(await get_all(broker, orders("a", "b"))) == ["a", "b"]  # type: ignore[arg-type]
    assert exchange.calls == [("get_many", ["a", "b"])]


async def test_a_guard_that_guards_lookups_sees_each_one() -> None:
    exchange = Exchange()
    guard = Counting(exchange)
    broker = BrokerWrapper(guard)  # type: ignore[arg-type]
    answers = await get_all(broker, orders("a", "x", "c"))  # type: ignore[arg-type]
    assert summary(answers) == ["a", "OrderNotFound", "c"]
    assert sorted(guard.looked) == ["a", "c", "x"]
    assert all(name == "get_order" for name, _ in exchange.calls)


async def test_a_proxy_double_is_not_skipped_through_its_getattr() -> None:
    exchange = Exchange()
    proxy = Proxy(exchange)
    assert summary(await get_all(proxy, orders("a", "b"))) == ["a", "b"]  # type: ignore[arg-type]
    assert sorted(proxy.looked) == ["a", "b"]
    assert all(name == "get_order" for name, _ in exchange.calls)


class Breaker:
    def __init__(self) -> None:
        self.counted: list[str] = []

    def seen(self, account: str) -> CircuitState | None:
        return CircuitState.CLOSED

    async def record(self, account: str, outcomes: str) -> Verdict:
        self.counted.append(outcomes)
        return Verdict(CircuitState.CLOSED, False, 0, False)


async def test_the_breaker_counts_one_outcome_per_order_of_a_batch() -> None:
    exchange, breaker = Exchange(), Breaker()
    broker = CircuitBroker(exchange, breaker)  # type: ignore[arg-type]
    answers = await get_all(broker, orders("a", "down", "b"))  # type: ignore[arg-type]
    assert summary(answers) == ["a", "RetryableError", "b"]
    assert exchange.calls == [("get_many", ["a", "down", "b"])]
    # A failure is counted before the answers return, with the outcomes before it.
    assert "".join(breaker.counted) == "SFS"
    await broker.close()


async def test_a_batch_that_fails_whole_counts_one_failure_and_raises() -> None:
    class Broken(Exchange):
        async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                           ) -> list[BrokerOrder | BaseException]:
            raise RetryableError("the exchange is down")

    breaker = Breaker()
    broker = CircuitBroker(Broken(), breaker)  # type: ignore[arg-type]
    with pytest.raises(RetryableError):
        await get_all(broker, orders("a", "b"))  # type: ignore[arg-type]
    assert breaker.counted == ["F"]
