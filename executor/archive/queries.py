"""Reads of the archive: order history, fills, the rows of the daily report and the event log
in its order (for ``replay --from-archive``). Filters only; the sums are report.py's, in
Decimal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import tables

PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Filters:
    account: str | None = None
    symbol: str | None = None
    state: str | None = None
    strategy: str | None = None
    since: int | None = None  # epoch ms, inclusive
    until: int | None = None  # epoch ms, exclusive
    limit: int | None = None


async def history(engine: AsyncEngine, f: Filters) -> list[Mapping[str, Any]]:
    """Orders, newest first."""
    o = tables.orders.c
    query = sa.select(tables.orders).order_by(o.created_at.desc(), o.client_order_id)
    for column, value in ((o.account, f.account), (o.symbol, f.symbol), (o.state, f.state),
                          (o.strategy_id, f.strategy)):
        if value is not None:
            query = query.where(column == value)
    query = _between(query, o.created_at, f)
    return await _all(engine, query)


async def fills(engine: AsyncEngine, f: Filters) -> list[Mapping[str, Any]]:
    """Fills in the order they happened."""
    c = tables.fills.c
    query = sa.select(tables.fills).order_by(c.at, c.account, c.symbol, c.fill_id)
    for column, value in ((c.account, f.account), (c.symbol, f.symbol)):
        if value is not None:
            query = query.where(column == value)
    return await _all(engine, _between(query, c.at, f))


async def positions(engine: AsyncEngine, account: str | None = None
                    ) -> list[Mapping[str, Any]]:
    p = tables.positions.c
    query = sa.select(tables.positions).order_by(p.account, p.symbol)
    if account is not None:
        query = query.where(p.account == account)
    return await _all(engine, query)


async def events(engine: AsyncEngine, source: str) -> AsyncIterator[tuple[str, str]]:
    """(entry id, event JSON) of ``source`` in the log's order, a page at a time."""
    e = tables.events.c
    after: tuple[int, int, int] = (-1, -1, -1)
    while True:
        # An entry's several events (event v2) are rows of their own, in their order.
        query = (sa.select(e.entry_ms, e.entry_seq, e.entry_index, e.entry_id, e.data)
                 .where(e.source == source,
                        sa.tuple_(e.entry_ms, e.entry_seq, e.entry_index) > sa.tuple_(*after))
                 .order_by(e.entry_ms, e.entry_seq, e.entry_index).limit(PAGE))
        async with engine.connect() as conn:
            page = (await conn.execute(query)).all()
        for _, _, _, entry_id, data in page:
            yield entry_id, data
        if len(page) < PAGE:
            return
        after = (page[-1][0], page[-1][1], page[-1][2])


async def sources(engine: AsyncEngine) -> list[str]:
    c = tables.cursors.c
    async with engine.connect() as conn:
        return sorted({s for (s,) in (await conn.execute(sa.select(c.source))).all()})


def _between(query: sa.Select[Any], column: Any, f: Filters) -> sa.Select[Any]:
    if f.since is not None:
        query = query.where(column >= f.since)
    if f.until is not None:
        query = query.where(column < f.until)
    if f.limit is not None:
        query = query.limit(f.limit)
    return query


async def _all(engine: AsyncEngine, query: sa.Select[Any]) -> list[Mapping[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]
