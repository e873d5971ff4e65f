"""Latency benchmark: request to result of market orders on the paper broker at a steady
rate, for one worker process beside the bare loop (bench/bare_loop.py) in the same run,
with the Redis work each order costs.

    make bench-latency              # or: python -m bench.latency --rates 200,2000

Each consumer is started and warmed up first (its first orders load scripts and open
connections). Then a producer publishes one order at a time at each rate for --seconds, and
a reader blocked on the result streams notes when each result arrives: a request's latency
is from just before its XADD to its result in the reader's hands, on this process's
monotonic clock to the microsecond (the stream ids only give milliseconds). So it includes
the producer's and the reader's round trips, as a client's would; the bare loop, which
answers each request with one XADD and nothing else, shows what those cost.

The consumer process's CPU time per order over the measured phase (steadier than latency on
a shared machine, and at these rates what latency mostly waits for), and the Redis work:
the commands redis-server ran (``INFO commandstats``: each script call and each command a
script ran; the producer's XADDs and the reader's XREADs are not counted), the script
calls among them (each a round trip of the consumer's), and its CPU time; and the orders
each of the consumer's reads (XREADGROUP) took: its batches' mean size. Commands of the
worker's background tasks (heartbeat, tracker, positions fold) in that time are counted
too: they are part of what an order costs. --repeat N measures the pair N times,
alternating. --projector adds a third consumer each round (split): the worker folding no
positions beside an ``orderstream projector`` process, whose CPU per order is printed apart
(+ projector). --others N puts N positions of other accounts in the positions hash first
(written as a projector from before the accounts' sets of fields would, so the worker's
first fold indexes them): what an account's checks read of that hash should not grow with
the other accounts. --resting N has the consumer place N resting limit orders (GTC, far
from the price) before its warm-up: the worker's tracker looks each of them up one
reconcile period later (30 track intervals: 30 s by default), so with --seconds 45 the
first rate's phase holds that pass, and shows what it costs the orders beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer
from executor.model.positions import Position, position_key
from producer.contract import WireDecimal, encode

from .throughput import (
    KEYS,
    calls_by_command,
    cpu_seconds,
    order_data,
    prefill,
    redis_cpu_seconds,
    stop,
    wait_results,
)
from .tracker import resting_order

_OWN = ("xadd", "xread", "info")  # the producer's, the reader's, the bench's (see doc)
_SCRIPTS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
# rate -> p50, p90, p99, max (ms), commands, cpu_us (the consumer's), redis_us per order
Figures = dict[int, dict[str, float]]


async def paced(url: str, start: int, rate: int, seconds: float) -> list[float]:
    """Publish ``rate * seconds`` orders numbered from ``start``, one at a time at ``rate``,
    and return each one's latency in ms (see the module doc)."""
    total = int(rate * seconds)
    producer = aioredis.Redis.from_url(url)
    reader = aioredis.Redis.from_url(url)
    sent: dict[bytes, float] = {}
    arrived: dict[bytes, float] = {}
    last: dict[Any, Any] = {KEYS.completed: "$", KEYS.failed: "$"}

    async def read() -> None:
        while len(arrived) < total:
            reply: Any = await reader.xread(dict(last), block=1000, count=1000)
            now = time.perf_counter()
            for stream, entries in reply or []:
                last[stream.decode()] = entries[-1][0]
                for _, fields in entries:
                    arrived[fields[b"request_id"]] = now

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.05)  # the reader is blocked on the streams before the first XADD
    began = time.perf_counter()
    try:
        for i in range(total):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            t0 = time.perf_counter()
            entry_id: Any = await producer.xadd(KEYS.pending, {"data": order_data(start + i)})
            sent[entry_id] = t0
        await asyncio.wait_for(reading, 60)
    finally:
        reading.cancel()
        await producer.aclose()
        await reader.aclose()
    return sorted((arrived[rid] - t0) * 1000 for rid, t0 in sent.items())


