"""Workers that are gone: their consumers leave the group once what they held is reclaimed;
a stopping worker hands back what it has not started and leaves the group itself; an entry
deleted while pending still gets its one result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis

from executor.background.liveness import Liveness, WorkerInfo
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import GROUP, Keys

from .conftest import running, settings_for, taken_by_a_dead_worker

K = Keys()
FAST = {"visibility_timeout_ms": 300, "lookup_window_ms": 300, "heartbeat_ms": 100}


async def consumers(r: aioredis.Redis) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"])
            for c in await r.xinfo_consumers(K.pending, GROUP)}


async def read_as(r: aioredis.Redis, consumer: str, count: int = 10) -> list[Any]:
    reply = await r.xreadgroup(GROUP, consumer, {K.pending: ">"}, count=count)
    return list(reply[0][1]) if reply else []


async def until(condition: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def liveness(r: aioredis.Redis, consumer: str) -> Liveness:
    return Liveness(r, K, WorkerInfo(consumer=consumer, host="h", pid=1, version="t",
                                     started_at=0), heartbeat_ms=100)


async def test_a_gone_consumer_is_removed_only_after_its_entries_are_reclaimed(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    alive = liveness(redis_client, "alive")
    await alive.beat()
    beats = True
    beating = asyncio.create_task(alive.run(lambda: beats, asyncio.sleep))
    try:
        # A live consumer that owns nothing.
        await redis_client.xgroup_createconsumer(K.pending, GROUP, "alive")
        # Nobody may remove a gone consumer that still owns an entry: that would drop it.
        assert await alive.sweep(min_idle_ms=0) == []
        assert (await consumers(redis_client))["dead"] == 1

        async with running(settings_for(redis_url, **FAST)) as worker:
            result = await client.wait_result(sub.request_id, 15)
            assert result.status is ResultStatus.FILLED
            await until(lambda: _without(redis_client, "dead"))
            assert worker.metrics.consumers_removed._value.get() == 1
            names = await consumers(redis_client)
            assert names == {"alive": 0, "w1": 0}, "live consumers must stay"
    finally:
        beats = False
        await beating
    assert await redis_client.xlen(K.completed) == 1


async def _without(r: aioredis.Redis, name: str) -> bool:
    return name not in await consumers(r)


async def test_a_clean_stop_leaves_the_group_and_drops_the_heartbeat(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    async with running(settings_for(redis_url, consumer="tidy", **FAST)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        await client.wait_result(sub.request_id, 15)
        info = json.loads(await redis_client.get(K.worker("tidy")))
        assert info["consumer"] == "tidy" and info["pid"] > 0
        assert 0 < await redis_client.pttl(K.worker("tidy")) <= 500
        assert "tidy" in await consumers(redis_client)
    assert await redis_client.exists(K.worker("tidy")) == 0
    assert "tidy" not in await consumers(redis_client)


async def test_a_batch_read_while_stopping_is_handed_back_unstarted(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    subs = [await client.place("BTCUSDT", "buy", "market", "0.010") for _ in range(3)]
    stopping = Worker(settings_for(redis_url, consumer="stopping",
                                   visibility_timeout_ms=60_000, max_deliveries=1))
    try:
        entries = await read_as(redis_client, "stopping")
        await stopping._hand_back(entries)
    finally:
        await stopping.redis.aclose()
    pending = await redis_client.xpending_range(K.pending, GROUP, "-", "+", 10)
    assert [p["times_delivered"] for p in pending] == [0, 0, 0]
    assert all(p["time_since_delivered"] >= 60_000 for p in pending)
    # Another worker takes them on its first reclaim pass, not a timeout later; and with
    # max_deliveries=1 they are not poison: the hand-back was no delivery.
    async with running(settings_for(redis_url, visibility_timeout_ms=60_000,
                                    max_deliveries=1)):
        results = await client.wait_results([s.request_id for s in subs], 15)
    assert {r.status for r in results.values()} == {ResultStatus.FILLED}
    assert await redis_client.xlen(K.failed) == 0


async def test_an_entry_deleted_while_pending_gets_one_failed_result(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    await redis_client.xdel(K.pending, sub.request_id)
    async with running(settings_for(redis_url, **FAST)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FAILED and result.reason_code == "poison"
    assert "deleted" in (result.reason or "")
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.xlen(K.paper("default", "received")) == 0


async def test_peers_are_the_workers_with_a_recent_heartbeat(
    redis_client: aioredis.Redis,
) -> None:
    me = liveness(redis_client, "me")
    await me.beat()
    await liveness(redis_client, "fresh").beat()
    await redis_client.zadd(K.workers, {"stale": 1})  # beat long ago
    assert await me.peers() == ["fresh", "me"]
    await me.leave()
    assert await liveness(redis_client, "fresh").peers() == ["fresh"]
