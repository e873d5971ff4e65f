"""The batch's first read (pipeline/steps/prefetch.py): the records, breaker states and risk
snapshots of a batch's new orders in one script call, the reference prices beside it, and
each step after it deciding from that read instead of reading again, with the same
outcomes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.config import Settings
from executor.infra.batch_read import BatchRead, BatchReader
from executor.safety.risk.book import Reservation
from executor.safety.risk.state import Read, RiskState, Write, version_key
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


async def warmed_up(client: OrderClient, redis: aioredis.Redis) -> None:
    """A first order: Redis loads the scripts a fresh server misses. Then the account's
    state moves as another process's write moves it, so that the next batch takes the
    usual way, from its first read, not a speculative write on this worker's last one
    (tests/integration/test_speculation.py)."""
    result = await client.wait_result(
        (await client.place("BTCUSDT", "sell", "market", "0.01")).request_id, 10)
    assert result.status is ResultStatus.FILLED
    await redis.incr(version_key(K, "default"))


async def test_a_new_order_is_decided_on_the_batch_s_first_read(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        await warmed_up(client, redis_client)
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
        await warmed_up(client, redis_client)
        reads = Reads(worker)
        await redis_client.script_flush()  # as after a restart or a failover
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        # The first read's NOSCRIPT loads it and reads again: no step reads for itself.
        assert reads.counts() == (0, 0, 1)


async def test_a_bug_in_the_first_read_leaves_each_step_to_read_for_itself(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        await warmed_up(client, redis_client)
        reads = Reads(worker)

        async def broken(jobs: Any) -> None:
            raise ValueError("a bug")
        monkeypatch.setattr(worker, "prefetch", broken)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        assert reads.counts() == (1, 1, 1)
        assert worker.metrics.internal_errors.labels("prefetch")._value.get() == 1


class Counted(RiskState):
    """A worker process's risk state that counts the snapshots it reads for itself."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis, K)
        self.own_reads = 0
        execute = self._reader.execute

        async def counted(batch: BatchRead) -> list[Any]:
            self.own_reads += 1
            return await execute(batch)
        self._reader.execute = counted  # type: ignore[method-assign]

    async def first_read(self, day: str, cids: list[str]) -> Read:
        """The batch's first read of the account, as the prefetch makes it."""
        batch = BatchRead()
        read = self.queue_snapshot(batch, "default", day, cids)
        read.replies = await BatchReader(self.redis).execute(batch)
        return read


async def test_a_snapshot_read_before_another_process_wrote_is_left_to_the_compare_and_set(
        redis_client: aioredis.Redis) -> None:
    """A write by another process cannot be known here: the read is taken as it is, and
    its compare-and-set fails."""
    day = "20261203"
    state, other = Counted(redis_client), RiskState(redis_client, K)
    read = await state.first_read(day, ["a"])
    snap = await other.snapshot("default", day)
    assert await other.commit("default", day, snap, Write(put=[("x", RESERVED, True)]))
    stale = await state.snapshot("default", day, ["a"], read=read)
    assert (stale.version, state.own_reads) == ("0", 0)
    assert not await state.commit("default", day, stale, Write(put=[("a", RESERVED, True)]))


