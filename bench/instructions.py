"""Instructions an order costs the worker and redis-server, counted by valgrind's callgrind,
beside the bare loop's counted the same way in the same run.

    python -m bench.instructions [--orders 2000] [--batch 200] [--repeat 1]
    python -m bench.instructions --orders 300 --batch 1     # ordinary load: a batch an order
    python -m bench.instructions --beside ../other-checkout  # two checkouts at the same time

On a shared machine the CPU time an order costs swings by a third between runs of one
checkout (other tenants' load, frequency, caches), so a change of a few percent is lost in
the other benchmarks' spread. The number of instructions executed swings far less: two
runs of one checkout in a burst agree within about 1% (but see the clock, below). It is
not time: a cache miss and a register move
count alike, and the kernel's work (syscalls, the network) is not counted, so it ranks
changes of the code's own work; the other benchmarks say what they are worth in time.

Each consumer (the bare loop, then the worker on the paper broker at zero latency) runs with
a private redis-server, both under callgrind with instrumentation off until a warm-up of
--warmup orders is answered (start-up, scripts loaded, caches filled). Instrumentation is
then switched on in both (``callgrind_control -i on``), --orders market orders are added
in MULTIs (so batches are full, as in ``make bench``), and it is switched off at the last
result. Printed: thousands of instructions per order (k Ir/order) of each process, and the
worker's over the bare loop's. The worker folds no positions (their fold lags a burst:
counted, it would depend on where the fold stood at the last result), unless --positions,
which counts until the fold has caught up. Under valgrind a process runs about fifty
times slower, so whatever the worker does by the clock (probes, heartbeats) weighs more
per order than it does at full speed: compare counts of one --orders and --batch. And
the busier the machine, the slower valgrind's processes run, so the more of that clock
work falls in each order: at a batch an order one checkout counted from 2,749k to 3,339k
instructions an order as other work came and went (in a burst, within about 1%). So
compare two checkouts measured at the same time, each slowed alike: ``--beside DIR`` runs
this benchmark from the checkout at DIR (its code; it needs this file) alongside, and
prints both and the change.
Needs valgrind (Debian's valgrind package); exits with status 2 without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server

from .throughput import (
    accounts_toml,
    order_data,
    positions_folded,
    prefill,
    spread,
    stop,
    wait_results,
)

_WRAPPER = """#!/bin/sh
# redis-server under callgrind (its --version asked as it is)
for a in "$@"; do [ "$a" = "--version" ] && exec {binary} --version; done
exec {callgrind} {binary} "$@"
"""


def callgrind(out: Path) -> list[str]:
    """The command prefix running a program under callgrind, instrumentation off."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}"]


def need_valgrind(name: str) -> None:
    """Exit with status 2, saying what to install, where valgrind is missing."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print(f"{name} needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        sys.exit(2)


def control(pid: int, *what: str) -> None:
    """``callgrind_control``: ``-i on``/``-i off`` switches instrumentation, ``-d`` writes
    what was counted (and returns once it is written)."""
    subprocess.run(["callgrind_control", *what, str(pid)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)


def counted(prefix: Path) -> int:
    """The instructions callgrind counted in every dump of one process (``prefix``*)."""
    total = 0
    for path in prefix.parent.glob(prefix.name + "*"):
        with open(path) as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith("totals:"))
    return total


async def measure(name: str, command: Callable[[str], list[str]], env: dict[str, str],
                  orders: int, warmup: int, positions: bool, workdir: Path,
                  data: Callable[[int], bytes] = order_data) -> tuple[float, float]:
    """(consumer, redis-server) instructions per order of one consumer's burst of the
    requests ``data`` makes; ``command`` makes the consumer's command line for its Redis
    url."""
    binary = find_redis_server()
    wrapper = workdir / f"redis-{name}.sh"
    wrapper.write_text(_WRAPPER.format(
        binary=shlex.quote(binary),
        callgrind=shlex.join(callgrind(workdir / f"{name}.redis.%p"))))
    wrapper.chmod(0o755)
    server = RedisServer(binary=str(wrapper), data_dir=workdir / f"data-{name}",
                         start_timeout=120)
    server.start()
    redis_out = workdir / f"{name}.redis.{server.pid}"
    r = aioredis.Redis.from_url(server.url)
    consumer_out = workdir / f"{name}.consumer"
    proc = subprocess.Popen([*callgrind(consumer_out), *command(server.url)],
                            env=dict(env, REDIS_URL=server.url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await prefill(r, warmup, data=data)
        await wait_results(r, warmup, timeout=900, poll=0.2)
        for pid in (proc.pid, server.pid):
            control(pid, "-i", "on")
        await prefill(r, orders, start=warmup, atomic=True, data=data)
        await wait_results(r, warmup + orders, timeout=3600, poll=0.2)
        if positions:
            await positions_folded(r)  # waits for the fold to catch up
        for pid in (proc.pid, server.pid):
            control(pid, "-i", "off")
            control(pid, "-d")
    finally:
        await r.aclose()
        stop(proc)
        server.stop(timeout=60)
    return counted(consumer_out) / orders, counted(redis_out) / orders


async def counts(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(name, consumer, redis-server) instructions per order of each measurement, the
    bare loop's and the worker's in turn, ``--repeat`` times."""
    env = dict(os.environ, ORDERSTREAM_BATCH_SIZE=str(args.batch),
               ORDERSTREAM_METRICS_PORT="0", ORDERSTREAM_METRICS_HOST="127.0.0.1",
               ORDERSTREAM_CONSUMER="bench-worker",
               ORDERSTREAM_PROJECT_POSITIONS="true" if args.positions else "false")

    def bare(url: str) -> list[str]:
        return [sys.executable, "-m", "bench.bare_loop", "--url", url, "--batch",
                str(args.batch)]

    def worker(url: str) -> list[str]:
        return [sys.executable, "-m", "executor", "--log-level", "WARNING", "worker"]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        data: Callable[[int], bytes] = order_data
        if args.accounts > 1:
            config = Path(tmp) / "accounts.toml"
            config.write_text(accounts_toml(args.accounts))
            env["ORDERSTREAM_CONFIG"] = str(config)
            data = spread(args.accounts)
        for k in range(1, args.repeat + 1):
            tag = f" {k}" if args.repeat > 1 else ""
            workdir = Path(tmp) / str(k)
            workdir.mkdir()
            b = await measure("bare", bare, env, args.orders, args.warmup, False, workdir,
                              data)
            w = await measure("worker", worker, env, args.orders, args.warmup,
                              args.positions, workdir, data)
            rows += [(f"bare{tag}", *b), (f"worker{tag}", *w)]
    return rows


