"""Graceful stop: SIGTERM stops reading, finishes and acks what the worker holds, exits 0;
what it never read is left for the next worker, and every request still gets one result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from producer.client import OrderClient
from producer.keys import GROUP, Keys

K = Keys()


async def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    client = OrderClient(redis_client)
    subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(400)]
    # Slow broker calls and small batches: the worker is mid-batch when the signal comes.
    worker = WorkerProcess(redis_url, "stopping", tmp_path / "w1.log",
                           ORDERSTREAM_BATCH_SIZE="20",
                           ORDERSTREAM_ACCOUNTS_DEFAULT_LATENCY_MS="50")
    try:
        for _ in range(200):
            if await redis_client.xlen(K.completed) >= 20:
                break
            await asyncio.sleep(0.05)
        code = await asyncio.to_thread(worker.stop, 20)
    finally:
        worker.kill()
    output = (tmp_path / "w1.log").read_text()
    assert code == 0, output
    done = await redis_client.xlen(K.completed)
    assert 20 <= done < 400, "the worker should have stopped before finishing everything"
    # What it had started is finished and acked; a batch it read as the signal came is
    # handed back unstarted: still pending, but as never delivered and idle long enough
    # for the next worker to claim it at once.
    handed_back = await redis_client.xpending_range(K.pending, GROUP, "-", "+", 1000)
    assert all(p["times_delivered"] == 0 and p["time_since_delivered"] >= 30_000
               for p in handed_back), handed_back
    assert len(handed_back) <= 3 * 20  # a batch per lane at most
    consumers = [c["name"] for c in await redis_client.xinfo_consumers(K.pending, GROUP)]
    if not handed_back:
        assert b"stopping" not in consumers, "a cleanly stopped worker leaves the group"
    assert await redis_client.exists(K.worker("stopping")) == 0

    # A second worker picks up exactly what the first never read or handed back.
    second = WorkerProcess(redis_url, "next", tmp_path / "w2.log")
    try:
        results = await client.wait_results([s.request_id for s in subs], 60)
    finally:
        await asyncio.to_thread(second.stop, 20)
    assert len(results) == 400
    entries = await redis_client.xrange(K.completed)
    request_ids = [f[b"request_id"] for _, f in entries]
    assert len(request_ids) == len(set(request_ids)) == 400
    workers = {json.loads(f[b"data"])["worker"] for _, f in entries}
    assert workers == {"stopping", "next"}
