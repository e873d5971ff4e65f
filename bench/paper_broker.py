"""Cost of the paper broker alone: concurrent market submits against a private redis-server.

    python -m bench.paper_broker [--orders 20000] [--batch 200] [--redis-url URL]

Submits are issued ``--batch`` at a time with asyncio.gather (as the worker does), at zero
latency, and the rate is the wall-clock rate over all of them (and, as a figure that other
load on the machine disturbs less, per CPU-second of this process). Without ``--redis-url`` a
private redis-server is started on a free port (never a Redis you run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.brokers.paper import PaperAccount, PaperBroker
from producer.contract import OrderSpec, OrderType, Side, wire
from producer.keys import Keys


@contextlib.contextmanager
def private_redis(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp))
        with server:
            yield server.url


async def run(url: str, orders: int, batch: int) -> tuple[float, float]:
    redis = aioredis.Redis.from_url(url)
    await redis.flushall()
    broker = PaperBroker("bench", PaperAccount(), redis, Keys())
    await broker.start()
    specs = [OrderSpec(account="bench", symbol="BTCUSDT",
                       side=Side.BUY if i % 2 else Side.SELL, type=OrderType.MARKET,
                       quantity=wire(Decimal("0.001"))) for i in range(2)]
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, orders, batch):
            await asyncio.gather(*(broker.submit(f"bench-{i}", specs[i % 2])
                                   for i in range(first, min(first + batch, orders))))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        received = await broker.received_count()
        assert received == orders, f"{received} received, {orders} sent"
    finally:
        await broker.close()
        await redis.aclose()
    return orders / elapsed, orders / cpu


async def calibrate() -> float:
    """Microseconds per gathered no-op task: how fast this machine runs asyncio right now
    (shared machines vary by several times), to read the figures against."""
    async def noop() -> None:
        return None

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(100):
            await asyncio.gather(*(noop() for _ in range(200)))
        best = min(best, (time.perf_counter() - started) / 20_000 * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"calibration: {asyncio.run(calibrate()):.1f} us per gathered no-op task")
    with private_redis(args.redis_url) as url:
        for n in range(args.runs):
            rate, per_cpu = asyncio.run(run(url, args.orders, args.batch))
            print(f"run {n + 1}: {args.orders} market submits in batches of {args.batch}: "
                  f"{rate:,.0f} submits/s ({per_cpu:,.0f} per CPU-second of this process)")


if __name__ == "__main__":
    main()
