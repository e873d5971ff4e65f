"""What every guard around a broker adapter shares (circuit.py, limited.py): it is a Broker
that passes every call to the adapter it wraps, unless it overrides the call, and any other
attribute (an adapter's own API: ``open_orders``, ``ping``, ``weights``...) too."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from producer.contract import OrderSpec

from .base import Broker, BrokerOrder, get_all, get_each


class BrokerWrapper:
    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.account = inner.account

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def passes(self, order: OrderSpec) -> bool:
        """Whether this guard hands a new order's submit to the adapter at once and as it
        is: no wait, no other path. Only then may the adapter take it ahead of the submit
        step (sending.door_for). A guard says so itself; by default it does not."""
        return False

    async def taken(self, answers: Sequence[BrokerOrder]) -> None:
        """Told of orders the adapter took at its door (sending.py ``Door``) whose outcomes
        were written with their records: no submit call of theirs passes this guard. A
        guard that keeps account of the calls (the breaker) counts them here."""

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def check(self, order: OrderSpec) -> OrderSpec | None:
        return self.inner.check(order)

    def quote_asset(self, symbol: str) -> str | None:
        return self.inner.quote_asset(symbol)

    def base_asset(self, symbol: str) -> str | None:
        return self.inner.base_asset(symbol)

    async def reference_price(self, symbol: str) -> Decimal | None:
        return await self.inner.reference_price(symbol)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        return await self.inner.submit(client_order_id, order)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self.inner.cancel(client_order_id, symbol)

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        return await self.inner.get_order(client_order_id, symbol)

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                       ) -> list[BrokerOrder | BaseException]:
        """Each order looked up (base.py ``get_all``). A guard that does not guard lookups
        (its ``get_order`` is this class's) hands them all to the adapter's batch; one
        that does, and has no ``get_many`` of its own, looks each up through its own
        ``get_order``: a lookup never skips a guard that counts or limits it."""
        if type(self).get_order is BrokerWrapper.get_order:
            return await get_all(self.inner, orders)
        return await get_each(self, orders)


def unwrap(broker: Broker) -> Broker:
    """The adapter behind its guards (tests and tools that need its own API)."""
    while isinstance(broker, BrokerWrapper):
        broker = broker.inner
    return broker
