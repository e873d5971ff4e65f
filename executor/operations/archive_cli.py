"""Commands of the archive: ``archive`` (set up, upgrade, run), ``history``, ``fills`` and
``report`` (read it). They load the workers' configuration (``--config``,
``$ORDERSTREAM_CONFIG``, environment): ``[archive]`` names the database, ``[redis]`` and
``[partitions]`` the streams. ``--url`` overrides the database for one command.

Exit codes: 0 fine, 2 an error (configuration, database, Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from producer.contract import decimal_text, encode
from producer.keys import Keys

from ..archive import migrate, queries, report
from ..archive.archiver import Archiver, AssetsSource
from ..archive.rows import Assets
from ..archive.store import ArchiveStore, engine
from ..config import Settings, load_settings, mask_url, prefixes
from ..infra.connection import connect
from . import render, snapshot

log = logging.getLogger(__name__)

_COMMANDS: set[Any] = set()


def add_commands(sub: Any) -> None:
    p = sub.add_parser("archive", help="copy the event and result streams into the SQL "
                       "archive, exactly once per entry (--init first)")
    _common(p)
    p.add_argument("--partition", type=int, help="one partition (default: every one)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--init", action="store_true", help="create the tables (or bring them "
                      "to this version) and register with Redis, so retention keeps what the "
                      "archive has not read; then exit")
    mode.add_argument("--upgrade", action="store_true",
                      help="bring the tables to this version's schema, then exit")
    mode.add_argument("--once", action="store_true",
                      help="archive what the streams hold now, then exit")
    p.set_defaults(func=_archive)

    p = sub.add_parser("history", help="archived orders, newest first")
    _common(p)
    _filters(p)
    p.add_argument("--state", help="e.g. filled, cancelled, rejected")
    p.add_argument("--strategy", help="strategy_id")
    p.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_history)

    p = sub.add_parser("fills", help="archived fills in time order")
    _common(p)
    _filters(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV with a header row")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_fills)

    p = sub.add_parser("report", help="per UTC day, account and symbol: fills, volume, "
                       "notional, fees and realized PnL")
    _common(p)
    _filters(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_report)
    _COMMANDS.update({_archive, _history, _fills, _report})


def is_archive_command(func: object) -> bool:
    return func in _COMMANDS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")
    p.add_argument("--url", help="the database (default archive.url of the configuration, "
                   "$ORDERSTREAM_ARCHIVE_URL)")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account")
    p.add_argument("--symbol")
    p.add_argument("--since", type=_time, help="from this time (UTC date YYYY-MM-DD, ISO "
                   "time, or epoch ms), inclusive")
    p.add_argument("--until", type=_time, help="to this time, exclusive")


def _time(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (YYYY-MM-DD), an ISO time or epoch ms") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url = args.url or settings.archive.database_url()
    try:
        return int(asyncio.run(args.func(args, settings, url)))
    except (migrate.SchemaError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # The driver's message can quote the URL; the masked one is what we show.
        print(f"error: archive database {mask_url(url)}: {type(exc).__name__}: "
              f"{getattr(exc, 'orig', None) or exc.__class__.__doc__}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"error: redis: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the database's host cannot be reached (asyncpg raises these)
        print(f"error: archive database {mask_url(url)}: {exc}", file=sys.stderr)
        return 2


async def _archive(args: argparse.Namespace, settings: Settings, url: str) -> int:
    db = engine(url)
    a = settings.archive
    redis = connect(settings.redis, socket_timeout_s=a.block_ms / 1000 + 10)
    try:
        if args.upgrade or args.init:
            before, after = await migrate.upgrade(db)
            print(f"archive {mask_url(url)}: schema {before or 'none'} -> {after}")
            if args.upgrade:
                return 0
        await migrate.check(db)
        store = ArchiveStore(db)
        archivers = [Archiver(redis, Keys(prefix), store, assets=assets_source(redis, settings,
                                                                              prefix),
                              reader=a.reader, batch=a.batch, block_ms=a.block_ms,
                              source=a.source(prefix))
                     for prefix in prefixes(settings, args.partition)]
        for archiver in archivers:
            cursors = await archiver.register()
            log.info("%s: registered as reader %r at %s", archiver.source, a.reader, cursors)
        if args.init:
            print(f"registered as reader {a.reader!r} of "
                  f"{', '.join(x.source for x in archivers)}")
            return 0
        if args.once:
            for archiver in archivers:
                while await archiver.once():
                    pass
                print(f"{archiver.source}: {archiver.archived} entries archived, at "
                      f"{archiver.cursors}")
            return 0
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        log.info("archiving %s into %s", ", ".join(x.source for x in archivers), mask_url(url))
        await asyncio.gather(*(x.run(lambda: not stopping.is_set()) for x in archivers))
        return 0
    finally:
        await redis.aclose()
        await db.dispose()


def assets_source(redis: Any, settings: Settings, prefix: str) -> AssetsSource:
    """What the archive folds fills with: each symbol's (base, quote) assets, read afresh
    for every batch as the positions projector and replay know them."""
    keys = Keys(prefix)

    async def read() -> Assets:
        quotes, bases = await snapshot.fold_assets(redis, keys, settings)
        return {key: (bases.get(key), quotes.get(key)) for key in quotes.keys() | bases.keys()}

    return read


async def _with(url: str, query: Any) -> Any:
    db = engine(url)
    try:
        await migrate.check(db)
        return await query(db)
    finally:
        await db.dispose()


def _filters_of(args: argparse.Namespace) -> queries.Filters:
    return queries.Filters(account=args.account, symbol=args.symbol,
                           state=getattr(args, "state", None),
                           strategy=getattr(args, "strategy", None), since=args.since,
                           until=args.until, limit=getattr(args, "limit", None) or None)


_ORDER_COLUMNS = ("created_at", "client_order_id", "account", "symbol", "side", "type",
                  "quantity", "price", "state", "filled_quantity", "average_price",
                  "reason_code")
_FILL_COLUMNS = ("at", "account", "symbol", "side", "price", "quantity", "commission",
                 "commission_asset", "liquidity", "realized_pnl", "client_order_id", "fill_id")


async def _history(args: argparse.Namespace, _settings: Settings, url: str) -> int:
    async def query(db: AsyncEngine) -> list[Mapping[str, Any]]:
        return await queries.history(db, _filters_of(args))

    found = await _with(url, query)
    _print_rows(args, found, _ORDER_COLUMNS, "no archived orders match")
    return 0


async def _fills(args: argparse.Namespace, _settings: Settings, url: str) -> int:
    async def query(db: AsyncEngine) -> list[Mapping[str, Any]]:
        return await queries.fills(db, _filters_of(args))

    found = await _with(url, query)
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_FILL_COLUMNS)
        for row in found:
            writer.writerow([_plain(row[c]) for c in _FILL_COLUMNS])
        return 0
    _print_rows(args, found, _FILL_COLUMNS, "no archived fills match")
    return 0


async def _report(args: argparse.Namespace, _settings: Settings, url: str) -> int:
    async def query(db: AsyncEngine) -> list[Mapping[str, Any]]:
        return await queries.fills(db, _filters_of(args))

    lines = report.daily(await _with(url, query))
    if args.json:
        for line in lines:
            print(encode(line).decode())
        return 0
    if not lines:
        print("no archived fills match")
        return 0
    print(render.table(
        ("day", "account", "symbol", "fills", "bought", "sold", "notional", "fees",
         "realized_pnl"),
        [(x.day, x.account, x.symbol, x.fills, x.bought, x.sold, x.notional,
          " ".join(f"{decimal_text(v)} {k or 'quote'}" for k, v in sorted(x.fees.items()))
          or None, x.realized_pnl) for x in lines],
        right=(3, 4, 5, 6, 8)))
    return 0


def _print_rows(args: argparse.Namespace, found: Sequence[Mapping[str, Any]],
                columns: Sequence[str], empty: str) -> None:
    if args.json:
        for row in found:
            print(msgspec.json.encode({k: _plain(v) for k, v in row.items()}).decode())
        return
    if not found:
        print(empty)
        return
    print(render.table(columns, [[_shown(c, row[c]) for c in columns] for row in found],
                       right={i for i, c in enumerate(columns) if c in _NUMERIC}))


_NUMERIC = {"quantity", "price", "filled_quantity", "average_price", "commission",
            "realized_pnl"}


def _plain(value: object) -> object:
    return decimal_text(value) if isinstance(value, Decimal) else value


def _shown(column: str, value: object) -> object:
    if column in ("at", "created_at") and isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return value
