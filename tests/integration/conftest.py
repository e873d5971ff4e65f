"""Helpers to run real workers against the real redis-server of tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from executor.config import Settings, load_settings
from executor.worker import Worker
from producer.client import OrderClient, Submitted
from producer.keys import GROUP, Keys


def settings_for(redis_url: str, consumer: str = "w1", **worker: Any) -> Settings:
    env = {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": consumer,
           "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1"}
    for key, value in worker.items():
        env[f"ORDERSTREAM_{key.upper()}"] = str(value)
    return load_settings(None, env)


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Worker]:
    """A worker serving in this event loop until the block ends (then stopped cleanly)."""
    worker = Worker(settings, **kwargs)
    await worker.start()
    task = asyncio.create_task(worker.serve())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
        await worker.close()


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    def make(consumer: str = "w1", **worker: Any) -> Settings:
        return settings_for(redis_url, consumer, **worker)
    return make


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[OrderClient]:
    c = OrderClient.from_url(redis_url)
    yield c
    await c.aclose()


def replace(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


async def taken_by_a_dead_worker(r: aioredis.Redis, client: OrderClient) -> Submitted:
    """Publish one order and have consumer "dead" read it and never answer (no heartbeat)."""
    pending = Keys().pending
    await r.xgroup_create(pending, GROUP, id="0", mkstream=True)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    reply: Any = await r.xreadgroup(GROUP, "dead", {pending: ">"}, count=1)
    assert reply[0][1][0][0].decode() == sub.request_id
    return sub
