"""The gate bounding one worker's calls at a broker at once (executor/safety/limits/gate.py)."""

from __future__ import annotations

import asyncio

import pytest

from executor.safety.limits import Gate


async def test_never_more_than_cap_at_once_and_every_call_gets_through() -> None:
    gate = Gate(3)
    busy, most, done = 0, 0, 0

    async def call(wanted: int) -> None:
        nonlocal busy, most, done
        n = await gate.take(wanted)
        busy += n
        most = max(most, busy)
        await asyncio.sleep(0.001)
        busy -= n
        gate.give(n)
        done += 1

    await asyncio.gather(*(call(1 + i % 5) for i in range(40)))
    assert most == 3 and done == 40 and gate.used == 0


async def test_a_batch_gets_at_most_cap_and_waits_its_turn_before_later_single_calls() -> None:
    gate = Gate(4)
    assert await gate.take(10) == 4  # a batch larger than the gate: sent in parts
    order: list[str] = []

    async def taker(name: str, wanted: int) -> None:
        n = await gate.take(wanted)
        order.append(name)
        gate.give(n)

    batch = asyncio.create_task(taker("batch", 3))
    await asyncio.sleep(0)
    single = asyncio.create_task(taker("single", 1))
    await asyncio.sleep(0)
    gate.give(1)  # room for the single call, not the batch: first come still goes first
    await asyncio.sleep(0)
    assert order == []
    gate.give(3)
    await asyncio.gather(batch, single)
    assert order == ["batch", "single"] and gate.used == 0


async def test_a_cancelled_waiter_takes_nothing_and_unblocks_those_behind_it() -> None:
    gate = Gate(2)
    assert await gate.take(1) == 1
    big = asyncio.create_task(gate.take(2))  # waits: one slot is taken
    await asyncio.sleep(0)
    small = asyncio.create_task(gate.take(1))  # behind the batch though a slot is free
    await asyncio.sleep(0)
    assert not small.done()
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    assert await small == 1 and gate.used == 2


async def test_slots_granted_to_a_waiter_cancelled_before_it_ran_are_given_back() -> None:
    gate = Gate(1)
    assert await gate.take(1) == 1
    waiter = asyncio.create_task(gate.take(1))
    await asyncio.sleep(0)
    gate.give(1)  # granted to the waiter ...
    waiter.cancel()  # ... which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.used == 0


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Gate(0)
