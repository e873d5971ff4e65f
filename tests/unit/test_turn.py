"""The lanes' turn to read (executor/pipeline/turn.py): one holder at a time, first come
first served, passed on early at most once, and never by anyone but its holder's batch."""

from __future__ import annotations

import asyncio

from executor.pipeline.steps import risk as risk_step
from executor.pipeline.turn import Turns, pass_turn


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_lane_holds_the_turn_the_next_in_line_takes_it_when_it_ends() -> None:
    turns = Turns()
    log: list[str] = []
    release = {name: asyncio.Event() for name in "abc"}

    async def lane(name: str) -> None:
        async with turns.take():
            log.append(f"{name} in")
            await release[name].wait()
            log.append(f"{name} out")

    tasks = [asyncio.create_task(lane(name)) for name in "abc"]
    await settle()
    assert log == ["a in"]
    release["c"].set()  # c waits its turn: b asked first
    await settle()
    assert log == ["a in"]
    release["a"].set()
    await settle()
    assert log == ["a in", "a out", "b in"]
    release["b"].set()
    await asyncio.gather(*tasks)
    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]


async def test_a_batch_that_passes_the_turn_lets_the_next_lane_read_while_it_goes_on() -> None:
    turns = Turns()
    log: list[str] = []
    done = asyncio.Event()

    async def waiting_batch() -> None:
        async with turns.take() as turn:
            log.append("a reads")
            pass_turn()
            pass_turn()  # passed once, however often asked
            assert turn.passed
            await done.wait()  # as a broker's answer would be waited on
            log.append("a done")

    async def lane(name: str) -> None:
        async with turns.take():
            log.append(f"{name} reads")
            await asyncio.sleep(0)

    a = asyncio.create_task(waiting_batch())
    await settle()
    b = asyncio.create_task(lane("b"))
    c = asyncio.create_task(lane("c"))
    await asyncio.gather(b, c)
    assert log == ["a reads", "b reads", "c reads"]
    # a's end releases nothing more: a lane holding the turn now is not cut short.
    async with turns.take():
        held = asyncio.create_task(lane("d"))
        done.set()
        await a
        await settle()
        assert log[-1] == "a done" and "d reads" not in log
    await held
    assert log[-1] == "d reads"


async def test_pass_turn_outside_a_lane_or_from_a_task_of_an_ended_batch_passes_nothing() -> None:
    turns = Turns()
    pass_turn()  # a background pass holds no turn
    later: list[asyncio.Task[None]] = []
    go = asyncio.Event()

    async def follow_up() -> None:  # started by a batch, runs on after it
        await go.wait()
        pass_turn()

    async with turns.take():
        later.append(asyncio.create_task(follow_up()))
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with turns.take():
            entered.set()
            await leave.wait()

    h = asyncio.create_task(holder())
    await entered.wait()
    go.set()
    await later[0]
    waiter = asyncio.create_task(holder())
    await settle()
    assert not waiter.done() and turns._lock.locked()  # the holder still holds it
    leave.set()
    await asyncio.gather(h, waiter)


async def test_a_task_of_a_batch_passes_nothing_once_that_batch_ended_though_its_lane_reads_on(
) -> None:
    """A lane keeps the turn from batch to batch (worker._lane); a task its first batch
    started (a follow-up) must not cut a later batch's hold short."""
    turns = Turns()
    go = asyncio.Event()

    async def follow_up() -> None:
        await go.wait()
        pass_turn()

    async with turns.take() as turn:
        with turn.batch():
            later = asyncio.create_task(follow_up())
        with turn.batch():  # the lane's next batch
            go.set()
            await later
            assert not turn.passed and turns._lock.locked()
            pass_turn()  # its own pass still passes
            assert turn.passed


async def test_a_pause_before_trying_again_passes_the_turn() -> None:
    turns = Turns()
    took = asyncio.Event()

    async def other() -> None:
        async with turns.take():
            took.set()

    async with turns.take() as turn:
        task = asyncio.create_task(other())
        await settle()
        assert not took.is_set()
        await risk_step.pause(0)
        assert turn.passed
        await asyncio.wait_for(took.wait(), 1)
    await task
