"""What ``[redis] durability = "wait"`` costs: enqueue-to-result latency and throughput of
one worker on the paper broker, with and without waiting for a replica (WAIT 1) before each
batch is sent, measured alternately in the same run against the same primary and replica.

    python -m bench.durability [--orders 5000 --rate 500 --seconds 5 --repeat 2]

Both servers are private redis-servers on loopback, so the figure is the floor of the cost:
a replica in another zone adds its round trip to every batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer

from .throughput import measure


async def wait_online(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        for _ in range(200):
            info: Any = await r.info("replication")
            if int(info["connected_slaves"]) >= 1 and info["slave0"]["state"] == "online":
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the replica never came online")
    finally:
        await r.aclose()


async def run(orders: int, rate: int, seconds: float, repeat: int) -> None:
    primary = RedisServer()
    primary.start()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    runs: list[tuple[dict[str, float], dict[str, float]]] = []
    try:
        await wait_online(primary.url)
        env = dict(os.environ, REDIS_URL=primary.url, ORDERSTREAM_METRICS_PORT="0",
                   ORDERSTREAM_METRICS_HOST="127.0.0.1", ORDERSTREAM_CONSUMER="bench-worker")
        command = [sys.executable, "-m", "executor", "--log-level", "WARNING", "worker"]
        for _ in range(repeat):
            plain = await measure("none", command, env, primary.url, orders, rate, seconds)
            waited = await measure("wait", command, dict(
                env, ORDERSTREAM_REDIS_DURABILITY="wait", ORDERSTREAM_REDIS_WAIT_REPLICAS="1"),
                primary.url, orders, rate, seconds)
            runs.append((plain, waited))
    finally:
        replica.stop()
        primary.stop()
    print(f"\ndurability: {orders} market orders through one worker on the paper broker, "
          f"then latency at {rate}/s for {seconds}s; a replica on loopback")
    print(f"{'':<14}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'redis us/order':>16}")
    for k, pair in enumerate(runs, 1):
        tag = f" {k}" if len(runs) > 1 else ""
        for name, fig in zip((f"none{tag}", f"wait{tag}"), pair, strict=True):
            print(f"{name:<14}{fig['orders_per_s']:>10,.0f}{fig['p50_ms']:>9.1f}"
                  f"{fig['p99_ms']:>9.1f}{fig['redis_us']:>16.1f}")
    p50 = [w["p50_ms"] - n["p50_ms"] for n, w in runs]
    p99 = [w["p99_ms"] - n["p99_ms"] for n, w in runs]
    speed = [w["orders_per_s"] / n["orders_per_s"] for n, w in runs]
    print("wait - none, p50 ms: " + ", ".join(f"{x:+.1f}" for x in p50)
          + "; p99 ms: " + ", ".join(f"{x:+.1f}" for x in p99))
    print("wait / none throughput: " + ", ".join(f"{x:.0%}" for x in speed)
          + (f" (median {statistics.median(speed):.0%})" if len(speed) > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--rate", type=int, default=500, help="orders/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.rate, args.seconds, args.repeat))


if __name__ == "__main__":
    main()
