"""Graceful stop: SIGTERM stops reading, finishes and acks what the worker holds, exits 0;
what it never read is left for the next worker, and every request still gets one result."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from producer.client import OrderClient
from producer.keys import GROUP, Keys

K = Keys()


def start_worker(redis_url: str, consumer: str, log: Path, **extra: str
                 ) -> subprocess.Popen[bytes]:
    env = dict(os.environ, REDIS_URL=redis_url, ORDERSTREAM_CONSUMER=consumer,
               ORDERSTREAM_METRICS_PORT="0", ORDERSTREAM_METRICS_HOST="127.0.0.1", **extra)
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "executor", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    client = OrderClient(redis_client)
    subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(400)]
    # Slow broker calls and small batches: the worker is mid-batch when the signal comes.
    worker = start_worker(redis_url, "stopping", tmp_path / "w1.log",
                          ORDERSTREAM_BATCH_SIZE="20",
                          ORDERSTREAM_ACCOUNTS_DEFAULT_LATENCY_MS="50")
    try:
        for _ in range(200):
            if await redis_client.xlen(K.completed) >= 20:
                break
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 20)
    finally:
        if worker.poll() is None:
            worker.kill()
    output = (tmp_path / "w1.log").read_text()
    assert code == 0, output
    done = await redis_client.xlen(K.completed)
    assert 20 <= done < 400, "the worker should have stopped before finishing everything"
    pending = await redis_client.xpending(K.pending, GROUP)
    assert pending["pending"] == 0, "the stopped worker left entries unacknowledged"

    # A second worker picks up exactly what the first never read.
    second = start_worker(redis_url, "next", tmp_path / "w2.log")
    try:
        results = await client.wait_results([s.request_id for s in subs], 60)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 20)
    assert len(results) == 400
    entries = await redis_client.xrange(K.completed)
    request_ids = [f[b"request_id"] for _, f in entries]
    assert len(request_ids) == len(set(request_ids)) == 400
    workers = {json.loads(f[b"data"])["worker"] for _, f in entries}
    assert workers == {"stopping", "next"}
