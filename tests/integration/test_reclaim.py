"""What another worker left behind: requests idle past the visibility timeout are reclaimed
and answered exactly once; an order persisted or even sent before the crash is looked up,
never sent twice; an entry delivered too often is dead-lettered with its raw fields."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.config import Settings, load_settings
from producer.client import OrderClient
from producer.contract import (
    OrderState,
    ResultStatus,
    decode_event,
)
from producer.keys import GROUP, Keys

from .conftest import persisted_by_the_dead_worker, running, taken_by_a_dead_worker

K = Keys()


def settings(redis_url: str, **extra: str) -> Settings:
    env = {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
           "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "300",
           "ORDERSTREAM_LOOKUP_WINDOW_MS": "300", **extra}
    return load_settings(None, env)


async def received(r: aioredis.Redis) -> list[bytes]:
    return [f[b"client_order_id"] for _, f in await r.xrange(K.paper("default", "received"))]


async def test_a_request_a_dead_worker_took_is_reclaimed_and_answered_once(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED and result.worker == "w1"
    assert await redis_client.xlen(K.completed) == 1
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await received(redis_client) == [sub.client_order_id.encode()]


async def test_a_crash_after_persist_is_sent_once_after_the_lookup_finds_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    # The dead worker got as far as persisting the order (pending_submit), no further.
    await persisted_by_the_dead_worker(redis_client, sub)
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(redis_client) == [sub.client_order_id.encode()]
    states = [decode_event(f[b"data"]).state for _, f in await redis_client.xrange(K.events)]
    assert states == [OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
                      OrderState.FILLED]


async def test_a_crash_between_the_broker_call_and_the_result_never_sends_twice(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    spec = await persisted_by_the_dead_worker(redis_client, sub)
    # ... and the exchange took the order, then the worker died before writing the outcome.
    exchange = PaperBroker("default", PaperAccount(), redis_client, K)
    await exchange.start(background=False)
    sent = await exchange.submit(sub.client_order_id, spec)
    await exchange.close()
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert result.broker_order_id == sent.broker_order_id
    assert result.filled_quantity == sent.filled_quantity
    assert await received(redis_client) == [sub.client_order_id.encode()], "sent twice"


async def test_an_entry_delivered_too_often_is_dead_lettered_with_its_raw_fields(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    await redis_client.xclaim(K.pending, GROUP, "dead", 0, [sub.request_id], idle=60_000,
                              retrycount=3)
    async with running(settings(redis_url, ORDERSTREAM_MAX_DELIVERIES="3")):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FAILED and result.reason_code == "poison"
    ((_, fields),) = await redis_client.xrange(K.failed)
    assert fields[b"request_id"].decode() == sub.request_id
    raw = json.loads(fields[b"raw:data"])
    assert raw["client_order_id"] == sub.client_order_id
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.xlen(K.pending) == 0  # answered: deleted, kept on the result
    assert await received(redis_client) == []


@pytest.mark.parametrize("point, reached_the_exchange", [("after_submit", True),
                                                          ("after_persist", False)])
async def test_a_worker_killed_at_a_failpoint_is_finished_by_another_without_a_resend(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path, point: str,
    reached_the_exchange: bool,
) -> None:
    """A real worker process SIGKILLs itself exactly there; another one finishes it."""
    client = OrderClient(redis_client)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    doomed = WorkerProcess(redis_url, "doomed", tmp_path / "doomed.log",
                           ORDERSTREAM_FAILPOINT=point)
    code = await asyncio.to_thread(doomed.proc.wait, 60)
    assert code == -signal.SIGKILL, (tmp_path / "doomed.log").read_text()
    assert await redis_client.xlen(K.completed) == 0, "it died before writing any outcome"
    sent = await received(redis_client)
    assert sent == ([sub.client_order_id.encode()] if reached_the_exchange else [])
    record = json.loads(await redis_client.hget(K.order(sub.client_order_id), "record"))
    assert record["state"] == "pending_submit"

    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(redis_client) == [sub.client_order_id.encode()], "sent twice"
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
