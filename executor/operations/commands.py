"""Operator commands of ``orderstream``: replay, orders, positions, info (read-only),
risk (safety/risk/commands.py), and those of control.py that change shared state (kill,
resume, trading, breaker).

These four are read-only. They connect like the producer commands (``--redis-url``,
default ``$REDIS_URL``; ``--prefix``); replay and positions also load the worker's
configuration (``--config``, ``$ORDERSTREAM_CONFIG``, environment) for the symbols' quote
assets and prices and the record TTL. Each prints a table, or with ``--json`` one JSON
object (the structs of views.py and replay.py).

Exit codes: 0 fine, 1 replay found a difference, 2 an error (configuration, Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.contract import OrderState, Side
from producer.keys import Keys
from producer.replies import text

from ..archive import migrate, rows
from ..archive import queries as archive_queries
from ..archive import store as archive_store
from ..config import load_settings
from ..infra.clock import wall_clock_ms
from ..infra.store import decode_order
from ..infra.streams import last_id, parse_stream_id
from ..model.positions import split_key
from ..safety import breaker
from . import control, exit_commands, risk_commands, snapshot, views
from .operator_cli import common_args, emit, operator_command
from .replay import Fold, Stored, compare

DEFAULT_LIMIT = 20


def add_commands(sub: Any) -> None:
    """Register the operator subcommands on an argparse subparsers object."""
    p = sub.add_parser("replay", help="rebuild orders and positions from the event log and "
                       "report every difference with what is stored (exit 1 if any)")
    common_args(p)
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="differences listed in the summary (all of them with --json)")
    p.add_argument("--from-archive", action="store_true",
                   help="rebuild from the SQL archive's events (archive.url of --config, or "
                   "--archive-url) instead of the Redis log, and compare with Redis")
    p.add_argument("--archive-url", help="the archive database (default archive.url)")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="with --from-archive: how long to wait for the archive to hold the "
                   "events Redis has (default 30)")
    p.set_defaults(func=operator_command(_replay))

    p = sub.add_parser("orders", help="open orders (all known orders with --all)")
    common_args(p)
    p.add_argument("--account")
    p.add_argument("--symbol")
    p.add_argument("--state", choices=[s.value for s in OrderState])
    p.add_argument("--all", action="store_true", help="every order with a record, not only "
                   "open ones")
    p.set_defaults(func=operator_command(_orders))

    p = sub.add_parser("positions", help="positions, with unrealized PnL where a reference "
                       "price is known")
    common_args(p)
    p.add_argument("--account")
    p.set_defaults(func=operator_command(_positions))

    p = sub.add_parser("info", help="streams, consumer group, consumers, live workers, "
                       "positions cursor")
    common_args(p)
    p.set_defaults(func=operator_command(_info))

    control.add_commands(sub)
    risk_commands.add_commands(sub, operator_command, common_args)
    exit_commands.add_commands(sub, operator_command, common_args)


async def _replay(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    quotes, bases = await snapshot.fold_assets(redis, keys, settings)
    # The stored side is read first, then the log to its end: a record can then only be
    # behind its events, and an order with events after `before` was being written while
    # we read, so it is left out rather than reported.
    before = await last_id(redis, keys.events)
    stored = await snapshot.stored(redis, keys)
    moving: set[str] = set()
    last = None if before is None else parse_stream_id(before)

    def written_while_we_read(entry_id: str) -> bool:
        return last is None or parse_stream_id(entry_id) > last

    if args.from_archive:
        # The archive holds the whole log, whatever Redis trimmed: the positions are rebuilt
        # from its first fill, with no checkpoint.
        fold = Fold(quotes, positions_until=stored.positions_cursor, sides=_sides(stored),
                    base_assets=bases)
        url = args.archive_url or settings.archive.database_url()
        problem = await _from_archive(url, settings.archive.source(keys.prefix), before,
                                      args.wait, fold.add,
                                      written_while_we_read, moving)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    else:
        fold = Fold(quotes, positions_until=stored.positions_cursor,
                    trimmed_before=stored.trimmed_before, base=stored.base,
                    base_cursor=stored.base_cursor, sides=_sides(stored), base_assets=bases)
        async for entry_id, fields in snapshot.entries(redis, keys.events):
            fold.add(entry_id, fields.get(b"data", b""))
            if written_while_we_read(entry_id):
                moving.add(text(fields.get(b"client_order_id", b"")))
        if await snapshot.string(redis, keys.events_trimmed) != stored.trimmed_before:
            # Trimmed while we read: the fills after the checkpoint we hold may be gone.
            fold.positions_checked = False
    report = compare(fold, stored, now_ms=wall_clock_ms(),
                     order_ttl_ms=settings.worker.order_ttl_ms, in_flight=frozenset(moving))
    emit(args, report, views.render_report(report, args.limit))
    return 0 if report.ok else 1


async def _from_archive(url: str, source: str, before: str | None, wait_s: float,
                        add: Callable[[str, str], None], moving_at: Callable[[str], bool],
                        moving: set[str]) -> str | None:
    """Hand the archive's events of ``source`` to ``add`` in the log's order, a page at a
    time, once the archive holds every entry up to ``before``; else why not (a message).
    The orders of events for which ``moving_at`` holds go into ``moving``."""
    db = archive_store.engine(url)
    try:
        try:
            await migrate.check(db)
        except migrate.SchemaError as exc:
            return str(exc)
        deadline = time.monotonic() + wait_s
        while True:
            at = (await archive_store.ArchiveStore(db).cursors(source))[rows.EVENTS]
            if before is None or parse_stream_id(at) >= parse_stream_id(before):
                break
            if time.monotonic() >= deadline:
                return (f"the archive holds {source}'s events up to {at}, Redis up to "
                        f"{before}: is `orderstream archive` running?")
            await asyncio.sleep(0.2)
        async for entry_id, data in archive_queries.events(db, source):
            add(entry_id, data)
            if moving_at(entry_id):
                moving.add(_client_id(data))
        return None
    finally:
        await db.dispose()


def _client_id(data: str) -> str:
    try:
        return msgspec.json.decode(data, type=_Named).client_order_id
    except msgspec.DecodeError:
        return ""


class _Named(msgspec.Struct):
    client_order_id: str = ""


def _sides(stored: Stored) -> dict[str, Side]:
    """The side of every stored order whose record reads: for the fills of orders whose
    created event a trim took (a record that does not read is reported by compare)."""
    out: dict[str, Side] = {}
    for cid, found in stored.orders.items():
        if found.record is not None:
            with contextlib.suppress(msgspec.DecodeError):
                out[cid] = decode_order(found.record).spec.side
    return out


async def _orders(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    if args.all:
        cids = await snapshot.order_ids(redis, keys)
    else:
        cids = sorted(await snapshot.open_ids(redis, keys))
    stored = await snapshot.stored_orders(redis, keys, cids)
    view = views.orders_view(
        {cid: s.record for cid, s in stored.items()}, wall_clock_ms(), account=args.account,
        symbol=args.symbol, state=None if args.state is None else OrderState(args.state))
    emit(args, view, views.render_orders(view))
    return 0


async def _positions(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    raw, cursor = await snapshot.positions(redis, keys)
    held = [split_key(k) for k in raw]
    wanted = [k for k in held if args.account is None or k[0] == args.account]
    prices = await snapshot.reference_prices(redis, keys, settings, wanted, wall_clock_ms)
    accounts = sorted({a for a, _ in wanted})
    exits = await exit_commands.exits_view(redis, keys, accounts)
    view = views.positions_view(raw, cursor, lambda a, s: prices.get((a, s)),
                                account=args.account,
                                sl_tp={(e.account, e.symbol): exit_commands.describe(e.exit)
                                       for e in exits.exits})
    emit(args, view, views.render_positions(view))
    return 0


async def _info(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    streams = [keys.pending, keys.completed, keys.failed, keys.events]
    lengths = await snapshot.lengths(redis, streams)
    group, consumers = await snapshot.group(redis, keys)
    names = [text(c["name"]) for c in consumers]
    alive = await snapshot.exists(redis, [keys.worker(n) for n in names])
    beats = await snapshot.workers(redis, keys)
    last = await last_id(redis, keys.events)
    cursor = await snapshot.string(redis, keys.positions_cursor)
    trading: Any = await redis.hgetall(keys.trading)
    breaker_accounts = await snapshot.scan_suffixes(redis, keys.breaker(""))
    view = views.InfoView(
        streams=dict(zip(streams, lengths, strict=True)),
        group=None if group is None else views.group_row(
            text(group["name"]), group, consumers, alive),
        workers=[w for w in beats if not isinstance(w, str)],
        unreadable_workers=[w for w in beats if isinstance(w, str)],
        last_event_id=last, positions_cursor=cursor,
        events_after_cursor=None if cursor is None else await snapshot.count_after(
            redis, keys.events, cursor, views.AFTER_CURSOR_CAP),
        trading={text(k): text(v) for k, v in trading.items()},
        breakers=await breaker.states(redis, keys, breaker_accounts))
    emit(args, view, views.render_info(view, wall_clock_ms()))
    return 0
