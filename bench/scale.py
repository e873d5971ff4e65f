"""Fleet benchmark: 1, 2 and 4 worker processes on one redis-server (paper broker at zero
latency), one table row per fleet size, so the scaling and the Redis ceiling are visible.

    make bench-scale                # or: python -m bench.scale --orders 20000 --workers 1,2,4

Each fleet starts from a flushed Redis. Its workers start on an empty stream; once every
one of them is reading (every lane blocked in XREADGROUP), N market orders are added, 5,000
at a time in one MULTI, so all of them start on the backlog at once with full batches and
no worker's start-up is counted as a smaller fleet's work. (The backlog cannot wait behind
the group's cursor instead: the workers' retention deletes what the group has passed.)
CPU is counted from the end of the fill (so its XADDs are not), over the orders answered
after it. Then, per fleet size:

- orders/s between the first and the last result (Redis clock, from the entry ids), and the
  ratio to the first fleet size of the list, measured in the same run;
- worker CPU per order: the sum over the worker processes (``/proc/<pid>/stat``);
- redis-server CPU (``INFO cpu``, user + sys) per order, its share of one core over the
  burst, and the ceiling it implies: the orders/s at which redis-server would be 100% of a
  core, however many workers run;
- p50/p99 enqueue-to-result latency (result id time minus request id time) at a steady
  --rate for --seconds, once the positions fold has caught up with the burst.

The burst's CPU figures leave out the positions fold's catching up after the last result
(bench/throughput.py's "+ positions" column counts it for one worker). --repeat N measures
every fleet size N times, alternating. The machine's cores are printed in the header: on a
machine with fewer cores than workers plus redis-server, the workers share them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from devtools.redis_server import RedisServer
from producer.keys import GROUP, Keys

from .throughput import (
    KEYS,
    cpu_seconds,
    ms,
    order_data,
    orders_per_s,
    p50_p99,
    paced_latencies,
    positions_folded,
    prefill,
    redis_cpu_seconds,
    result_ids,
    results_count,
    wait_results,
)

T = TypeVar("T")
START_TIMEOUT_S = 60.0  # for every worker of a fleet to be reading


@dataclass(frozen=True, slots=True)
class Fleet:
    """What one fleet size measured; CPU figures are per order of the burst."""

    workers: int
    orders_per_s: float
    worker_us: float  # summed over the worker processes
    redis_us: float  # of the busiest redis-server (of a cluster's masters; else the one)
    redis_share: float  # its CPU seconds per wall second over the burst
    p50_ms: float
    p99_ms: float
    latency_samples: int
    requests: int  # published: the burst and the paced phase
    results: int  # entries in orders:completed and orders:failed
    answered_once: int  # requests with exactly one result
    unacked: int  # entries still pending in the consumer group at the end
    node_us: tuple[float, ...] = ()  # per redis-server (each master of a cluster), per order
    partitions: int = 0  # 0: not partitioned (bench/partitions.py sets it)
    masters: tuple[int, ...] = ()  # partition n's master, an index into node_us

    @property
    def redis_ceiling(self) -> float:
        """Orders/s at which the busiest redis-server would spend a whole core (the others
        taking their shares of the orders as in the burst)."""
        return 1e6 / self.redis_us if self.redis_us else float("inf")

    @property
    def label(self) -> str:
        """Its row's name: the fleet size, or the partitions and their masters."""
        if not self.partitions:
            return str(self.workers)
        return f"{self.partitions} on " + ",".join(f"m{m}" for m in self.masters)

    @property
    def name(self) -> str:
        if not self.partitions:
            return f"{self.workers} workers"
        return (f"{self.workers} workers on {self.partitions} partition(s) (masters "
                + ", ".join(map(str, self.masters)) + ")")

    @property
    def exactly_once(self) -> bool:
        return (self.results == self.answered_once == self.requests
                and self.unacked == 0)


def fleet_cpu_seconds(fleet: Sequence[WorkerProcess]) -> float:
    return sum(cpu_seconds(w.proc.pid) for w in fleet)


