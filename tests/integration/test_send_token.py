"""No order is sent by two workers: a request held by a worker that stalls past the
visibility timeout (SIGSTOP, a long GC pause) is taken over by another one, which only
looks the order up and never sends it while the first may still do so; a worker that is
merely slow keeps its requests claimed, so nobody takes them over at all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.config import Settings, load_settings
from executor.infra.store import Store
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from producer.keys import GROUP, Keys

from .conftest import (
    events_in,
    persisted_by_the_dead_worker,
    results_of,
    running,
    stopped,
    taken_by_a_dead_worker,
    until,
)
from .test_reclaim import received

K = Keys()


def settings(redis_url: str, consumer: str = "w2", **extra: str) -> Settings:
    env = {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": consumer,
           "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "1000",
           "ORDERSTREAM_LOOKUP_WINDOW_MS": "300", "ORDERSTREAM_TRACK_INTERVAL_MS": "100",
           "ORDERSTREAM_HEARTBEAT_MS": "200", **extra}
    return load_settings(None, env)


async def test_a_worker_stopped_before_sending_and_resumed_after_a_takeover_sends_once(
        redis_url: str, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    """On the paper exchange the token is taken in the script that takes the order (the
    door itself: brokers/sending.py), so a worker stopped right before its send holds no
    token: the worker that takes the request over sends it, and the first one's send, once
    it wakes, is refused at the door. (A broker behind HTTP takes the token first, so a
    worker can stall holding it: test_late_execution's before_send.)"""
    client = OrderClient(redis_client)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    cid = sub.client_order_id
    assert cid is not None
    log = tmp_path / "stalled.log"
    # Sent by the submit step (not taken with its record, which leaves no moment between
    # the record and the door to stop in).
    stalled = WorkerProcess(redis_url, "stalled", log, ORDERSTREAM_FAILPOINT="before_send:stop",
                            ORDERSTREAM_VISIBILITY_TIMEOUT_MS="1000",
                            ORDERSTREAM_HEARTBEAT_MS="200",
                            ORDERSTREAM_ACCOUNTS_DEFAULT_TAKE_WITH_RECORD="false")
    try:
        # It persisted the order and stopped right before the exchange's door.
        await until(lambda: asyncio.to_thread(stopped, stalled.proc.pid), 30)
        assert await redis_client.hget(K.order(cid), "state") == b"pending_submit"
        assert await redis_client.hget(K.order(cid), "sender") is None
        assert await received(redis_client) == []

        async with running(settings(redis_url)):
            # Reclaimed once idle past the visibility timeout: nobody took the token, so
            # this worker sends it.
            result = await client.wait_result(sub.request_id, 15)
            assert result.status is ResultStatus.FILLED, result
            assert result.worker == "w2"
            assert (await redis_client.hget(K.order(cid), "sender") or b"").startswith(b"w2:")

            # It wakes up: its send is refused at the door, the order having moved on.
            stalled.proc.send_signal(signal.SIGCONT)
            await until(lambda: asyncio.to_thread(
                lambda: "moved on while being submitted" in log.read_text()), 30)
        assert await received(redis_client) == [cid.encode()], "sent twice"
        assert await results_of(redis_client, sub.request_id) == [ResultStatus.FILLED]
        states = [e.state for e in await events_in(redis_client)]
        assert states == [OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
                          OrderState.FILLED]
        assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    finally:
        if stalled.alive():
            os.kill(stalled.proc.pid, signal.SIGCONT)
        stalled.stop()


async def test_a_redelivered_request_whose_token_another_delivery_holds_is_never_sent(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    await persisted_by_the_dead_worker(redis_client, sub)
    assert sub.client_order_id is not None
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    assert await store.take_send_tokens({sub.client_order_id: "dead:x"}) == [1]
    assert await store.take_send_tokens({sub.client_order_id: "dead:x"}) == [1]  # its own
    assert await store.take_send_tokens({sub.client_order_id: "w1:y"}) == [0]
    async with running(settings(redis_url, "w1")):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.SUBMITTED and result.order_state is OrderState.SUBMITTED
    assert await received(redis_client) == []
    assert await redis_client.sismember(K.open, sub.client_order_id)  # followed


async def test_a_redelivered_request_nobody_sent_is_sent_once(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """The token is free: every send is made by its holder, so nobody sent the order."""
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    await persisted_by_the_dead_worker(redis_client, sub)
    async with running(settings(redis_url, "w1")):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(redis_client) == [(sub.client_order_id or "").encode()]
    assert (await redis_client.hget(K.order(sub.client_order_id or ""), "sender") or b"") \
        .startswith(b"w1:")


async def test_a_slow_broker_call_keeps_its_request_claimed(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """The paper exchange answers after 2.5 s, the visibility timeout is 1 s: the worker
    keeps the request claimed while it waits, so no reclaim pass (the other worker's, or
    its own) takes it over and works on it a second time."""
    client = OrderClient(redis_client)
    slow = {"ORDERSTREAM_ACCOUNTS_DEFAULT_LATENCY_MS": "2500"}
    async with running(settings(redis_url, "w1", **slow)) as first:
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")

        async def taken() -> bool:
            pending = await redis_client.xpending(K.pending, GROUP)
            return bool(pending["pending"])
        await until(taken)
        async with running(settings(redis_url, "w2", **slow)) as second:
            result = await client.wait_result(sub.request_id, 15)
            await asyncio.sleep(3)  # what a takeover would do takes this long to show
    assert result.status is ResultStatus.FILLED and result.worker == "w1"
    for worker in (first, second):
        sample = worker.metrics.registry.get_sample_value
        assert sample("orderstream_reclaimed_total") == 0
        assert sample("orderstream_finish_conflicts_total") == 0
    assert await results_of(redis_client, sub.request_id) == [ResultStatus.FILLED]
    assert await received(redis_client) == [(sub.client_order_id or "").encode()]
