"""The archive's writes: one batch, its rows and its cursors, in one SQL transaction.

The transaction first moves the batch's cursors from where this archive read them to the
batch's last entries, each only if it is still where it was read: a second archive of the
same streams (or this one re-run after a crash it did not see) finds a cursor moved and
rolls back, writing nothing, rather than storing rows twice or folding a fill twice. The
cursor's row lock also makes concurrent archives take turns. Rows are inserted with ON
CONFLICT DO NOTHING (events, results, fills) or updated to what the batch made of them
(orders, positions), so a batch re-run over stored rows changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from . import rows, tables
from .rows import Assets, Decoded, Known, Writes

CHUNK = 500  # values per IN list or statement: far inside SQLite's bound-variable limit
START = "0-0"  # a cursor before any entry

T = TypeVar("T")


class CursorMoved(Exception):
    """Another archive stored this batch (or a later one) first: nothing was written."""


def async_url(url: str) -> str:
    """The SQLAlchemy URL with its asyncio driver: ``sqlite:///x.db`` and
    ``postgresql://...`` are accepted as they are usually written."""
    for plain, driver in (("sqlite://", "sqlite+aiosqlite://"),
                          ("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


def engine(url: str) -> AsyncEngine:
    made = create_async_engine(async_url(url), pool_pre_ping=True)
    if made.dialect.name == "sqlite":
        sa.event.listen(made.sync_engine, "connect", _sqlite_pragmas)
    return made


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL: the query commands read while the archive writes. synchronous stays FULL (the
    # default) so a committed batch survives a power cut, not only a crash. The busy
    # timeout makes two archives, or an archive and `--init`, wait for each other.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ArchiveStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def cursors(self, source: str) -> dict[str, str]:
        """Per stream of ``source``, the last entry stored; made at ``START`` if absent."""
        c = tables.cursors.c
        async with self.engine.begin() as conn:
            await conn.execute(
                _insert(conn, tables.cursors).on_conflict_do_nothing(),
                [{"source": source, "stream": s, "last_id": START, "updated_at": now_ms()}
                 for s in rows.STREAMS])
            found = await conn.execute(
                sa.select(c.stream, c.last_id).where(c.source == source))
            return {stream: last for stream, last in found.all()}

    async def write(self, batch: Decoded, read_from: Mapping[str, str],
                    assets: Assets) -> Writes:
        """Store ``batch``, read after ``read_from`` (stream -> cursor), and move the
        cursors to its last entries, all or nothing. Raises CursorMoved if a cursor is no
        longer where it was read."""
        c = tables.cursors.c
        async with self.engine.begin() as conn:
            at = now_ms()
            for stream, last in batch.last_ids().items():
                moved = await conn.execute(
                    sa.update(tables.cursors)
                    .where(c.source == batch.source, c.stream == stream,
                           c.last_id == read_from[stream])
                    .values(last_id=last, updated_at=at))
                if moved.rowcount != 1:
                    raise CursorMoved(f"{batch.source} {stream}: the cursor moved from "
                                      f"{read_from[stream]} while this batch was read")
            known = await self._known(conn, batch)
            writes = rows.fold(batch, known, assets)
            await self._ignore(conn, tables.events, writes.events)
            await self._ignore(conn, tables.results, writes.results)
            await self._ignore(conn, tables.fills, writes.fills)
            await self._upsert(conn, tables.orders, writes.orders,
                               ("source", "client_order_id"))
            await self._upsert(conn, tables.positions, writes.positions,
                               ("source", "account", "symbol"))
            await self._ignore(conn, tables.actions, writes.actions)
            await self._upsert(conn, tables.risk_limits, writes.risk_limits,
                               ("source", "account"), newer=_newer_setting)
        return writes

    async def _known(self, conn: AsyncConnection, batch: Decoded) -> Known:
        known = Known()
        o = tables.orders.c
        for cids in chunks(sorted(batch.order_ids())):
            found = await conn.execute(sa.select(tables.orders).where(
                o.source == batch.source, o.client_order_id.in_(cids)))
            for row in found.mappings():
                known.orders[row["client_order_id"]] = dict(row)
        f = tables.fills.c
        for keys in chunks(sorted(batch.fill_keys())):
            found = await conn.execute(sa.select(f.account, f.symbol, f.fill_id).where(
                f.source == batch.source, sa.tuple_(f.account, f.symbol, f.fill_id).in_(keys)))
            known.fills.update((a, s, i) for a, s, i in found.all())
        p = tables.positions.c
        for where in chunks(sorted(batch.position_keys())):
            found = await conn.execute(sa.select(tables.positions).where(
                p.source == batch.source, sa.tuple_(p.account, p.symbol).in_(where)))
            for row in found.mappings():
                position = rows.position_from_row(dict(row))
                known.positions[(position.account, position.symbol)] = position
        return known

    async def _ignore(self, conn: AsyncConnection, table: sa.Table,
                      values: Sequence[Mapping[str, Any]]) -> None:
        for part in chunks(values):
            await conn.execute(_insert(conn, table).on_conflict_do_nothing(), list(part))

    async def _upsert(self, conn: AsyncConnection, table: sa.Table,
                      values: Sequence[Mapping[str, Any]], key: Iterable[str],
                      newer: Callable[[Any], Any] | None = None) -> None:
        """Insert, or update to the new values (only where ``newer(excluded)`` holds)."""
        index = list(key)
        for part in chunks(values):
            stmt = _insert(conn, table)
            stmt = stmt.on_conflict_do_update(
                index_elements=index,
                set_={col.name: stmt.excluded[col.name] for col in table.columns
                      if col.name not in index},
                where=None if newer is None else newer(stmt.excluded))
            await conn.execute(stmt, list(part))


def _newer_setting(excluded: Any) -> Any:
    stored = tables.risk_limits.c
    return sa.tuple_(stored.entry_ms, stored.entry_seq) < sa.tuple_(excluded.entry_ms,
                                                                    excluded.entry_seq)