def check_alive(fleet: Sequence[WorkerProcess], when: str) -> None:
    """Raise, with the end of its log, if a worker of the fleet has exited (its log lives in
    a directory that is gone once the bench ends)."""
    for w in fleet:
        if not w.alive():
            tail = w.log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"worker {w.consumer} exited {when} (status "
                               f"{w.proc.returncode}); its log ends:\n" + "\n".join(tail))


async def all_reading(nodes: Sequence[aioredis.Redis],
                      fleet: Sequence[WorkerProcess]) -> None:
    """Wait until every worker of the fleet is reading the requests, on any of the
    redis-servers ``nodes`` (a worker process serves one stream).

    Counted from CLIENT LIST (a reading worker has a connection blocked in XREADGROUP: the
    lane that holds its turn to read, pipeline/turn.py, while the others wait for it): a
    consumer that has read nothing yet is not in XINFO CONSUMERS on Redis >= 7.0."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        check_alive(fleet, "at start-up")
        blocked = 0
        for r in nodes:
            clients: Any = await r.client_list()
            blocked += sum(1 for c in clients
                           if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))
        if blocked >= len(fleet):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{blocked} of {len(fleet)} workers reading "
                               f"after {START_TIMEOUT_S}s")
        await asyncio.sleep(0.02)


@dataclass(frozen=True, slots=True)
class Stream:
    """Where the bench publishes one share of the orders: a client of the redis-server that
    holds the stream's keys (on a cluster, the master of their slot), the keys (a partition's
    prefix, or the unpartitioned ``orders``), and the requests (their account)."""

    r: aioredis.Redis
    keys: Keys = KEYS
    data: Callable[[int], bytes] = order_data


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole shares, the larger ones first."""
    return [total // parts + (k < total % parts) for k in range(parts)]


async def every_result(streams: Sequence[Stream]) -> list[list[tuple[bytes, bytes]]]:
    """Each stream's results: (result entry id, request id)."""
    return [await result_ids(s.r, s.keys) for s in streams]


async def measure_burst(fleet: Sequence[WorkerProcess], streams: Sequence[Stream],
                        nodes: Sequence[aioredis.Redis], orders: int, rate: int,
                        seconds: float) -> Fleet:
    """Once every worker of ``fleet`` is reading: the burst of ``orders`` (split evenly over
    ``streams``), then the paced phase at ``rate`` (split likewise); CPU of the fleet and of
    each redis-server of ``nodes``. The streams start empty (flushed)."""
    await all_reading(nodes, fleet)
    burst = shares(orders, len(streams))
    await asyncio.gather(*(prefill(s.r, n, data=s.data, atomic=True, keys=s.keys)
                           for s, n in zip(streams, burst, strict=True)))
    cpu_start = fleet_cpu_seconds(fleet)
    redis_start = [await redis_cpu_seconds(r) for r in nodes]
    began = time.monotonic()
    counted = max(orders - sum([await results_count(s.r, s.keys) for s in streams]), 1)
    await asyncio.gather(*(wait_results(s.r, n, timeout=300, poll=0.01, keys=s.keys)
                           for s, n in zip(streams, burst, strict=True)))
    wall = time.monotonic() - began
    check_alive(fleet, "during the burst")
    worker_cpu = fleet_cpu_seconds(fleet) - cpu_start
    redis_cpu = [await redis_cpu_seconds(r) - start
                 for r, start in zip(nodes, redis_start, strict=True)]
    # Every stream's results on one time line (the masters of a local cluster share the
    # machine's clock).
    ids = sorted(ms(e) for results in await every_result(streams) for e, _ in results)
    await asyncio.gather(*(positions_folded(s.r, s.keys) for s in streams))
    paced = shares(rate, len(streams))
    latencies = sorted(x for part in await asyncio.gather(*(
        paced_latencies(s.r, n, pace, seconds, after_ms=ids[-1], data=s.data, keys=s.keys)
        for s, n, pace in zip(streams, burst, paced, strict=True))) for x in part)
    # A request is its stream's entry id: two streams on two servers may use the same id.
    answers = Counter((k, rid) for k, results in enumerate(await every_result(streams))
                      for _, rid in results)
    unacked = 0
    for s in streams:
        pending: Any = await s.r.xpending(s.keys.pending, GROUP)
        unacked += int(pending["pending"])
    busiest = max(range(len(nodes)), key=redis_cpu.__getitem__)
    p50, p99 = p50_p99(latencies)
    return Fleet(workers=len(fleet), orders_per_s=orders_per_s(ids),
                 worker_us=worker_cpu / counted * 1e6,
                 redis_us=redis_cpu[busiest] / counted * 1e6,
                 redis_share=redis_cpu[busiest] / wall, p50_ms=p50, p99_ms=p99,
                 latency_samples=len(latencies),
                 requests=orders + sum(int(pace * seconds) for pace in paced),
                 results=sum(answers.values()),
                 answered_once=sum(1 for n in answers.values() if n == 1), unacked=unacked,
                 node_us=tuple(cpu / counted * 1e6 for cpu in redis_cpu))


async def measure_fleet(url: str, workers: int, orders: int, rate: int, seconds: float,
                        batch: int, logdir: Path) -> Fleet:
    r = aioredis.Redis.from_url(url)
    fleet: list[WorkerProcess] = []
    try:
        await r.flushall()
        for k in range(workers):  # one at a time: those started are stopped if one fails
            name = f"scale-{workers}-{k}"
            fleet.append(WorkerProcess(url, name, logdir / f"{name}.log",
                                       ORDERSTREAM_BATCH_SIZE=str(batch),
                                       ORDERSTREAM_LOG_LEVEL="WARNING"))
        return await measure_burst(fleet, [Stream(r)], [r], orders, rate, seconds)
    finally:
        for w in fleet:
            w.stop(timeout_s=15)
        await r.aclose()


async def run(orders: int = 20_000, rate: int = 200, seconds: float = 5.0,
              workers: Sequence[int] = (1, 2, 4), repeat: int = 3, batch: int = 200,
              url: str | None = None) -> list[list[Fleet]]:
    """Measure every fleet size ``repeat`` times (rounds alternate the sizes) on the Redis at
    ``url`` (flushed), else on a private redis-server; print the table and return it."""
    server = None
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    rounds: list[list[Fleet]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="scale-") as logs:
            for _ in range(repeat):
                rounds.append([await measure_fleet(url, n, orders, rate, seconds, batch,
                                                   Path(logs)) for n in workers])
    finally:
        if server is not None:
            server.stop()
    print_table(rounds, orders=orders, rate=rate, seconds=seconds, batch=batch)
    return rounds


def print_table(rounds: Sequence[Sequence[Fleet]], *, orders: int, rate: int,
                seconds: float, batch: int) -> None:
    base = rounds[0][0].workers
    print(f"\nscale: {orders} market orders per fleet, batch {batch}, paper broker at zero "
          f"latency, one redis-server; latency at {rate}/s for {seconds}s")
    print_machine("redis-server")
    print_rows(rounds, first="workers", ratio=f"x {base}", nodes=["redis us"], notes=(
        f"x {base}: orders/s over that of {base} worker(s) in the same round; worker us, "
        "redis us: CPU per order of the burst\n(the workers' summed); redis core: "
        "redis-server's share of one core over the burst; redis cap/s: the orders/s at "
        "which it would be a whole core"))


def print_machine(servers: str) -> None:
    print(f"machine: {os.cpu_count()} CPU cores (os.cpu_count()), shared by {servers}, "
          "the workers and this bench")


def print_rows(rounds: Sequence[Sequence[Fleet]], *, first: str, ratio: str,
               nodes: Sequence[str], notes: str, width: int = 10) -> None:
    """A row per fleet of each round (its ``label``; the ratio is to the round's first
    fleet), a column of CPU per order per redis-server (``nodes`` are their titles), the
    ``notes``, a row of medians per fleet when there are several rounds, and whether every
    request was answered exactly once."""
    print(f"{first:<{width}}{'orders/s':>10}{ratio:>7}{'worker us':>11}"
          + "".join(f"{title:>10}" for title in nodes)
          + f"{'redis core':>12}{'redis cap/s':>13}{'p50 ms':>8}{'p99 ms':>8}")
    for k, fleets in enumerate(rounds, 1):
        tag = f" ({k})" if len(rounds) > 1 else ""
        for f in fleets:
            print_row(f"{f.label}{tag}", f, f.orders_per_s / fleets[0].orders_per_s, width)
    print(notes)
    if len(rounds) > 1:
        print(f"medians of {len(rounds)} rounds:")
        for i, f in enumerate(rounds[0]):
            same = [fleets[i] for fleets in rounds]
            print_row(f.label, median_fleet(same), statistics.median(
                x.orders_per_s / fleets[0].orders_per_s
                for x, fleets in zip(same, rounds, strict=True)), width)
    wrong = [f for fleets in rounds for f in fleets if not f.exactly_once]
    if wrong:
        for f in wrong:
            print(f"NOT EXACTLY ONCE with {f.name}: {f.requests} requests, "
                  f"{f.results} results, {f.answered_once} answered once, {f.unacked} "
                  "pending")
    else:
        print("every request answered exactly once, nothing left pending")


def print_row(label: str, f: Fleet, ratio: float, width: int) -> None:
    print(f"{label:<{width}}{f.orders_per_s:>10,.0f}{ratio:>7.2f}{f.worker_us:>11.1f}"
          + "".join(f"{us:>10.1f}" for us in f.node_us or (f.redis_us,))
          + f"{f.redis_share:>12.0%}{f.redis_ceiling:>13,.0f}{f.p50_ms:>8.1f}"
          f"{f.p99_ms:>8.1f}")


def median_fleet(same: Sequence[Fleet]) -> Fleet:
    """The figures of one fleet measured in several rounds, each the median of its rounds
    (the exactly-once counts are the first round's: each round is checked on its own)."""
    def median(figure: Callable[[Fleet], float]) -> float:
        return statistics.median(figure(f) for f in same)

    return replace(same[0], orders_per_s=median(lambda f: f.orders_per_s),
                   worker_us=median(lambda f: f.worker_us),
                   redis_us=median(lambda f: f.redis_us),
                   redis_share=median(lambda f: f.redis_share),
                   p50_ms=median(lambda f: f.p50_ms), p99_ms=median(lambda f: f.p99_ms),
                   node_us=tuple(statistics.median(us)
                                 for us in zip(*(f.node_us for f in same), strict=True)))


async def stopped_by_sigterm(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` with SIGTERM cancelling it, so its clean-up (the workers' stop, the
    redis-server's) runs as on Ctrl-C instead of the process dying at once."""
    task = asyncio.create_task(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def bench_parser(doc: str | None, per: str) -> argparse.ArgumentParser:
    """A parser with the options of every fleet bench; ``per``: what one burst is of."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help=f"burst per {per}")
    parser.add_argument("--rate", type=int, default=200, help="orders/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3,
                        help=f"measure every {per} this many times, alternating")
    parser.add_argument("--batch", type=int, default=200)
    return parser


def numbers(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """The comma-separated numbers an option was given (a usage error if they are not)."""
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        parser.error(f"{option} must be numbers separated by commas, got {text!r}")


def exit_status(work: Coroutine[Any, Any, Sequence[Sequence[Fleet]]], stopped: str) -> int:
    """Run a bench: 0 when every request was answered exactly once, else 1; 143 when SIGTERM
    stopped it (``stopped``, what its clean-up stopped, is said on stderr)."""
    try:
        rounds = asyncio.run(stopped_by_sigterm(work))
    except asyncio.CancelledError:
        print(f"stopped by SIGTERM; {stopped} are stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0 if all(f.exactly_once for fleets in rounds for f in fleets) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "fleet size")
    parser.add_argument("--workers", default="1,2,4",
                        help="fleet sizes, comma-separated (the first is the ratios' base)")
    args = parser.parse_args(argv)
    sizes = numbers(parser, "--workers", args.workers)
    if not sizes or min(sizes) < 1 or args.orders < 2:
        parser.error("--workers needs sizes >= 1 and --orders at least 2")
    return exit_status(run(args.orders, args.rate, args.seconds, sizes, args.repeat,
                           args.batch, os.environ.get("BENCH_REDIS_URL")),
                       "the workers and redis-server")


if __name__ == "__main__":
    sys.exit(main())
