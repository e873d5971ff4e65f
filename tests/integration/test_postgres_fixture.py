"""The PostgreSQL fixtures and PostgresServer really work (a real server, no fakes)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

# NUMERIC(38, 18): 20 digits before the point and 18 after, the widest values an archive of
# prices and quantities is meant to keep exactly.
EXTREMES = [
    Decimal("0.000000000000000001"),
    Decimal("-0.000000000000000001"),
    Decimal("99999999999999999999.123456789012345678"),
    Decimal("-99999999999999999999.123456789012345678"),
    Decimal("99999999999999999999.999999999999999999"),
    Decimal("0"),
]


async def _scalar(url: str, query: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(query))).scalar_one()
    finally:
        await engine.dispose()


async def test_server_answers(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert await _scalar(postgres_server.url, "select 1") == 1
    assert await _scalar(postgres_url, "select 1") == 1
    assert postgres_url.startswith(f"postgresql+asyncpg://orderstream@127.0.0.1:"
                                   f"{postgres_server.port}/")
    # Ours, not a system cluster that happened to answer.
    assert await _scalar(postgres_url, "show data_directory") == str(postgres_server.data_dir)
    assert await _scalar(postgres_url, "show server_encoding") == "UTF8"


async def test_each_url_is_its_own_database(postgres_database: Callable[[], str]) -> None:
    first, second = postgres_database(), postgres_database()
    assert first != second
    one, two = create_async_engine(first), create_async_engine(second)
    try:
        async with one.begin() as conn:
            await conn.execute(sa.text("create table only_here (x int)"))
            await conn.execute(sa.text("insert into only_here values (1)"))
        async with two.connect() as conn:
            assert await conn.run_sync(lambda c: sa.inspect(c).get_table_names()) == []
        async with one.connect() as conn:
            assert (await conn.execute(sa.text("select x from only_here"))).scalar_one() == 1
    finally:
        await one.dispose()
        await two.dispose()


# The same table made by two tests: whichever runs second would find the first one's table
# if the databases were shared between tests.
@pytest.mark.parametrize("run", [1, 2])
async def test_a_test_starts_with_an_empty_database(postgres_url: str, run: int) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            assert await conn.run_sync(lambda c: sa.inspect(c).get_table_names()) == []
            await conn.execute(sa.text("create table left_behind (run int)"))
            await conn.execute(sa.text(f"insert into left_behind values ({run})"))
    finally:
        await engine.dispose()


async def test_numeric_round_trips_decimals_exactly(postgres_url: str) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "amounts", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fixed", sa.Numeric(38, 18, asdecimal=True), nullable=False),
        sa.Column("free", sa.Numeric(asdecimal=True), nullable=False),  # no precision limit
    )
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(table.insert(), [
                {"id": i, "fixed": value, "free": value} for i, value in enumerate(EXTREMES)
            ])
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(table).order_by(table.c.id))).all()
            total = (await conn.execute(sa.select(sa.func.sum(table.c.fixed)))).scalar_one()
    finally:
        await engine.dispose()
    assert [row.fixed for row in rows] == EXTREMES
    assert [row.free for row in rows] == EXTREMES
    for row, value in zip(rows, EXTREMES, strict=True):
        assert type(row.fixed) is Decimal and type(row.free) is Decimal
        # Same digits, not merely an equal float: the unbounded column keeps the input's.
        assert str(row.free) == str(value)
        assert row.fixed.as_tuple().exponent == -18
    # Summed in the server, exactly; Python's default 28 digits would round the expected sum.
    with localcontext(prec=60):
        assert total == sum(EXTREMES, Decimal(0))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_server_stops_and_removes_its_directory(postgres_bin_dir: Path) -> None:
    server = PostgresServer(postgres_bin_dir)
    with server:
        base, port = server.base_dir, server.port
        assert server.running and (server.data_dir / "PG_VERSION").is_file()
        url = server.create_database("scratch")
        assert await _scalar(url, "select current_database()") == "scratch"
        # An open connection must not hold up the stop (fast shutdown ends it).
        engine = create_async_engine(url)
        conn = await engine.connect()
    try:
        assert not server.running
        assert not base.exists()
        assert not _port_open(port)
    finally:
        # The connection was closed by the server: dispose without waiting on it.
        await conn.invalidate()
        await engine.dispose()


def test_start_failure_shows_the_log(postgres_bin_dir: Path) -> None:
    server = PostgresServer(postgres_bin_dir, extra_args=["-c", "no_such_setting=1"],
                            start_timeout=15)
    with pytest.raises(RuntimeError, match="no_such_setting"):
        server.start()
    assert not server.running