def beside(args: argparse.Namespace) -> subprocess.Popen[str]:
    """This benchmark, with the same arguments, started from the checkout ``--beside``
    (its code: ``-m`` runs what is in the working directory), answering in JSON."""
    there = Path(args.beside)
    if not (there / "bench" / "instructions.py").is_file():
        raise SystemExit(f"{there} has no bench/instructions.py: copy this one there")
    command = [sys.executable, "-m", "bench.instructions", "--orders", str(args.orders),
               "--batch", str(args.batch), "--warmup", str(args.warmup),
               "--repeat", str(args.repeat), "--accounts", str(args.accounts), "--json"]
    if args.positions:
        command.append("--positions")
    return subprocess.Popen(command, cwd=there, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def answered(other: subprocess.Popen[str], name: str) -> list[tuple[str, float, float]]:
    """The rows the benchmark beside printed (its last line), or SystemExit saying why
    there are none."""
    out, err = other.communicate()
    lines = out.strip().splitlines()
    try:
        if other.returncode != 0 or not lines:
            raise ValueError(f"exit status {other.returncode}")
        return [(row, float(consumer), float(redis))
                for row, consumer, redis in json.loads(lines[-1])]
    except ValueError as exc:
        raise SystemExit(f"the benchmark beside, in {name}, gave no counts ({exc}; an "
                         f"older bench/instructions.py takes no --json: copy this one "
                         f"there):\n{err[-2000:]}") from None


async def run(args: argparse.Namespace) -> None:
    other = beside(args) if args.beside else None
    try:
        rows = await counts(args)
    except BaseException:
        if other is not None:
            # Interrupted, it stops what it started (its consumer, its redis-server).
            other.send_signal(signal.SIGINT)
            try:
                other.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                other.kill()
                other.communicate()
        raise
    if args.json:
        print(json.dumps(rows))
        return
    over = f" over {args.accounts} accounts" if args.accounts > 1 else ""
    print(f"\ninstructions: {args.orders} market orders{over}, batch {args.batch}, paper broker at "
          f"zero latency, {'with' if args.positions else 'without'} the positions fold; "
          "counted by callgrind")
    pairs = [("", rows)]
    if other is not None:
        there = Path(args.beside).resolve().name or str(args.beside)
        theirs = await asyncio.to_thread(answered, other, there)
        print(f"here: {Path.cwd().name}, beside it at the same time: {there}")
        pairs = [("here ", rows), (f"{there} ", theirs)]
    print(f"{'':<24}{'consumer k Ir/order':>21}{'redis k Ir/order':>18}")
    for label, some in pairs:
        for name, consumer, redis in some:
            print(f"{label + name:<24}{consumer / 1000:>21,.1f}{redis / 1000:>18,.1f}")
    for label, some in pairs:
        for k in range(0, len(some), 2):
            (_, bc, br), (name, wc, wr) = some[k], some[k + 1]
            print(f"{label}{name} / bare: consumer {wc / bc:.2f}x, redis {wr / br:.2f}x")
    if other is not None:
        (_, mine), (there_label, theirs) = pairs
        for (name, wc, wr), (_, tc, tr) in zip(mine[1::2], theirs[1::2], strict=True):
            print(f"here / {there_label.strip()} ({name}): consumer {wc / tc - 1:+.1%}, "
                  f"redis {wr / tr - 1:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=400,
                        help="orders answered before counting starts")
    parser.add_argument("--positions", action="store_true",
                        help="the worker folds positions too, counted until caught up")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--accounts", type=int, default=1,
                        help="spread the orders round robin over this many paper accounts")
    parser.add_argument("--beside", metavar="DIR",
                        help="measure the checkout at DIR too, at the same time (so whatever "
                             "else the machine runs slows both alike), and print the change")
    parser.add_argument("--json", action="store_true",
                        help="print the rows as one JSON line (what --beside reads)")
    args = parser.parse_args()
    need_valgrind("bench.instructions")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
