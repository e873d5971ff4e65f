"""The floor of an order's cost: the records an order writes, written with none of the
worker's logic, beside the bare loop and the worker, in one run.

    python -m bench.floor --orders 10000 --repeat 2

A market order filled on the paper exchange writes its record (HSET, PEXPIRE), its events
entry and its result (XADD each), and at the exchange its order (HSETNX) and a "received"
entry (XADD). First a worker takes a few orders and those writes of one of them are read
back (the commands and their bytes, as the worker made them). Then, each round, the same
orders go through five consumer processes in turn, measured as bench/throughput.py
measures (orders/s, CPU of the process and of redis-server an order, commands an order):

- ``bare``: bench/bare_loop.py, XREADGROUP + XADD + XACK, the issue's baseline;
- ``writes``: bench/writes_loop.py, the bare loop writing each order's records as plain
  commands, one MULTI a batch, through the worker's Redis client;
- ``writes lua``: the same writes made by one script a batch, which takes the bytes in as
  arguments, as the worker's scripts do;
- ``own lua``: as ``writes lua`` without the paper exchange's two records, the writes of an
  order at a broker that keeps its orders itself (Binance, OANDA, Alpaca);
- ``worker``: an orderstream worker, positions fold included.

``writes lua`` is a floor for the worker: what its scripts cannot avoid while an order
writes these records (the checks, the reads, the risk reservations and the positions fold
come on top). Where it is above a target, no change of the worker's logic meets that
target; only writing less an order does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer
from executor.brokers.paper.store import ExchangeStore
from executor.config import load_settings
from producer.keys import Keys
from producer.replies import text

from .throughput import KEYS, answered_by_a_worker, load_arguments, measure, prefill, print_ratios
from .writes_loop import CID, KEY, RID, Command

ACCOUNT = "default"  # the bench orders' account (bench/throughput.py order_data)


def _entries_of(entries: Any, cid: str) -> list[dict[str, str]]:
    """The fields of the entries that name client id ``cid``."""
    out = []
    for _id, fields in entries:
        f = {text(k): text(v) for k, v in fields.items()}
        if f.get("client_order_id") == cid:
            out.append(f)
    return out


def _fields(f: dict[str, str], cid: str, rid: str) -> list[str]:
    """An entry's or a hash's fields and values, the order's own ids as placeholders."""
    out: list[str] = []
    for name, value in f.items():
        out += [name, CID if value == cid else RID if value == rid else value]
    return out


async def order_writes(r: aioredis.Redis, keys: Keys, cid: str, rid: str,
                       results_maxlen: int) -> list[Command]:
    """The commands that wrote the records of the worker's order ``cid`` (request ``rid``),
    made from what they left in Redis."""
    record: Any = await r.hgetall(keys.order(cid))
    ttl = int(await r.pttl(keys.order(cid)))
    exchange = ExchangeStore(r, keys, ACCOUNT)
    placed = await r.hget(exchange.orders, cid)
    events = _entries_of(await r.xrange(keys.events), cid)
    results = _entries_of(await r.xrange(keys.completed), cid)
    received = _entries_of(await r.xrange(exchange.received), cid)
    if not record or ttl <= 0 or placed is None or not events or not results or not received:
        raise RuntimeError(f"the worker's order {cid} did not leave its records "
                           "(record with expiry, events, result, exchange order, receipt)")
    fields = {text(k): text(v) for k, v in record.items()}
    commands: list[Command] = [["HSET", KEY, *_fields(fields, cid, rid)],
                               ["PEXPIRE", KEY, str(ttl)]]
    commands += [["XADD", keys.events, "*", *_fields(e, cid, rid)] for e in events]
    commands += [["XADD", keys.completed, "MAXLEN", "~", str(results_maxlen), "*",
                  *_fields(e, cid, rid)] for e in results]
    commands.append(["HSETNX", exchange.orders, CID, text(placed)])
    commands += [["XADD", exchange.received, "*", *_fields(e, cid, rid)] for e in received]
    return commands


