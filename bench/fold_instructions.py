"""Instructions the positions fold costs an order, counted by valgrind's callgrind in an
``orderstream projector`` process: this checkout's, and each ``--beside`` checkout's in
turn, on the same events.

    python -m bench.fold_instructions [--orders 3000] [--rounds 2] [--beside DIR ...]

The fold's CPU time (``python -m bench.projector``) swings by 5 to 10% between runs on a
shared machine, which hides a change of a few per cent; the instructions it executes swing
by about 2%. A worker that does not project answers --orders market orders on a private
redis-server (bench/projector.py ``fill_events``: one events entry an order, with its
fill). Then, each round, for each checkout: the positions, their indexes, the cursor and
the assets are deleted and the risk state is restored as the worker left it; a projector
is started from that checkout (``-m`` runs the code of its working directory) under
callgrind with instrumentation off, kept from folding by a lease someone else holds until
it is polling for it; instrumentation goes on, the lease is freed, and the count ends when
its cursor reaches the last event. Printed: thousands of instructions an order of each
fold, and per checkout the lowest and its change against this checkout's lowest.

Like bench.instructions it counts the code's own work, not time: the kernel's (sockets)
is not counted, and a cache miss counts as one instruction. A checkout given with --beside
must have this module's dependencies (bench/projector.py and the projector command).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server

from .instructions import callgrind, control, counted, need_valgrind
from .projector import KEYS, fill_events
from .throughput import stop

_HOLDER = "bench-fold-instructions"  # the lease's holder while the projector starts


async def _reset(r: aioredis.Redis, saved: dict[Any, Any]) -> None:
    """Positions as before any fold, the risk state as the worker left it."""
    stale = [k async for k in r.scan_iter(match=f"{KEYS.positions_of_prefix}*")]
    await r.delete(KEYS.positions, KEYS.positions_cursor, KEYS.positions_indexed,
                   KEYS.assets, *stale)
    for key, dump in saved.items():
        await r.restore(key, 0, dump, replace=True)
    await r.set(KEYS.positions_lease, _HOLDER, px=600_000)


async def fold_count(url: str, checkout: Path, saved: dict[Any, Any], last: bytes,
                     workdir: Path, timeout_s: float = 1800) -> int:
    """The instructions of one fold of every event by a projector of ``checkout``."""
    r = aioredis.Redis.from_url(url)
    out = workdir / f"fold.{time.monotonic_ns()}"
    try:
        await _reset(r, saved)
        clients = len(await r.client_list())
        proc = subprocess.Popen(
            [*callgrind(out), sys.executable, "-m", "executor", "--log-level", "WARNING",
             "projector"],
            cwd=checkout, env=dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            # Connected: it asks for the lease (refused) every interval from then on.
            while len(await r.client_list()) <= clients:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the projector of {checkout} did not start")
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            control(proc.pid, "-i", "on")
            await r.delete(KEYS.positions_lease)
            while await r.get(KEYS.positions_cursor) != last:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the projector of {checkout} stopped before the "
                                       "last event")
                await asyncio.sleep(0.2)
            control(proc.pid, "-i", "off")
            control(proc.pid, "-d")
        finally:
            stop(proc)
        return counted(out)
    finally:
        await r.aclose()


async def main(orders: int, rounds: int, beside: list[str]) -> None:
    checkouts = [Path.cwd(), *(Path(b).resolve() for b in beside)]
    for there in checkouts[1:]:
        if not (there / "executor").is_dir():
            raise SystemExit(f"{there} is not a checkout: it has no executor/")
    counts: dict[Path, list[float]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as tmp:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp) / "data")
        with server:
            await fill_events(server.url, orders)
            r = aioredis.Redis.from_url(server.url)
            keys = [k async for k in r.scan_iter(match=f"{KEYS.prefix}:risk:*")]
            saved = {k: await r.dump(k) for k in keys}
            newest: Any = await r.xrevrange(KEYS.events, count=1)
            await r.aclose()
            print(f"positions fold: {orders} market orders, one events entry each; "
                  "counted by callgrind in a projector process")
            for k in range(1, rounds + 1):
                for there in checkouts:
                    n = await fold_count(server.url, there, saved, newest[0][0], Path(tmp))
                    counts[there].append(n / orders)
                    print(f"round {k} {there.name:<24}{n / orders / 1000:>10,.1f} k Ir/order",
                          flush=True)
    here = min(counts[checkouts[0]])
    for there in checkouts:
        lowest = min(counts[there])
        print(f"lowest {there.name:<24}{lowest / 1000:>10,.1f} k Ir/order"
              f"{'' if there == checkouts[0] else f'  here / it: {here / lowest - 1:+.1%}'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--beside", metavar="DIR", action="append", default=[],
                        help="a checkout whose fold is counted too, in turn with this one's")
    args = parser.parse_args()
    need_valgrind("bench.fold_instructions")
    asyncio.run(main(args.orders, args.rounds, args.beside))
