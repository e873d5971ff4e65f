"""The lanes' turn to read (executor/pipeline/turn.py), on a real redis-server and a real
worker with three lanes: while a batch of the paper exchange (which waits on nothing but
Redis) is being decided, no other lane reads, and what came meanwhile makes the next batch
together; a batch of a broker that waits (a simulated latency here) passes the turn, and
the other lanes read and answer the requests behind it meanwhile."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.config import Settings
from executor.pipeline.job import Job
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import GROUP, Keys

from .conftest import running, serving, until

K = Keys()
WAIT_S = 20


class FirstBatchHeld:
    """Wraps the worker's speculative write: the first batch that reaches it waits there
    until ``release`` is set; every batch's size is noted."""

    def __init__(self, worker: Worker) -> None:
        self.inner = worker.risk.speculate
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.sizes: list[int] = []

    async def __call__(self, jobs: Sequence[Job]) -> list[Job]:
        self.sizes.append(len(jobs))
        if len(self.sizes) == 1:
            self.entered.set()
            await self.release.wait()
        return await self.inner(jobs)


class Readers:
    """Wraps the worker's read of the requests stream: the lane (its task) of each read
    that returned requests, in order."""

    def __init__(self, worker: Worker) -> None:
        self.inner = worker._read
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def __call__(self, delay: float) -> tuple[Any, bool | None]:
        got = await self.inner(delay)
        if got[0]:
            self.tasks.append(asyncio.current_task())
        return got


async def delivered(r: aioredis.Redis) -> int:
    """Requests read by a worker and not acked yet."""
    return int((await r.xpending(K.pending, GROUP))["pending"])


async def place_market(client: OrderClient, n: int) -> list[str]:
    return [(await client.place("BTCUSDT", "buy", "market", "0.001")).request_id
            for _ in range(n)]


def three_lanes(make_settings: Callable[..., Settings], **extra: Any) -> Settings:
    return make_settings(concurrency=3, batch_size=50, **extra)


async def one_held_four_behind(worker: Worker, client: OrderClient,
                               monkeypatch: pytest.MonkeyPatch,
                               ) -> tuple[FirstBatchHeld, list[str], list[str]]:
    """One market order, held in its batch's speculative write; then four more."""
    held = FirstBatchHeld(worker)
    monkeypatch.setattr(worker.risk, "speculate", held)
    first = await place_market(client, 1)
    await asyncio.wait_for(held.entered.wait(), WAIT_S)
    return held, first, await place_market(client, 4)


async def test_no_other_lane_reads_while_a_paper_batch_is_decided(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(three_lanes(make_settings)) as worker:
        assert worker._waits == {"default": False}
        held, first, behind = await one_held_four_behind(worker, client, monkeypatch)
        # Two lanes are free and blocked on the stream: they would have read these at
        # once. They wait for the turn instead.
        await asyncio.sleep(0.5)
        assert held.sizes == [1] and await delivered(redis_client) == 1
        held.release.set()
        results = await client.wait_results(first + behind, WAIT_S)
    assert {r.status for r in results.values()} == {ResultStatus.FILLED}
    assert held.sizes == [1, 4]  # what came meanwhile made one batch


async def test_a_batch_that_waits_on_its_broker_lets_the_other_lanes_read(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A paper account with a latency waits as a remote broker does.
    async with running(three_lanes(make_settings, accounts_default_latency_ms=20)) as worker:
        assert worker._waits == {"default": True}
        held, first, behind = await one_held_four_behind(worker, client, monkeypatch)
        # Answered while the first batch still waits.
        results = await client.wait_results(behind, WAIT_S)
        assert {r.status for r in results.values()} == {ResultStatus.FILLED}
        assert not held.release.is_set()
        await until(lambda: _delivered_is(redis_client, 1))
        held.release.set()
        assert (await client.wait_result(first[0], WAIT_S)).status is ResultStatus.FILLED


async def _delivered_is(r: aioredis.Redis, n: int) -> bool:
    return await delivered(r) == n


async def test_a_lane_whose_batches_keep_the_turn_reads_every_batch_itself(
    make_settings: Callable[..., Settings], client: OrderClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Paper batches never pass the turn: handing it to another lane after each would only
    # switch tasks. The lane holding it reads batch after batch; the others wait.
    worker = Worker(three_lanes(make_settings))
    readers = Readers(worker)
    monkeypatch.setattr(worker, "_read", readers)  # before any lane's first read
    async with serving(worker):
        for _ in range(5):  # one at a time: five batches
            sub = await place_market(client, 1)
            assert (await client.wait_result(sub[0], WAIT_S)).status is ResultStatus.FILLED
    assert len(readers.tasks) == 5 and len(set(readers.tasks)) == 1


async def test_after_its_batch_passed_the_turn_a_lane_waits_for_it_again(
    make_settings: Callable[..., Settings], client: OrderClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batches that wait on their broker pass the turn as soon as they are decoded: each
    # next batch is read by a lane other than the one before.
    worker = Worker(three_lanes(make_settings, accounts_default_latency_ms=20))
    readers = Readers(worker)
    monkeypatch.setattr(worker, "_read", readers)
    async with serving(worker):
        for _ in range(4):
            sub = await place_market(client, 1)
            assert (await client.wait_result(sub[0], WAIT_S)).status is ResultStatus.FILLED
    assert len(readers.tasks) == 4
    assert all(a is not b for a, b in itertools.pairwise(readers.tasks))


async def test_a_stopping_worker_with_lanes_waiting_for_the_turn_stops_after_one_read(
    make_settings: Callable[..., Settings], client: OrderClient,
) -> None:
    # An idle lane holding the turn sits in its read for block_ms; the others wait for the
    # turn, and find the worker stopping when they get it rather than read in turn.
    worker = Worker(three_lanes(make_settings, block_ms=1_000))
    await worker.start()
    serve = asyncio.create_task(worker.serve())
    try:
        sub = await place_market(client, 1)
        assert (await client.wait_result(sub[0], WAIT_S)).status is ResultStatus.FILLED
        await asyncio.sleep(0.1)  # a lane is in its read again
        loop = asyncio.get_running_loop()
        started = loop.time()
        worker.stop()
        await asyncio.wait_for(serve, 10)
        # One read's block, not one for each of three lanes in turn (3 s).
        assert loop.time() - started < 2.0
    finally:
        worker.stop()
        await worker.close()


async def test_where_writes_wait_for_replicas_every_batch_passes_the_turn(
    make_settings: Callable[..., Settings],
) -> None:
    # durability = "wait": each write waits for replicas or the disk, as a broker would be
    # waited on, so the lanes overlap as they did before they took turns.
    worker = Worker(make_settings(redis_durability="wait"))
    try:
        assert worker.durability is not None
        assert worker._waits == {"default": True}
        assert worker._may_wait(None) and worker._may_wait("default")
    finally:
        await worker.close()
