"""``[redis] durability = "wait"``: an order is sent only once Redis confirms its record
reached the replicas (WAIT) or the disk (WAITAOF), so a failover right after persisting can
never let a redelivered request send it a second time. Without the confirmation nothing is
sent and the request is redelivered; once a replica is back, it is sent, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.config import Settings, load_settings
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys

from .conftest import running

K = Keys()


def settings(url: str, **extra: str) -> Settings:
    env = {"REDIS_URL": url, "ORDERSTREAM_CONSUMER": "w1", "ORDERSTREAM_METRICS_PORT": "0",
           "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "1000", "ORDERSTREAM_LOOKUP_WINDOW_MS": "300",
           "ORDERSTREAM_REDIS_DURABILITY": "wait", "ORDERSTREAM_REDIS_WAIT_TIMEOUT_MS": "300",
           **extra}
    return load_settings(None, env)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(binary=find_redis_server(), data_dir=tmp_path / "primary") as server:
        yield server


def replica_of(primary: RedisServer, data_dir: Path) -> RedisServer:
    return RedisServer(binary=primary.binary, data_dir=data_dir,
                       extra_args=["--replicaof", "127.0.0.1", str(primary.port)])


@pytest.fixture
async def r(primary: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(primary.url)
    yield client
    await client.aclose()


async def replicas_online(r: aioredis.Redis, n: int) -> None:
    for _ in range(200):
        info = await r.info("replication")
        if int(info["connected_slaves"]) >= n and all(
                info[f"slave{i}"]["state"] == "online" for i in range(n)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} replica(s) never came online: {info}")


async def received(r: aioredis.Redis) -> list[bytes]:
    return [f[b"client_order_id"] for _, f in await r.xrange(K.paper("default", "received"))]


async def test_orders_are_sent_once_a_replica_has_their_records(
        primary: RedisServer, r: aioredis.Redis, tmp_path: Path) -> None:
    with replica_of(primary, tmp_path / "replica"):
        await replicas_online(r, 1)
        client = OrderClient(r)
        async with running(settings(primary.url)) as worker:
            subs = [await client.place("BTCUSDT", "buy", "market", "0.010") for _ in range(5)]
            results = [await client.wait_result(s.request_id, 15) for s in subs]
        assert [x.status for x in results] == [ResultStatus.FILLED] * 5
        assert worker.metrics.registry.get_sample_value(
            "orderstream_not_durable_orders_total") == 0
        assert int((await r.info("commandstats"))["cmdstat_wait"]["calls"]) >= 2


async def test_without_a_replica_nothing_is_sent_until_one_confirms(
        primary: RedisServer, r: aioredis.Redis, tmp_path: Path) -> None:
    client = OrderClient(r)
    # Redelivered about once a second until the replica is online, which can take several
    # seconds on a loaded machine: not dead-lettered meanwhile (max_deliveries: 5).
    async with running(settings(primary.url, ORDERSTREAM_MAX_DELIVERIES="100")) as worker:
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        await asyncio.sleep(2.5)  # persisted, WAIT answered 0: not sent, redelivered, again
        not_durable = worker.metrics.registry.get_sample_value(
            "orderstream_not_durable_orders_total")
        assert not_durable is not None and not_durable >= 2
        assert await received(r) == []
        assert await r.xlen(K.completed) + await r.xlen(K.failed) == 0
        assert await r.hget(K.order(sub.client_order_id or ""), "state") == b"pending_submit"
        assert await r.hget(K.order(sub.client_order_id or ""), "sender") is None
        with replica_of(primary, tmp_path / "replica"):
            await replicas_online(r, 1)
            result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(r) == [(sub.client_order_id or "").encode()]


async def test_waitaof_needs_a_server_that_has_it(primary: RedisServer) -> None:
    worker = Worker(settings(primary.url, ORDERSTREAM_REDIS_WAIT_AOF="true",
                             ORDERSTREAM_REDIS_WAIT_REPLICAS="0"))
    version = tuple(int(p) for p in (await worker.redis.info("server"))["redis_version"]
                    .split(".")[:2])
    try:
        if version >= (7, 2):
            # appendonly is off on the test server: WAITAOF refuses, and so does the worker.
            with pytest.raises(RuntimeError, match="appendonly"):
                await worker.start(serve_metrics=False)
        else:
            with pytest.raises(RuntimeError, match="unknown command"):
                await worker.start(serve_metrics=False)
    finally:
        await worker.close()
