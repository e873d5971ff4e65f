"""Operator commands of ``orderstream``: replay, orders, positions, info.

Read-only. They connect like the producer commands (``--redis-url``, default ``$REDIS_URL``;
``--prefix``); replay and positions also load the worker's configuration (``--config``,
``$ORDERSTREAM_CONFIG``, environment) for the symbols' quote assets and prices and the
record TTL. Each prints a table, or with ``--json`` one JSON object (the structs of
views.py and replay.py).

Exit codes: 0 fine, 1 replay found a difference, 2 an error (configuration, Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer import cli as producer_cli
from producer.contract import OrderState, encode
from producer.keys import Keys
from producer.replies import text

from . import snapshot, views
from .brokers.paper.config import PaperAccount
from .config import load_settings
from .positions import split_key
from .replay import Fold, compare, parse_stream_id
from .services import wall_clock_ms

DEFAULT_LIMIT = 20


def add_commands(sub: Any) -> None:
    """Register the operator subcommands on an argparse subparsers object."""
    p = sub.add_parser("replay", help="rebuild orders and positions from the event log and "
                       "report every difference with what is stored (exit 1 if any)")
    _common(p, config=True)
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="differences listed in the summary (all of them with --json)")
    p.set_defaults(func=_sync(_replay))

    p = sub.add_parser("orders", help="open orders (all known orders with --all)")
    _common(p)
    p.add_argument("--account")
    p.add_argument("--symbol")
    p.add_argument("--state", choices=[s.value for s in OrderState])
    p.add_argument("--all", action="store_true", help="every order with a record, not only "
                   "open ones")
    p.set_defaults(func=_sync(_orders))

    p = sub.add_parser("positions", help="positions, with unrealized PnL where a reference "
                       "price is known")
    _common(p, config=True)
    p.add_argument("--account")
    p.set_defaults(func=_sync(_positions))

    p = sub.add_parser("info", help="streams, consumer group, consumers, live workers, "
                       "positions cursor")
    _common(p)
    p.set_defaults(func=_sync(_info))


def _common(p: argparse.ArgumentParser, *, config: bool = False) -> None:
    producer_cli.connection_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    if config:
        p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")


Command = Callable[[argparse.Namespace, aioredis.Redis, Keys], Awaitable[int]]


def _sync(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def connected() -> int:
            redis = aioredis.Redis.from_url(args.redis_url)
            try:
                return await command(args, redis, Keys(args.prefix))
            finally:
                await redis.aclose()

        try:
            return asyncio.run(connected())
        except RedisError as exc:
            print(f"error: redis: {exc}", file=sys.stderr)
            return 2

    _RUNNERS.add(run)
    return run


_RUNNERS: set[Callable[[argparse.Namespace], int]] = set()


def is_operator_command(func: object) -> bool:
    return func in _RUNNERS


def _emit(args: argparse.Namespace, view: msgspec.Struct, rendered: str) -> None:
    print(encode(view).decode() if args.json else rendered)


async def _replay(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    quotes = {(account, symbol): sym.quote_asset
              for account, config in settings.accounts.items()
              if isinstance(config, PaperAccount)  # others' quote assets are the broker's
              for symbol, sym in config.symbols.items()}
    # The stored side is read first, then the log to its end: a record can then only be
    # behind its events, and an order with events after `before` was being written while
    # we read, so it is left out rather than reported.
    before = await snapshot.last_id(redis, keys.events)
    stored = await snapshot.stored(redis, keys)
    fold = Fold(quotes, positions_until=stored.positions_cursor)
    moving: set[str] = set()
    last = None if before is None else parse_stream_id(before)
    async for entry_id, fields in snapshot.entries(redis, keys.events):
        fold.add(entry_id, fields.get(b"data", b""))
        if last is None or parse_stream_id(entry_id) > last:
            moving.add(text(fields.get(b"client_order_id", b"")))
    report = compare(fold, stored, now_ms=wall_clock_ms(),
                     order_ttl_ms=settings.worker.order_ttl_ms, in_flight=frozenset(moving))
    _emit(args, report, views.render_report(report, args.limit))
    return 0 if report.ok else 1


async def _orders(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    if args.all:
        cids = await snapshot.order_ids(redis, keys)
    else:
        cids = sorted(await snapshot.open_ids(redis, keys))
    stored = await snapshot.stored_orders(redis, keys, cids)
    view = views.orders_view(
        {cid: s.record for cid, s in stored.items()}, wall_clock_ms(), account=args.account,
        symbol=args.symbol, state=None if args.state is None else OrderState(args.state))
    _emit(args, view, views.render_orders(view))
    return 0


async def _positions(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    raw, cursor = await snapshot.positions(redis, keys)
    held = [split_key(k) for k in raw]
    wanted = [k for k in held if args.account is None or k[0] == args.account]
    prices = await snapshot.reference_prices(redis, keys, settings, wanted, wall_clock_ms)
    view = views.positions_view(raw, cursor, lambda a, s: prices.get((a, s)),
                                account=args.account)
    _emit(args, view, views.render_positions(view))
    return 0


async def _info(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    streams = [keys.pending, keys.completed, keys.failed, keys.events]
    lengths = await snapshot.lengths(redis, streams)
    group, consumers = await snapshot.group(redis, keys)
    names = [text(c["name"]) for c in consumers]
    alive = await snapshot.exists(redis, [keys.worker(n) for n in names])
    beats = await snapshot.workers(redis, keys)
    last = await snapshot.last_id(redis, keys.events)
    cursor = await snapshot.string(redis, keys.positions_cursor)
    view = views.InfoView(
        streams=dict(zip(streams, lengths, strict=True)),
        group=None if group is None else views.group_row(
            text(group["name"]), group, consumers, alive),
        workers=[w for w in beats if not isinstance(w, str)],
        unreadable_workers=[w for w in beats if isinstance(w, str)],
        last_event_id=last, positions_cursor=cursor,
        events_after_cursor=None if cursor is None else await snapshot.count_after(
            redis, keys.events, cursor, views.AFTER_CURSOR_CAP))
    _emit(args, view, views.render_info(view, wall_clock_ms()))
    return 0
