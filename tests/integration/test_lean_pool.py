"""The worker's Redis clients hand out connections from a pool without redis-py's per-command
bookkeeping (executor/infra/pool.py), and keep redis-py's checks that make a reused
connection safe: what a connection does after a cancel or a close is what redis-py's own
pool does."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from executor.infra.connection import RedisSettings, connect
from executor.infra.pool import LeanPool, use_lean_pool


async def test_the_worker_client_pools_lean_and_answers_concurrent_commands(
        redis_url: str) -> None:
    client = connect(RedisSettings(url=redis_url))
    try:
        assert isinstance(client.connection_pool, LeanPool)
        await client.set("lean:k", b"v")
        # A blocked read holds its connection; the other commands get connections of
        # their own meanwhile, and every one goes back to the pool.
        blocked = asyncio.create_task(client.blpop(["lean:list"], timeout=1))
        await asyncio.sleep(0.05)
        values = await asyncio.gather(*(client.get("lean:k") for _ in range(20)))
        assert values == [b"v"] * 20
        await client.rpush("lean:list", b"x")
        assert await blocked == (b"lean:list", b"x")
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("lean:n").incr("lean:n")
            assert await pipe.execute() == [1, 2]
        pool = client.connection_pool
        assert not pool._in_use_connections and len(pool._available_connections) >= 2
    finally:
        await client.aclose()


def client_of(redis_url: str, lean: bool) -> aioredis.Redis:
    """The worker's client (lean) or the same with redis-py's own pool."""
    client = connect(RedisSettings(url=redis_url))
    if not lean:
        client.connection_pool.__class__ = ConnectionPool
    return client


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py's pool"])
async def test_a_command_cancelled_waiting_for_its_reply_leaves_no_reply_behind(
        redis_url: str, lean: bool) -> None:
    """A batch cancelled at a stop may leave a command waiting: its connection must not
    hand its reply to the next command."""
    client = client_of(redis_url, lean)
    try:
        waiting = asyncio.create_task(client.blpop(["lean:cancelled"], timeout=2))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await client.rpush("lean:cancelled", b"x")  # the reply it would have had
        assert await client.incr("lean:after-cancel") == 1
        assert not client.connection_pool._in_use_connections
    finally:
        await client.aclose()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py's pool"])
async def test_a_connection_closed_by_the_server_fails_one_command_then_reconnects(
        redis_url: str, lean: bool) -> None:
    """As with redis-py's own pool: the command that finds it closed fails (the worker's
    callers treat it as any Redis error), and the next one gets a fresh connection."""
    client = client_of(redis_url, lean)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await client.client_setname("lean-victim")
        victims = [c["id"] for c in await admin.client_list() if c["name"] == "lean-victim"]
        assert len(victims) == 1
        await admin.client_kill_filter(_id=victims[0])
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError):
            await client.set("lean:after", b"1")
        await client.set("lean:after", b"2")
        assert await admin.get("lean:after") == b"2"
    finally:
        await client.aclose()
        await admin.aclose()


def test_other_pools_are_left_as_they_are(redis_url: str) -> None:
    blocking = aioredis.Redis(connection_pool=BlockingConnectionPool.from_url(redis_url))
    assert type(use_lean_pool(blocking).connection_pool) is BlockingConnectionPool
    plain = aioredis.Redis.from_url(redis_url)
    assert type(plain.connection_pool) is ConnectionPool
    assert type(use_lean_pool(plain).connection_pool) is LeanPool
