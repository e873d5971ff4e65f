"""What the positions projection costs per order: a worker that does not project runs N
market orders on a private redis-server, then one projector folds their events from the
start, page after page, as a worker's positions loop does when it is behind.

    python -m bench.projector [--orders 5000] [--repeat 3]

Printed per order (four events in one entry, [created, pending_submit, submitted, filled]:
the paper exchange takes a market order, and its outcome is written, in the write that
records it): the projector's CPU time (this process; nothing else runs in it
meanwhile), the wall time of the fold and the CPU time redis-server spent (its scripts and
reads). --repeat folds the same events again from the start that many times (positions
and cursor cleared, the risk state as it was), since one figure on a shared machine proves
little: compare the lowest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.config import load_settings
from executor.worker import Worker
from producer.keys import Keys

from .throughput import answered_by_a_worker, prefill, redis_cpu_seconds

KEYS = Keys()


async def fill_events(url: str, orders: int) -> None:
    """Run the orders through a worker that does not project; keep what it wrote."""
    r = aioredis.Redis.from_url(url)
    await prefill(r, orders)
    settings = load_settings(None, dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0",
                                        ORDERSTREAM_PROJECT_POSITIONS="false"))
    await answered_by_a_worker(r, settings, orders)
    await r.aclose()


async def fold_once(url: str, orders: int, saved: dict[str, Any]) -> tuple[float, ...]:
    """Fold every event from the start; (CPU, wall, redis CPU) per order, in us."""
    r = aioredis.Redis.from_url(url)
    await r.delete(KEYS.positions, KEYS.positions_cursor, KEYS.positions_lease)
    for key, dump in saved.items():  # the risk state the first fold found
        await r.restore(key, 0, dump, replace=True)
    worker = Worker(load_settings(None, dict(os.environ, REDIS_URL=url,
                                             ORDERSTREAM_METRICS_PORT="0")))
    projector = worker.projector
    redis_start = await redis_cpu_seconds(r)
    cpu, wall = time.process_time(), time.perf_counter()
    while await projector.once():
        pass
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    in_redis = await redis_cpu_seconds(r) - redis_start
    last: Any = await r.xrevrange(KEYS.events, count=1)
    if await r.get(KEYS.positions_cursor) != last[0][0]:
        raise RuntimeError("the fold stopped before the last event")
    await projector.release()
    await worker.redis.aclose()
    await r.aclose()
    return cpu * 1e6 / orders, wall * 1e6 / orders, in_redis * 1e6 / orders


async def main(orders: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp))
        with server:
            await fill_events(server.url, orders)
            r = aioredis.Redis.from_url(server.url)
            keys = [k async for k in r.scan_iter(match=f"{KEYS.prefix}:risk:*")]
            saved = {k: await r.dump(k) for k in keys}
            entries = int(await r.xlen(KEYS.events))
            await r.aclose()
            print(f"positions fold: {entries} events entries of {orders} market orders")
            print(f"{'':<8}{'CPU us/order':>14}{'wall us/order':>15}{'redis us/order':>16}")
            figures = [await fold_once(server.url, orders, saved) for _ in range(repeat)]
            for k, (cpu, wall, in_redis) in enumerate(figures, 1):
                print(f"{'fold ' + str(k):<8}{cpu:>14.1f}{wall:>15.1f}{in_redis:>16.1f}")
            print(f"lowest CPU per order: {min(f[0] for f in figures):.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.repeat))
