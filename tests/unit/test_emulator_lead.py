"""The emulator tells each adapter when this worker starts and stops holding the account's
emulator lease (the optional ``lead_prices`` hook, background/emulator.py): not leading
from the start, leading once a pass takes the lease, not once another worker holds it,
the lease lapses unrenewed or a clean stop releases it; an adapter without the hook is
left alone."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import redis.asyncio

from executor.background.emulator import Emulator
from executor.brokers.wrapper import BrokerWrapper
from executor.model.exits import AutoExit
from producer.contract import OrderSpec
from producer.keys import Keys


class Adapter:
    """An adapter as the emulator sees it: its account, its checks, and the hook."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.told: list[bool] = []

    def check(self, order: OrderSpec) -> None:
        return None

    def lead_prices(self, leads: bool) -> None:
        self.told.append(leads)


class Hookless:
    def __init__(self, account: str) -> None:
        self.account = account

    def check(self, order: OrderSpec) -> None:
        return None


def emulator(r: redis.asyncio.Redis, adapter: Adapter, lease_ms: int = 3_000) -> Emulator:
    # An automatic exit: the account always has something to watch, so every pass asks
    # for the lease. The adapter behind a guard: the hook is found behind it.
    return Emulator(r, Keys(), {"a": BrokerWrapper(adapter),  # type: ignore[arg-type]
                                "b": Hookless("b")}, "w1", lease_ms=lease_ms,
                    auto={"a": AutoExit(stop_loss_percent=Decimal(1))})


async def test_the_adapter_is_told_when_the_lease_is_taken_lost_and_released(
        redis_client: redis.asyncio.Redis) -> None:
    adapter = Adapter("a")
    em = emulator(redis_client, adapter)
    assert adapter.told == [False]  # in charge from the start: leading nothing yet
    await em.once("a")
    await em.once("b")  # no hook: nothing to tell, nothing fails
    assert adapter.told == [False, True]
    await em.once("a")  # renewed: nothing new to tell
    assert adapter.told == [False, True]

    lease = Keys().emulator_lease("a")
    await redis_client.set(lease, "w2:emulator")  # another worker holds it now
    await em.once("a")
    assert adapter.told == [False, True, False]
    await redis_client.delete(lease)
    await em.once("a")
    assert adapter.told == [False, True, False, True]

    await em.release_leases()  # a clean stop
    assert adapter.told == [False, True, False, True, False]
    assert await redis_client.get(lease) is None


async def test_a_lease_left_unrenewed_stops_the_lead_once_it_lapses(
        redis_client: redis.asyncio.Redis) -> None:
    adapter = Adapter("a")
    em = emulator(redis_client, adapter, lease_ms=300)
    await em.once("a")
    assert adapter.told == [False, True]
    em.auto = {}  # nothing left to watch: the lease is not renewed
    await em.once("a")
    assert adapter.told == [False, True]  # still its own until it lapses
    await asyncio.sleep(0.35)
    await em.once("a")
    assert adapter.told == [False, True, False]