def quantiles(latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": latencies[-1]}


async def measure(command: list[str], env: dict[str, str], url: str, rates: list[int],
                  seconds: float, beside: list[str] | None = None, others: int = 0,
                  resting: int = 0) -> Figures:
    """The figures of the consumer ``command``, and with ``beside`` (a process that works
    beside it: the positions projector) that one's CPU per order too (``beside_us``);
    ``others`` positions of other accounts in the hash first; ``resting`` resting orders
    placed before the warm-up."""
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    for start in range(0, others, 1000):
        await r.hset(KEYS.positions, mapping={
            position_key(f"other{i}", "BTCUSDT"): encode(Position(
                account=f"other{i}", symbol="BTCUSDT", quantity=WireDecimal("0.5"),
                average_price=WireDecimal("50000"), cost_basis=WireDecimal("25000")))
            for i in range(start, min(start + 1000, others))})
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    other = None if beside is None else subprocess.Popen(
        beside, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    figures: Figures = {}
    try:
        await prefill(r, resting, data=resting_order)
        warm = 200
        for i in range(warm):
            await r.xadd(KEYS.pending, {"data": order_data(i)})
        await wait_results(r, resting + warm, timeout=60 + resting / 100, poll=0.01)
        await asyncio.sleep(1)  # past the warm-up's background work
        done = warm
        for rate in rates:
            calls = await calls_by_command(r)
            cpu, own_cpu = await redis_cpu_seconds(r), cpu_seconds(proc.pid)
            other_cpu = 0.0 if other is None else cpu_seconds(other.pid)
            latencies = await paced(url, done, rate, seconds)
            n = len(latencies)
            done += n
            ran = {name: count - calls.get(name, 0)
                   for name, count in (await calls_by_command(r)).items()}
            figures[rate] = {**quantiles(latencies),
                             "commands": sum(c for name, c in ran.items()
                                             if name not in _OWN) / n,
                             # Each a round trip of its client's: a script cannot call one.
                             "scripts": sum(ran.get(name, 0) for name in _SCRIPTS) / n,
                             # Its batches' mean size (a blocked read that timed out empty
                             # is one more read).
                             "per_read": n / max(ran.get("xreadgroup", 0), 1),
                             "redis_us": (await redis_cpu_seconds(r) - cpu) / n * 1e6,
                             "cpu_us": (cpu_seconds(proc.pid) - own_cpu) / n * 1e6,
                             "beside_us": 0.0 if other is None else
                             (cpu_seconds(other.pid) - other_cpu) / n * 1e6}
    finally:
        stop(proc)
        if other is not None:
            stop(other)
        await r.aclose()
    return figures


async def run(rates: list[int], seconds: float, repeat: int = 1, url: str | None = None,
              projector: bool = False, others: int = 0, resting: int = 0
              ) -> list[tuple[Figures, ...]]:
    """Measure the bare loop and the worker ``repeat`` times, alternating, on a private
    redis-server (or on ``url``, flushed first), print the table, return the figures.
    ``projector``: a third consumer each round, the worker folding no positions beside an
    ``orderstream projector`` process that does (``split``). ``others``, ``resting``: as
    ``measure``'s."""
    server = None
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    env = dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0",
               ORDERSTREAM_METRICS_HOST="127.0.0.1", ORDERSTREAM_CONSUMER="bench-worker")
    runs: list[tuple[Figures, ...]] = []
    try:
        for _ in range(repeat):
            bare = await measure([sys.executable, "-m", "bench.bare_loop", "--url", url],
                                 env, url, rates, seconds, others=others, resting=resting)
            worker_command = [sys.executable, "-m", "executor", "--log-level", "WARNING",
                              "worker"]
            worker = await measure(worker_command, env, url, rates, seconds, others=others,
                                   resting=resting)
            if not projector:
                runs.append((bare, worker))
                continue
            split = await measure(
                worker_command, dict(env, ORDERSTREAM_PROJECT_POSITIONS="false"), url, rates,
                seconds, beside=[sys.executable, "-m", "executor", "--log-level", "WARNING",
                                 "projector"], others=others, resting=resting)
            runs.append((bare, worker, split))
    finally:
        if server is not None:
            server.stop()
    print(f"\nlatency: market orders on the paper broker, one at a time at each rate for "
          f"{seconds}s; ms from before XADD to the result read"
          + (f"; {others} positions of other accounts" if others else "")
          + (f"; {resting} resting orders" if resting else ""))
    print(f"{'':<10}{'rate/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'cmds/order':>12}{'scripts/order':>15}{'orders/read':>13}{'CPU us/order':>14}"
          f"{'redis us/order':>16}" + (f"{'+ projector':>13}" if projector else ""))
    for k, figures in enumerate(runs, 1):
        tag = f" {k}" if len(runs) > 1 else ""
        for name, figs in zip((f"bare{tag}", f"worker{tag}", f"split{tag}"), figures,
                              strict=False):
            for rate, f in figs.items():
                print(f"{name:<10}{rate:>8}{f['p50']:>9.2f}{f['p90']:>9.2f}{f['p99']:>9.2f}"
                      f"{f['max']:>9.2f}{f['commands']:>12.1f}{f['scripts']:>15.2f}"
                      f"{f['per_read']:>13.1f}{f['cpu_us']:>14.0f}"
                      f"{f['redis_us']:>16.1f}"
                      + (f"{f['beside_us']:>13.0f}" if projector else ""))
    for rate in rates:
        for name, column in (("worker", 1), ("split", 2))[:2 if projector else 1]:
            ratios = [figs[column][rate]["p50"] / figs[0][rate]["p50"] for figs in runs]
            print(f"{name} / bare loop p50 at {rate}/s: "
                  + ", ".join(f"{x:.1f}x" for x in ratios))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="200,2000", help="orders/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--projector", action="store_true",
                        help="also the worker folding no positions, beside an `orderstream "
                        "projector` process that does (the split rows; + projector: its CPU)")
    parser.add_argument("--others", type=int, default=0,
                        help="positions of other accounts in the positions hash first")
    parser.add_argument("--resting", type=int, default=0,
                        help="resting limit orders placed first, which the tracker looks "
                             "up 30 s later")
    args = parser.parse_args()
    asyncio.run(run([int(x) for x in args.rates.split(",")], args.seconds, args.repeat,
                    projector=args.projector, others=args.others, resting=args.resting))


if __name__ == "__main__":
    main()