async def capture(url: str, env: dict[str, str]) -> list[Command]:
    """A worker takes a batch of market orders; the writes of the first."""
    r = aioredis.Redis.from_url(url)
    try:
        await r.flushall()
        n = 20
        await prefill(r, n)
        first: Any = await r.xrange(KEYS.pending, count=1)
        rid = text(first[0][0])
        settings = load_settings(None, env)
        await answered_by_a_worker(r, settings, n)
        return await order_writes(r, KEYS, "bench-0", rid, settings.worker.results_maxlen)
    finally:
        await r.aclose()


def own_writes(writes: list[Command]) -> list[Command]:
    """``writes`` less the paper exchange's (its keys are the account's ``paper`` ones)."""
    exchange = KEYS.paper(ACCOUNT, "")
    return [c for c in writes if not str(c[1]).startswith(exchange)]


def size(commands: list[Command]) -> int:
    return sum(len(arg.encode()) for command in commands for arg in command)


async def run(args: argparse.Namespace) -> None:
    server = None
    url = os.environ.get("BENCH_REDIS_URL")  # flushed; else a private redis-server
    if not url:
        server = RedisServer()
        server.start()
        url = server.url
    env = dict(os.environ, REDIS_URL=url, ORDERSTREAM_BATCH_SIZE=str(args.batch),
               ORDERSTREAM_METRICS_PORT="0", ORDERSTREAM_METRICS_HOST="127.0.0.1",
               ORDERSTREAM_CONSUMER="bench-worker", ORDERSTREAM_LOG_LEVEL="WARNING")
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        writes = await capture(url, env)
        with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
            path, own = Path(tmp) / "writes.json", Path(tmp) / "own.json"
            path.write_text(json.dumps(writes))
            own.write_text(json.dumps(own_writes(writes)))
            loop = [sys.executable, "-m", "bench.writes_loop", "--url", url, "--batch",
                    str(args.batch), "--lua", "--writes"]
            consumers = {
                "bare": [sys.executable, "-m", "bench.bare_loop", "--url", url, "--batch",
                         str(args.batch)],
                "writes": [c for c in loop if c != "--lua"] + [str(path)],
                "writes lua": [*loop, str(path)],
                "own lua": [*loop, str(own)],
                "worker": [sys.executable, "-m", "executor", "--log-level", "WARNING",
                           "worker"],
            }
            for _ in range(args.repeat):
                rounds.append({name: await measure(name, command, env, url, args.orders,
                                                   args.rate, args.seconds)
                               for name, command in consumers.items()})
    finally:
        if server is not None:
            server.stop()
    print(f"\nfloor: {args.orders} market orders, batch {args.batch}, paper broker at zero "
          f"latency; an order's writes: {len(writes)} commands, {size(writes):,} bytes")
    for command in writes:
        print(f"  {command[0]} {command[1]}: {size([command]):,} bytes")
    print(f"{'':<16}{'orders/s':>10}{'CPU us/order':>14}{'redis us/order':>16}"
          f"{'cmds/order':>12}{'CPU x bare':>12}{'redis x bare':>14}")
    for k, figures in enumerate(rounds, 1):
        tag = f" {k}" if len(rounds) > 1 else ""
        bare = figures["bare"]
        for name, fig in figures.items():
            print(f"{name + tag:<16}{fig['orders_per_s']:>10,.0f}{fig['cpu_us']:>14.1f}"
                  f"{fig['redis_us']:>16.1f}{fig['commands']:>12.1f}"
                  f"{fig['cpu_us'] / bare['cpu_us']:>12.2f}"
                  f"{fig['redis_us'] / bare['redis_us']:>14.2f}")
    for name in ("writes", "writes lua", "own lua"):
        for what in ("cpu_us", "redis_us"):
            shares = [f[name][what] / f["worker"][what] for f in rounds]
            label = "CPU" if what == "cpu_us" else "redis-server CPU"
            print_ratios(f"{name} / worker, {label} an order", shares)


def main() -> None:
    parser = load_arguments(__doc__, orders=10_000, rate=200, seconds=2.0)
    parser.add_argument("--repeat", type=int, default=2,
                        help="measure the four consumers this many times, alternating")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
