"""Soak: as many orders as one worker takes for a few minutes, with short retentions, and
Redis memory over time, which must stay flat once the retentions have come round.

    python -m bench.soak [--duration 180] [--retention-ms 15000] [--sample 10]

A private redis-server and one worker process on the paper broker (zero latency), every
retention set to ``--retention-ms``: the results' and the events' (the positions fold and
the retention window), the order records' TTL (``order_ttl_ms``), the paper exchange's
finished orders. The producer publishes as fast as the worker answers and its positions
fold keeps up: it keeps the requests stream at most ``--backlog`` deep (an answered
request leaves it) and waits while the fold's oldest unfolded event is older than
``--fold-lag-ms``, so no backlog grows memory for a reason of its own (events not yet
folded are kept, by design). Orders: market buys and sells, and one in ten a resting
limit order cancelled two seconds later. Printed every ``--sample`` seconds: requests
answered, ``used_memory``, the number of keys, the streams' lengths, the open orders, the
paper exchange's orders and the fold's lag. At the end: the memory after the warm-up (three
retentions) and its growth per request answered since, about 0 when nothing leaks (a
deployment that trimmed nothing grew by about 4 KB per order).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.background.retention import POSITIONS, reader_lags
from producer.contract import (
    Action,
    OrderType,
    Request,
    Side,
    TimeInForce,
    encode,
    parse_decimal,
)
from producer.keys import Keys

from .throughput import stop

KEYS = Keys()
CANCEL_AFTER_S = 2.0  # a resting order is cancelled this long after it was placed


@dataclass(slots=True)
class Sample:
    at: float  # seconds since the start
    answered: int
    used_memory: int
    keys: int
    pending: int
    completed: int
    failed: int
    events: int
    open: int
    paper: int
    fold_lag: float  # seconds: age of the oldest event the positions fold has not folded


def order(i: int) -> tuple[bytes, str | None]:
    """The i-th request; with the client id of a resting order to cancel later."""
    cid = f"soak-{i}"
    if i % 10 == 9:
        return encode(Request(client_order_id=cid, symbol="BTCUSDT", side=Side.BUY,
                              type=OrderType.LIMIT, quantity=parse_decimal("0.001"),
                              price=parse_decimal("40000"),
                              time_in_force=TimeInForce.GTC)), cid
    return encode(Request(client_order_id=cid, symbol="BTCUSDT",
                          side=Side.BUY if i % 2 else Side.SELL, type=OrderType.MARKET,
                          quantity=parse_decimal("0.001"))), None


def cancel(cid: str) -> bytes:
    return encode(Request(action=Action.CANCEL, client_order_id=cid))


def worker_env(url: str, retention_ms: int) -> dict[str, str]:
    retention = str(retention_ms)
    return dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0",
                ORDERSTREAM_METRICS_HOST="127.0.0.1", ORDERSTREAM_CONSUMER="soak-worker",
                ORDERSTREAM_ORDER_TTL_MS=retention,
                ORDERSTREAM_RESULTS_RETENTION_MS=retention,
                ORDERSTREAM_EVENTS_RETENTION_MS=retention,
                ORDERSTREAM_ACCOUNTS_DEFAULT_RETENTION_MS=retention,
                ORDERSTREAM_RETENTION_INTERVAL_MS=str(max(retention_ms // 5, 200)))


async def sample(r: aioredis.Redis, start: float, sent: int) -> Sample:
    async with r.pipeline(transaction=False) as pipe:
        pipe.info("memory")
        pipe.dbsize()
        for stream in (KEYS.pending, KEYS.completed, KEYS.failed, KEYS.events):
            pipe.xlen(stream)
        pipe.scard(KEYS.open)
        pipe.hlen(KEYS.paper("default", "orders"))
        memory, keys, pending, completed, failed, events, open_, paper = await pipe.execute()
    lag = (await reader_lags(r, KEYS))[POSITIONS]
    # An answered request leaves the requests stream: what is in it is not answered yet.
    return Sample(time.monotonic() - start, sent - int(pending), int(memory["used_memory"]),
                  int(keys), int(pending), int(completed), int(failed), int(events),
                  int(open_), int(paper), lag)


def row(s: Sample) -> str:
    return (f"{s.at:>7.0f}{s.answered:>10}{s.used_memory / 1e6:>11.2f}{s.keys:>8}"
            f"{s.pending:>9}{s.completed:>11}{s.failed:>8}{s.events:>9}{s.open:>7}{s.paper:>8}"
            f"{s.fold_lag:>7.1f}")


async def produce(r: aioredis.Redis, duration: float, backlog: int, fold_lag_s: float,
                  every: float, start: float) -> list[Sample]:
    """Publish for ``duration`` seconds, keeping at most ``backlog`` requests unanswered
    and the positions fold at most ``fold_lag_s`` behind; sample every ``every`` s."""
    numbers = itertools.count()
    resting: deque[tuple[float, str]] = deque()
    sent = 0
    samples = [await sample(r, start, sent)]
    print(row(samples[-1]), flush=True)
    next_sample = every
    while (now := time.monotonic() - start) < duration:
        waiting = int(await r.xlen(KEYS.pending))
        if (await reader_lags(r, KEYS))[POSITIONS] > fold_lag_s:
            waiting = backlog  # the fold is behind: let it catch up
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(max(backlog - waiting, 0)):
                data, cid = order(next(numbers))
                pipe.xadd(KEYS.pending, {"data": data})
                sent += 1
                if cid is not None:
                    resting.append((now, cid))
            while resting and now - resting[0][0] >= CANCEL_AFTER_S:
                pipe.xadd(KEYS.pending, {"data": cancel(resting.popleft()[1])})
                sent += 1
            await pipe.execute()
        if now >= next_sample:
            samples.append(await sample(r, start, sent))
            print(row(samples[-1]), flush=True)
            next_sample += every
        await asyncio.sleep(0.01)
    return samples


async def run(duration: float, retention_ms: int, every: float, backlog: int,
              fold_lag_ms: int = 2_000) -> list[Sample]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp))
        with server:
            r = aioredis.Redis.from_url(server.url)
            proc = subprocess.Popen(
                [sys.executable, "-m", "executor", "--log-level", "WARNING", "worker"],
                env=worker_env(server.url, retention_ms), stdout=subprocess.DEVNULL)
            try:
                print(f"soak: one worker, paper broker, retentions {retention_ms} ms, "
                      f"{duration:.0f} s, backlog at most {backlog}, fold lag at most "
                      f"{fold_lag_ms} ms")
                print(f"{'s':>7}{'answered':>10}{'memory MB':>11}{'keys':>8}{'pending':>9}"
                      f"{'completed':>11}{'failed':>8}{'events':>9}{'open':>7}{'paper':>8}"
                      f"{'fold s':>7}")
                samples = await produce(r, duration, backlog, fold_lag_ms / 1000, every,
                                        time.monotonic())
            finally:
                stop(proc)
                await r.aclose()
    summarize(samples, 3 * retention_ms / 1000)
    return samples


def summarize(samples: list[Sample], warm_up_s: float) -> None:
    last = samples[-1]
    rate = last.answered / max(last.at, 1e-9)
    print(f"{last.answered} requests answered in {last.at:.0f} s ({rate:,.0f}/s)")
    warm = [s for s in samples if s.at >= warm_up_s]
    if len(warm) < 2:
        print(f"too short to tell: no two samples after the warm-up ({warm_up_s:.0f} s)")
        return
    memory = [s.used_memory for s in warm]
    orders = warm[-1].answered - warm[0].answered
    # The trims come in steps (intervals), so memory saws: the growth is the slope of the
    # least-squares line through the samples, not the difference of two of them.
    slope = statistics.linear_regression([s.answered for s in warm], memory).slope \
        if orders else 0.0
    print(f"after the warm-up ({warm_up_s:.0f} s): used_memory {min(memory) / 1e6:.2f} to "
          f"{max(memory) / 1e6:.2f} MB (median {statistics.median(memory) / 1e6:.2f}); "
          f"{orders} requests answered since, growth {slope:+.1f} bytes per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds")
    parser.add_argument("--retention-ms", type=int, default=15_000)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--backlog", type=int, default=1_000,
                        help="most requests waiting in the stream")
    parser.add_argument("--fold-lag-ms", type=int, default=2_000,
                        help="most lag of the positions fold before publishing waits")
    args = parser.parse_args()
    asyncio.run(run(args.duration, args.retention_ms, args.sample, args.backlog,
                    args.fold_lag_ms))


if __name__ == "__main__":
    main()

