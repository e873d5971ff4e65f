"""The batch's first read (pipeline/steps/prefetch.py): the records, breaker states and risk
snapshots of a batch's new orders in one script call, the reference prices beside it, and
each step after it deciding from that read instead of reading again, with the same
outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.config import Settings
from executor.infra.batch_read import BatchRead, BatchReader
from executor.safety.risk.book import Reservation
from executor.safety.risk.state import Read, RiskState, Write
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ReasonCode, ResultStatus, Side, WireDecimal
from producer.keys import Keys

from .conftest import running

K = Keys()
RESERVED = Reservation(request_id="1-0", symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal("0.01"), price=WireDecimal("50000"), at=1)


class Reads:
    """Counts the reads the steps after the prefetch make of their own."""

    def __init__(self, worker: Worker) -> None:
        self.records = self.allow = self.snapshots = 0
        store, breaker, state = worker.svc.store, worker.gate.breaker, worker.risk.state
        load, allow, queue = store.load_orders, breaker.allow, state.queue_snapshot

        async def counted_load(cids: Any) -> Any:
            # The lanes' only: the tracker reads records too.
            task = asyncio.current_task()
            self.records += task is not None and task.get_name().startswith("lane-")
            return await load(cids)

        async def counted_allow(account: str) -> Any:
            self.allow += 1
            return await allow(account)

        def counted_queue(*args: Any) -> Any:
            self.snapshots += 1
            return queue(*args)

        store.load_orders = counted_load  # type: ignore[method-assign]
        breaker.allow = counted_allow  # type: ignore[method-assign]
        state.queue_snapshot = counted_queue  # type: ignore[method-assign]

    def counts(self) -> tuple[int, int, int]:
        return self.records, self.allow, self.snapshots


async def warmed_up(client: OrderClient) -> None:
    """A first order: Redis loads the scripts a fresh server misses."""
    result = await client.wait_result(
        (await client.place("BTCUSDT", "sell", "market", "0.01")).request_id, 10)
    assert result.status is ResultStatus.FILLED


async def test_a_new_order_is_decided_on_the_batch_s_first_read(
    make_settings: Callable[..., Settings], client: OrderClient,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        await warmed_up(client)
        reads = Reads(worker)
        sub = await client.place("BTCUSDT", "buy", "market", "0.01", client_order_id="one")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.FILLED
        # One snapshot (the prefetch's), no records read again, no breaker script call.
        assert reads.counts() == (0, 0, 1)
        again = await client.place("BTCUSDT", "buy", "market", "0.01", client_order_id="one")
        duplicate = await client.wait_result(again.request_id, 10)
        assert (duplicate.status, duplicate.reason_code) == (ResultStatus.FAILED,
                                                             ReasonCode.DUPLICATE)
        assert duplicate.order_state == "filled"
        assert reads.records == 0  # the duplicate was found in the first read


async def test_a_breaker_not_closed_still_asks_its_script_for_the_trial(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    # Open long ago, past its cool-down: the next order is the half-open trial.
    await redis_client.hset(K.breaker("default"), mapping={"state": "open", "opened_at": 1})
    async with running(make_settings(batch_size=1)) as worker:
        reads = Reads(worker)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        assert reads.allow == 1
    assert await redis_client.hget(K.breaker("default"), "state") == b"closed"


async def test_a_breaker_open_as_first_read_refuses_without_a_write(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    now_ms = int((await redis_client.time())[0]) * 1000
    await redis_client.hset(K.breaker("default"), mapping={"state": "open",
                                                           "opened_at": now_ms})
    async with running(make_settings(batch_size=1)):
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
    assert result.reason_code == ReasonCode.CIRCUIT_OPEN
    assert result.client_order_id is not None
    assert not await redis_client.exists(K.order(result.client_order_id))  # nothing written


async def test_a_redis_without_the_read_script_loads_it_and_reads_once(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        await warmed_up(client)
        reads = Reads(worker)
        await redis_client.script_flush()  # as after a restart or a failover
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        # The first read's NOSCRIPT loads it and reads again: no step reads for itself.
        assert reads.counts() == (0, 0, 1)


async def test_a_bug_in_the_first_read_leaves_each_step_to_read_for_itself(
    make_settings: Callable[..., Settings], client: OrderClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        await warmed_up(client)
        reads = Reads(worker)

        async def broken(jobs: Any) -> None:
            raise ValueError("a bug")
        monkeypatch.setattr(worker, "prefetch", broken)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        assert reads.counts() == (1, 1, 1)
        assert worker.metrics.internal_errors.labels("prefetch")._value.get() == 1


async def test_a_snapshot_read_before_this_process_wrote_the_account_is_read_again(
        redis_client: aioredis.Redis) -> None:
    """Two lanes of one worker: the second's first read was made before the first lane's
    batch wrote; it would lose the compare-and-set for certain, so it is read anew. A write
    by another process cannot be known here: that one is left to the compare-and-set."""
    day = "20261203"
    state = RiskState(redis_client, K)
    other = RiskState(redis_client, K)  # another worker process

    async def first_read() -> Read:
        batch = BatchRead()
        read = state.queue_snapshot(batch, "default", day, ["a"])
        read.replies = await BatchReader(redis_client).execute(batch)
        return read

    read = await first_read()
    assert (await state.snapshot("default", day, ["a"], read=read)).version == "0"
    snap = await other.snapshot("default", day)
    assert await other.commit("default", day, snap, Write(put=[("x", RESERVED, True)]))
    assert (await state.snapshot("default", day, ["a"], read=read)).version == "0"  # stale
    read = await first_read()
    snap = await state.snapshot("default", day)
    assert await state.commit("default", day, snap, Write(put=[("y", RESERVED, True)]))
    assert (await state.snapshot("default", day, ["a"], read=read)).version == "2"  # anew
