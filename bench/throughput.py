"""Throughput benchmark: N orders through one worker process on the paper broker at zero
latency, beside the bare loop (bench/bare_loop.py) measured in the same run.

    make bench                      # or: python -m bench.throughput --orders 50000

Throughput: the stream is filled first, then the consumer process starts; the rate is
measured between its first and last result (Redis server clock, from the entry ids), so
process start-up is not counted. CPU per order, of the consumer process and of
redis-server (``INFO cpu``), is counted from the first result on for the same reason; the
worker's is also given until its positions projection has folded the burst ("+ positions"),
since that fold lags a burst and does its share of the work after the last result.
Commands per order over the burst: those redis-server ran (``INFO commandstats``, each
script call and each command a script ran), the bench's own polling (XLEN, INFO) left out.
Latency: a paced producer publishes at --rate for --seconds while the consumer keeps up;
enqueue-to-result is the result entry's id time minus the request entry's id time, both
from the Redis clock. Figures are printed as a table with the ratio worker / bare loop;
--repeat N measures the pair N times, alternating, since one run on a shared machine
proves little. --projector adds a third consumer each round (split): the worker folding no
positions beside an ``orderstream projector`` process, whose CPU "+ positions" adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer
from executor.config import Settings
from executor.infra.streams import positions_caught_up
from executor.worker import Worker
from producer.contract import OrderType, Request, Side, encode, parse_decimal
from producer.keys import Keys

KEYS = Keys()


def order_data(i: int, account: str | None = None) -> bytes:
    """Market order ``i`` (of ``account``; None: the default account)."""
    side = Side.BUY if i % 2 else Side.SELL
    return encode(Request(client_order_id=f"bench-{i}", symbol="BTCUSDT", side=side,
                          type=OrderType.MARKET, quantity=parse_decimal("0.001"),
                          account=account))


def spread(accounts: int) -> Callable[[int], bytes]:
    """Market order ``i`` of paper account ``a<i % accounts>`` (``accounts_toml``): a batch
    then holds orders of several accounts, each checked and written on its own."""
    return lambda i: order_data(i, account=f"a{i % accounts}")


def accounts_toml(accounts: int) -> str:
    """The workers' configuration of ``spread``'s paper accounts."""
    return "".join(f'[accounts.a{n}]\nbroker = "paper"\n\n' for n in range(accounts))


async def prefill(r: aioredis.Redis, n: int, start: int = 0,
                  data: Callable[[int], bytes] = order_data, atomic: bool = False,
                  keys: Keys = KEYS) -> None:
    """XADD ``n`` requests to ``keys.pending``, 5,000 a pipeline; ``atomic``: each 5,000 in
    one MULTI, so readers blocked on the stream wake to full batches, not to its first
    entry (on a cluster, ``r`` is a client of the master holding ``keys``' slot)."""
    for chunk in range(0, n, 5_000):
        pipe = r.pipeline(transaction=atomic)
        for i in range(start + chunk, start + min(chunk + 5_000, n)):
            pipe.xadd(keys.pending, {"data": data(i)})
        await pipe.execute()


async def answered_by_a_worker(r: aioredis.Redis, settings: Settings, n: int) -> None:
    """Run a worker in this process until ``n`` requests have their results, then stop it
    cleanly; what it wrote stays."""
    worker = Worker(settings)
    await worker.start(serve_metrics=False)
    serving = asyncio.create_task(worker.serve())
    await wait_results(r, n, timeout=900)
    worker.stop()
    await serving
    await worker.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a consumer process and wait for it (killed if it will not stop)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0.0 where it cannot be read.

    Wall-clock rates swing with the load of a shared machine; the CPU time a consumer spends
    per order does much less, so both are printed."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The bench's own commands while it counts (polling the result streams' lengths, INFO).
_OWN = ("xlen", "info")


def ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


async def redis_cpu_seconds(r: aioredis.Redis) -> float:
    """User + system CPU time of redis-server, which runs the worker's Lua scripts."""
    info: Any = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def calls_by_command(r: aioredis.Redis) -> dict[str, int]:
    """How many times redis-server ran each command so far (``INFO commandstats``: each
    script call and each command a script ran)."""
    stats: Any = await r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()}


async def command_calls(r: aioredis.Redis, own: Sequence[str]) -> int:
    """The commands redis-server ran so far, less those of the kinds in ``own`` (the
    bench's own)."""
    return sum(n for name, n in (await calls_by_command(r)).items() if name not in own)


async def results_count(r: aioredis.Redis, keys: Keys = KEYS) -> int:
    return int(await r.xlen(keys.completed)) + int(await r.xlen(keys.failed))


async def wait_results(r: aioredis.Redis, n: int, timeout: float,
                       poll: float = 0.05, keys: Keys = KEYS) -> int:
    """Wait until there are at least ``n`` results; returns how many there are."""
    deadline = time.monotonic() + timeout
    while True:
        done = await results_count(r, keys)
        if done >= n:
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {n} results after {timeout}s")
        await asyncio.sleep(poll)


