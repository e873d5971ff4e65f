"""What a tracking pass costs with many resting orders: with the attention index (a pass
loads the orders due) against a full scan (what a pass did before the index: every owned
open order's record loaded, each second, even with a live push feed), in the same run.

    python -m bench.tracker [--orders 10000] [--passes 20]

A worker on a private redis-server places N resting limit orders (GTC, far from the
price), then one tracker (this process) follows them, its account's push feed taken as
live. Printed: the median wall time, CPU time of this process and of redis-server of one
pass with nothing due, for both selections, and their ratio; then the pass that looks
every order up (a tracker's first one, and what a reconcile costs in all), its lookups
made together (the paper exchange's ``get_many``: one read for many orders) beside the
same pass of a tracker whose broker looks each order up alone (``get_order``, as every
broker without a batch lookup does), alternating ``--passes`` times, and the cost of one
reconcile period (``RECONCILE_EVERY`` passes, every order looked up once) both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.background.tracker import Tracker, overdue
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.config import Settings, load_settings
from executor.infra.attention import RECONCILE_EVERY, Attention
from executor.infra.connection import connect
from executor.infra.metrics import Metrics
from executor.infra.store import Store
from executor.model.order import Order
from executor.pipeline.services import Services
from producer.contract import OrderType, Request, Side, TimeInForce, encode, parse_decimal
from producer.keys import Keys

from .throughput import answered_by_a_worker, prefill, redis_cpu_seconds

KEYS = Keys()


def resting_order(i: int) -> bytes:
    return encode(Request(client_order_id=f"rest-{i}", symbol="BTCUSDT", side=Side.BUY,
                          type=OrderType.LIMIT, quantity=parse_decimal("0.001"),
                          price=parse_decimal("40000"), time_in_force=TimeInForce.GTC))


def settings_for(url: str) -> Settings:
    return load_settings(None, dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0",
                                    ORDERSTREAM_PROJECT_POSITIONS="false",
                                    ORDERSTREAM_CONSUMER="bench-tracker"))


async def place(url: str, orders: int) -> None:
    """Have a worker place the resting orders; keep what it wrote."""
    r = aioredis.Redis.from_url(url)
    await prefill(r, orders, data=resting_order)
    await answered_by_a_worker(r, settings_for(url), orders)
    if await r.scard(KEYS.open) != orders:
        raise RuntimeError("not every order rests")
    await r.aclose()


async def full_scan(tracker: Tracker) -> list[Order]:
    """The selection of a pass before the index (account with a live feed, not a
    reconcile pass): every owned open order loaded, the overdue ones kept."""
    await tracker.refresh_peers()
    await tracker.cancel_deferred()
    now = tracker.svc.clock()
    ids = [cid for cid in await tracker.store.open_order_ids() if tracker.mine(cid)]
    return [o for o in await tracker.store.load_orders(ids)
            if o is not None and tracker.followed(o, now)
            and overdue(o, now, tracker.market_timeout_ms) is not None]


async def timed(r: aioredis.Redis, action: Callable[[], Awaitable[object]]
                ) -> tuple[float, float, float]:
    """(wall, CPU of this process, CPU of redis-server) of one call, in ms."""
    redis_cpu = await redis_cpu_seconds(r)
    cpu, wall = time.process_time(), time.perf_counter()
    await action()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return wall * 1e3, cpu * 1e3, (await redis_cpu_seconds(r) - redis_cpu) * 1e3


class OneByOne:
    """A broker seen as one without a batch lookup (its class has no ``get_many``):
    brokers/base.py ``get_all`` looks each order up alone, through ``get_order``."""

    def __init__(self, broker: PaperBroker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


def median(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    wall, cpu, in_redis = zip(*runs, strict=True)
    return statistics.median(wall), statistics.median(cpu), statistics.median(in_redis)


async def measure(url: str, passes: int) -> dict[str, tuple[float, float, float]]:
    settings = settings_for(url)
    r = connect(settings.redis)  # the worker's client (infra/packing.py, infra/pool.py)
    store = Store(r, KEYS, results_maxlen=1_000, order_ttl_ms=60_000,
                  attention=Attention.of(settings.worker))
    broker = PaperBroker("default", PaperAccount(), r, KEYS)
    await broker.start(background=False)
    try:
        def new_tracker(seen_as: Any) -> Tracker:
            svc = Services(settings, store, {"default": seen_as}, Metrics(), "bench-tracker")
            tracker = Tracker(svc, None, interval_ms=settings.worker.track_interval_ms,
                              market_timeout_ms=settings.worker.market_timeout_ms)
            tracker.live_feeds.add("default")  # as if the exchange's feed were connected
            return tracker

        # A tracker's first pass looks every order up (as at a start, or a reconcile of
        # them all): a new tracker each time, alone first.
        alone, every = [], []
        for _ in range(passes):
            alone.append(await timed(r, new_tracker(OneByOne(broker)).poll_once))
            every.append(await timed(r, new_tracker(broker).poll_once))
        tracker = new_tracker(broker)
        await tracker.poll_once()
        index = [await timed(r, tracker.poll_once) for _ in range(passes)]
        scan = [await timed(r, lambda: full_scan(tracker)) for _ in range(passes)]
    finally:
        await broker.close()
        await r.aclose()
    return {"index": median(index), "scan": median(scan), "every": median(every),
            "alone": median(alone)}


async def main(orders: int, passes: int) -> dict[str, tuple[float, float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp))
        with server:
            await place(server.url, orders)
            fig = await measure(server.url, passes)
    scan, index, every, alone = fig["scan"], fig["index"], fig["every"], fig["alone"]
    print(f"\ntracking pass, {orders} resting orders, live push feed, nothing due "
          f"(median of {passes}):")
    print(f"{'':<12}{'wall ms':>10}{'CPU ms':>10}{'redis ms':>10}")
    for name, (wall, cpu, in_redis) in (("full scan", scan), ("index", index)):
        print(f"{name:<12}{wall:>10.2f}{cpu:>10.2f}{in_redis:>10.2f}")
    print(f"index / full scan: wall {index[0] / scan[0]:.2%}, CPU "
          f"{(index[1] + index[2]) / max(scan[1] + scan[2], 1e-9):.2%} (process + redis)")
    print(f"\na pass that looks every order up (median of {passes}, alternating):")
    print(f"{'':<12}{'wall ms':>10}{'CPU ms':>10}{'redis ms':>10}")
    for name, (wall, cpu, in_redis) in (("one by one", alone), ("together", every)):
        print(f"{name:<12}{wall:>10.1f}{cpu:>10.1f}{in_redis:>10.1f}")
    print(f"together / one by one: wall {every[0] / alone[0]:.2%}, CPU "
          f"{(every[1] + every[2]) / max(alone[1] + alone[2], 1e-9):.2%} (process + redis)")
    # Every order is looked up once per reconcile period either way; the passes between
    # cost a scan each before, a due-only pass now.
    before = (RECONCILE_EVERY - 1) * (scan[1] + scan[2]) + every[1] + every[2]
    after = (RECONCILE_EVERY - 1) * (index[1] + index[2]) + every[1] + every[2]
    print(f"one reconcile period ({RECONCILE_EVERY} passes), CPU: full scan {before:.1f} ms, "
          f"index {after:.1f} ms ({after / before:.2%})")
    return fig


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.passes))