async def test_a_snapshot_read_beside_this_process_s_write_is_carried_over_it(
        redis_client: aioredis.Redis) -> None:
    """Two lanes of one worker: the second's first read was made before the first lane's
    batch wrote. The write is known in full, so the read is carried over it instead of
    made again, and its compare-and-set passes; a read made after the write is taken as
    it is; one made before two writes, or before another process's, is made again."""
    day = "20261203"
    state, other = Counted(redis_client), RiskState(redis_client, K)
    read = await state.first_read(day, ["a"])
    snap = await state.snapshot("default", day, ["y"])
    assert await state.commit("default", day, snap, Write(put=[("y", RESERVED, True)]))
    after = await state.first_read(day, ["a"])
    carried = await state.snapshot("default", day, ["a"], read=read)
    assert (carried.version, carried.open_orders, state.own_reads) == ("1", 1, 1)
    assert carried == await other.snapshot("default", day, ["a"])
    assert await state.snapshot("default", day, ["a"], read=after) == carried
    assert state.own_reads == 1
    assert await state.commit("default", day, carried, Write(put=[("a", RESERVED, True)]))
    # Made at version 1, two writes ago: read anew.
    snap = await state.snapshot("default", day, ["z"])
    assert await state.commit("default", day, snap, Write(put=[("z", RESERVED, True)]))
    assert (await state.snapshot("default", day, ["a"], read=read)).version == "3"
    assert state.own_reads == 3
    # Made before this process's write, but another's came between: read anew too.
    read = await state.first_read(day, ["b"])
    snap = await other.snapshot("default", day)
    assert await other.commit("default", day, snap, Write(put=[("x", RESERVED, True)]))
    snap = await state.snapshot("default", day, ["w"])
    assert await state.commit("default", day, snap, Write(put=[("w", RESERVED, True)]))
    assert (await state.snapshot("default", day, ["b"], read=read)).version == "5"
    assert state.own_reads == 5
    # A read of another day is not carried over a write of this one.
    read = await state.first_read("20261204", ["b"])
    snap = await state.snapshot("default", day, ["v"])
    assert await state.commit("default", day, snap, Write(put=[("v", RESERVED, True)]))
    assert (await state.snapshot("default", "20261204", ["b"], read=read)).version == "6"
    assert state.own_reads == 7


def _reservation(rng: random.Random, request_id: str) -> Reservation:
    return Reservation(request_id=request_id, symbol=rng.choice(["BTCUSDT", "ETHUSDT"]),
                       side=rng.choice([Side.BUY, Side.SELL]),
                       quantity=WireDecimal(f"0.{rng.randint(1, 999):03d}"),
                       price=WireDecimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 99)}"),
                       at=rng.randint(1, 10**12))


async def test_a_carried_snapshot_is_the_read_after_the_write(
        redis_client: aioredis.Redis) -> None:
    """Whatever the write (new reservations, a redelivered request's replaced or dropped,
    counts that reach zero, orders of the day), the snapshot carried over it is the one a
    read after it takes, field by field: the checks decide on the state as it is."""
    rng = random.Random(15)
    day = "20261203"
    state, other = Counted(redis_client), RiskState(redis_client, K)
    for case in range(40):
        await redis_client.flushdb()
        held = {f"h{i}": _reservation(rng, f"{case}-{i}") for i in range(rng.randint(0, 6))}
        snap = await other.snapshot("default", day)
        assert await other.commit("default", day, snap, Write(
            put=[(cid, r, rng.random() < 0.5) for cid, r in held.items()]))
        # The next batch's first read, of some held client ids and some new ones.
        wanted = rng.sample([*held, "n0", "n1", "n2"], rng.randint(1, len(held) + 3))
        read = await state.first_read(day, wanted)
        # This process's batch before it: held ones redelivered (replaced or dropped), and
        # new ones, some the next batch asks for too.
        cids = [*rng.sample(list(held), rng.randint(0, len(held))), "n0", "n1", "m0"]
        snap = await state.snapshot("default", day, cids)
        write = Write()
        for cid in cids:
            old = snap.reservations.get(cid)
            if old is not None:
                write.drop.append((cid, old))
            if (old is None or rng.random() < 0.5) and rng.random() < 0.7:
                write.put.append((cid, _reservation(rng, f"{case}-{cid}"), old is None))
        assert await state.commit("default", day, snap, write)
        reads = state.own_reads
        carried = await state.snapshot("default", day, wanted, read=read)
        assert state.own_reads == reads, case
        assert carried == await other.snapshot("default", day, wanted), case
        # What a speculative write decides on is that state too, but for the
        # reservations of client ids, which its guard finds none of.
        assert state.speculative("default", day) == replace(
            await other.snapshot("default", day), reservations={}, raw={}), case