async def result_ids(r: aioredis.Redis, keys: Keys = KEYS) -> list[tuple[bytes, bytes]]:
    """(result entry id, request id) of every result."""
    out: list[tuple[bytes, bytes]] = []
    for stream in (keys.completed, keys.failed):
        entries: Any = await r.xrange(stream)
        out += [(eid, f[b"request_id"]) for eid, f in entries]
    return out


async def positions_folded(r: aioredis.Redis, keys: Keys = KEYS) -> bool:
    """Wait until the positions fold has folded every event written so far (TimeoutError
    after 300 s); False, at once, where no worker projects (nobody ever took the
    projector's lease) or there are no events."""
    if not (await r.xlen(keys.events)
            and await r.exists(keys.positions_lease, keys.positions_cursor)):
        return False
    if not await positions_caught_up(r, keys, 300, poll_s=0.01):
        raise TimeoutError("positions not caught up after 300 s")
    return True


def orders_per_s(result_ms: Sequence[int]) -> float:
    """Rate between the first and the last of these results (sorted entry-id times, Redis
    clock): the results after the first, over the span."""
    return (len(result_ms) - 1) * 1000 / max(result_ms[-1] - result_ms[0], 1)


async def publish_paced(r: aioredis.Redis, start: int, rate: int, seconds: float,
                        data: Callable[[int], bytes] = order_data, keys: Keys = KEYS) -> int:
    """Publish market orders ``start``, ``start + 1``, ... at ``rate`` a second for
    ``seconds``; returns how many were published."""
    total = int(rate * seconds)
    sent = 0
    began = time.monotonic()
    while sent < total:
        due = int((time.monotonic() - began) * rate)
        if due > sent:
            pipe = r.pipeline(transaction=False)
            for i in range(start + sent, start + min(due, total)):
                pipe.xadd(keys.pending, {"data": data(i)})
            await pipe.execute()
            sent = min(due, total)
        await asyncio.sleep(0.001)
    return total


async def paced_latencies(r: aioredis.Redis, answered: int, rate: int, seconds: float,
                          after_ms: int, data: Callable[[int], bytes] = order_data,
                          keys: Keys = KEYS) -> list[int]:
    """Publish at a steady ``rate`` (orders numbered from ``answered``, the results there are
    already), wait for every result, and return the enqueue-to-result times in ms of the
    requests published after ``after_ms`` (result id time minus request id time), sorted."""
    total = await publish_paced(r, answered, rate, seconds, data, keys)
    await wait_results(r, answered + total, timeout=120, keys=keys)
    return sorted(ms(e) - ms(rid) for e, rid in await result_ids(r, keys)
                  if ms(rid) > after_ms)


def p50_p99(latencies: Sequence[int]) -> tuple[float, float]:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [0.0] * 99
    return q[49], q[98]


