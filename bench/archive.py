"""How fast the SQL archive stores what the workers write, beside how fast one worker writes
it: a worker runs N market orders on a private redis-server (its events entries/s, from the
first entry to the last, is the baseline; an entry holds the events of one write), then
the archive stores every entry of the events and result streams from the start, into a
SQLite file and, where a PostgreSQL server can be started (devtools/postgres_server.py),
into PostgreSQL.

    python -m bench.archive [--orders 5000] [--batch 1000] [--repeat 2] [--no-postgres]

Printed per database and round: entries stored per second (events and results), rows
written per second (an event, a result, an order update, a fill and a position per entry
as they come), the ratio of entries/s to the worker's events entries/s (above 1: the archive keeps
up with a worker), and the archive process's CPU per entry. --repeat archives the same
entries again into a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer, find_redis_server
from executor.archive import migrate
from executor.archive.archiver import Archiver
from executor.archive.store import ArchiveStore, engine
from executor.config import load_settings
from executor.operations.archive_cli import assets_source
from producer.keys import Keys

from .throughput import answered_by_a_worker, prefill

KEYS = Keys()


async def produce(url: str, orders: int) -> tuple[int, float]:
    """Run the orders through a worker; (events entries written, entries/s from the first
    to the last)."""
    r = aioredis.Redis.from_url(url)
    await prefill(r, orders)
    settings = load_settings(None, dict(os.environ, REDIS_URL=url, ORDERSTREAM_METRICS_PORT="0"))
    await answered_by_a_worker(r, settings, orders)
    first: Any = await r.xrange(KEYS.events, count=1)
    last: Any = await r.xrevrange(KEYS.events, count=1)
    events = int(await r.xlen(KEYS.events))
    await r.aclose()
    span_ms = int(last[0][0].split(b"-")[0]) - int(first[0][0].split(b"-")[0])
    return events, events / max(span_ms / 1000, 1e-3)


async def archive_once(redis_url: str, db_url: str, batch: int) -> tuple[int, int, float, float]:
    """Archive every entry from the start into a fresh database; (entries, rows, wall s,
    CPU s)."""
    r = aioredis.Redis.from_url(redis_url)
    await r.hdel(KEYS.events_readers, "bench")
    db = engine(db_url)
    await migrate.upgrade(db)
    settings = load_settings(None, dict(os.environ, REDIS_URL=redis_url))

    archiver = Archiver(r, KEYS, ArchiveStore(db), assets=assets_source(r, settings, KEYS.prefix),
                        reader="bench", batch=batch)
    await archiver.register()
    written = 0
    cpu, wall = time.process_time(), time.perf_counter()
    while await archiver.once():
        pass
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    async with db.connect() as conn:
        for table in ("order_events", "results", "orders", "fills", "positions"):
            written += int((await conn.exec_driver_sql(f"SELECT count(*) FROM {table}"))
                           .scalar_one())
    for reader in (KEYS.events_readers, KEYS.completed_readers, KEYS.failed_readers):
        await r.hdel(reader, "bench")
    await db.dispose()
    await r.aclose()
    return archiver.archived, written, wall, cpu


@contextlib.contextmanager
def postgres(enabled: bool) -> Iterator[Any]:
    """A private PostgreSQL server, or None (saying why) where none can be started."""
    if not enabled:
        yield None
        return
    try:
        from devtools.postgres_server import PostgresServer, find_postgres_bin_dir

        server = PostgresServer(bin_dir=find_postgres_bin_dir(install=False))
        server.start()
    except Exception as exc:  # any reason at all: the SQLite figures still stand
        print(f"postgresql: not measured ({type(exc).__name__}: {exc})")
        yield None
        return
    try:
        yield server
    finally:
        server.close()


async def main(orders: int, batch: int, repeat: int, use_postgres: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres(use_postgres) as pg:
        server = RedisServer(binary=find_redis_server(), data_dir=Path(tmp) / "redis")
        with server:
            events, produced = await produce(server.url, orders)
            print(f"archive: {events} events entries of {orders} market orders; one worker "
                  f"wrote {produced:,.0f} entries/s (baseline)")
            print(f"{'database':<22}{'entries/s':>11}{'rows/s':>10}{'x worker':>10}"
                  f"{'CPU us/entry':>14}")
            def sqlite(n: str) -> str:
                return f"sqlite:///{Path(tmp) / f'a{n}.db'}"

            targets: list[tuple[str, Callable[[str], str]]] = [("sqlite", sqlite)]
            if pg is not None:
                # The test server's settings: fsync off (SQLite's file keeps its fsyncs).
                targets.append(("postgresql", lambda n: str(pg.create_database(f"bench{n}"))))
            for name, make_url in targets:
                for n in range(1, repeat + 1):
                    entries, rows, wall, cpu = await archive_once(
                        server.url, make_url(f"{name}{n}"), batch)
                    rate = entries / wall
                    print(f"{name + ' ' + str(n):<22}{rate:>11,.0f}{rows / wall:>10,.0f}"
                          f"{rate / produced:>10.2f}{cpu * 1e6 / entries:>14.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.batch, args.repeat, not args.no_postgres))
