"""What the shared rate limiter costs: round trips of its acquire script on a private
redis-server, for a paper account (no caps: only the pause and ban are checked) and for a
Binance account (three windows and a rate), and the cost per order at a batch size.

    python -m bench.limiter [--calls 5000] [--batch 200]

The worker calls the script once per batch per account (``submit_many``), so the cost per
order is the per-call figure divided by the batch size; bench.throughput measures the
whole worker, where this is lost in the noise of a shared machine. "redis us/call" is
the server's own time in the script (INFO commandstats), free of client and network.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.safety.limits import AccountLimits, Limiter, plan_for
from producer.keys import Keys

GENEROUS = AccountLimits(weight_per_minute=10**12, orders_per_10s=10**12,
                         orders_per_day=10**12, orders_per_second=Decimal(10**9),
                         burst=10**9)


async def per_call_us(limiter: Limiter, calls: int, batch: int) -> float:
    for _ in range(100):  # warm: script loaded, connection open
        await limiter.acquire(batch, 1, 1)
    started = time.perf_counter()
    for _ in range(calls):
        await limiter.acquire(batch, 1, 1)
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp))
        with server:
            r = aioredis.Redis.from_url(server.url)
            try:
                print(f"acquire script, {calls} calls of {batch} orders each")
                print(f"{'account':<28}{'us/call':>10}{'us/order':>10}{'redis us/call':>15}")
                for name, limits, broker in (("paper (pause/ban only)", None, "paper"),
                                             ("binance (3 windows + rate)", GENEROUS,
                                              "binance")):
                    limiter = Limiter(r, Keys(), broker, plan_for(limits, broker))
                    await r.config_resetstat()
                    us = await per_call_us(limiter, calls, batch)
                    stats: Any = await r.info("commandstats")
                    in_redis = float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0))
                    print(f"{name:<28}{us:>10.1f}{us / batch:>10.2f}{in_redis:>15.1f}")
            finally:
                await r.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.batch))