async def measure(name: str, command: Sequence[str], env: dict[str, str], url: str,
                  n: int, rate: int, seconds: float, beside: Sequence[str] | None = None,
                  data: Callable[[int], bytes] = order_data) -> dict[str, float]:
    """The figures of the consumer ``command`` over the requests ``data`` makes; with
    ``beside`` (the positions projector, a process of its own), its CPU is counted in
    "+ positions" with the consumer's."""
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    await prefill(r, n, data=data)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    other = None if beside is None else subprocess.Popen(
        beside, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def beside_cpu() -> float:
        return 0.0 if other is None else cpu_seconds(other.pid)
    try:
        # Start-up (imports, connecting) is not per-order work: count from the first result.
        await wait_results(r, 1, timeout=60, poll=0.002)
        cpu_start, redis_start = cpu_seconds(proc.pid), await redis_cpu_seconds(r)
        beside_start = beside_cpu()
        calls = await command_calls(r, _OWN)
        first = await results_count(r)
        await wait_results(r, n, timeout=300)
        counted = max(n - first, 1)
        commands = (await command_calls(r, _OWN) - calls) / counted
        cpu_per_order = (cpu_seconds(proc.pid) - cpu_start) / counted
        redis_per_order = (await redis_cpu_seconds(r) - redis_start) / counted
        # The positions fold lags a burst and catches up after it: its cost is part of what
        # an order costs for good, so it is counted until the fold has caught up too.
        settled = cpu_per_order
        if await positions_folded(r):
            settled = (cpu_seconds(proc.pid) - cpu_start + beside_cpu() - beside_start
                       ) / counted
        ids = sorted(ms(e) for e, _ in await result_ids(r))
        throughput = orders_per_s(ids)
        # Latency under a steady load the consumer can keep up with.
        latencies = await paced_latencies(r, n, rate, seconds, after_ms=ids[-1], data=data)
    finally:
        stop(proc)
        if other is not None:
            stop(other)
        await r.aclose()
    p50, p99 = p50_p99(latencies)
    return {"orders_per_s": throughput, "p50_ms": p50, "p99_ms": p99,
            "latency_samples": len(latencies), "cpu_us": cpu_per_order * 1e6,
            "redis_us": redis_per_order * 1e6, "settled_us": settled * 1e6,
            "commands": commands}


async def run(args: argparse.Namespace) -> None:
    server = None
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        server = RedisServer()
        server.start()
        url = server.url
    runs: list[tuple[dict[str, float], ...]] = []
    configs = tempfile.TemporaryDirectory(prefix="throughput-")
    try:
        env = dict(os.environ, REDIS_URL=url, ORDERSTREAM_BATCH_SIZE=str(args.batch),
                   ORDERSTREAM_METRICS_PORT="0", ORDERSTREAM_METRICS_HOST="127.0.0.1",
                   ORDERSTREAM_CONSUMER="bench-worker")
        data: Callable[[int], bytes] = order_data
        if args.accounts > 1:
            config = Path(configs.name) / "accounts.toml"
            config.write_text(accounts_toml(args.accounts))
            env["ORDERSTREAM_CONFIG"] = str(config)
            data = spread(args.accounts)
        for _ in range(args.repeat):
            bare = await measure(
                "bare", [sys.executable, "-m", "bench.bare_loop", "--url", url, "--batch",
                         str(args.batch)], env, url, args.orders, args.rate, args.seconds,
                data=data)
            executor = [sys.executable, "-m", "executor", "--log-level", "WARNING"]
            worker = await measure("worker", [*executor, "worker"], env, url, args.orders,
                                   args.rate, args.seconds, data=data)
            if not args.projector:
                runs.append((bare, worker))
                continue
            split = await measure(
                "split", [*executor, "worker"],
                dict(env, ORDERSTREAM_PROJECT_POSITIONS="false"), url, args.orders,
                args.rate, args.seconds, beside=[*executor, "projector"], data=data)
            runs.append((bare, worker, split))
    finally:
        configs.cleanup()
        if server is not None:
            server.stop()
    over = f" over {args.accounts} accounts" if args.accounts > 1 else ""
    print(f"\nthroughput: {args.orders} market orders{over}, batch {args.batch}, paper broker "
          f"at zero latency; latency at {args.rate}/s for {args.seconds}s")
    print(f"{'':<12}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/order':>14}"
          f"{'redis us/order':>16}{'+ positions':>13}{'cmds/order':>12}")
    for k, figures in enumerate(runs, 1):
        tag = f" {k}" if len(runs) > 1 else ""
        for name, fig in zip((f"bare{tag}", f"worker{tag}", f"split{tag}"), figures,
                             strict=False):
            print(f"{name:<12}{fig['orders_per_s']:>10,.0f}{fig['p50_ms']:>9.1f}"
                  f"{fig['p99_ms']:>9.1f}{fig['cpu_us']:>14.1f}{fig['redis_us']:>16.1f}"
                  f"{fig['settled_us']:>13.1f}{fig['commands']:>12.1f}")
    ratios = [f[1]["orders_per_s"] / f[0]["orders_per_s"] for f in runs]
    cpu = [(b["cpu_us"] + b["redis_us"]) / (w["cpu_us"] + w["redis_us"]) for b, w, *_ in runs
           if w["cpu_us"] + w["redis_us"]]
    print_ratios("worker / bare loop throughput", ratios)
    if args.projector:
        print_ratios("split / bare loop throughput",
                     [f[2]["orders_per_s"] / f[0]["orders_per_s"] for f in runs])
    if cpu:
        print_ratios("bare loop / worker CPU per order (process + redis)", cpu)


def print_ratios(label: str, ratios: Sequence[float]) -> None:
    """``label: 12%, 14% (median 13%)``, one figure a round."""
    print(f"{label}: " + ", ".join(f"{x:.0%}" for x in ratios)
          + (f" (median {statistics.median(ratios):.0%})" if len(ratios) > 1 else ""))


def load_arguments(doc: str | None, orders: int, rate: int, seconds: float
                   ) -> argparse.ArgumentParser:
    """A burst of ``--orders`` in batches of ``--batch``, then ``--rate`` for ``--seconds``
    (bench/floor.py takes them too, with its own defaults)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=orders)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rate", type=int, default=rate, help="orders/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=seconds)
    return parser


def main() -> None:
    parser = load_arguments(__doc__, orders=30_000, rate=2_000, seconds=5.0)
    parser.add_argument("--accounts", type=int, default=1,
                        help="spread the orders round robin over this many paper accounts")
    parser.add_argument("--projector", action="store_true",
                        help="also the worker folding no positions beside an `orderstream "
                        "projector` process (the split rows; + positions counts its CPU)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure bare loop and worker this many times, alternating")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
