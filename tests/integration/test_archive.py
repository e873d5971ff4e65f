"""The SQL archive against a real redis-server with real workers, on SQLite and on a real
PostgreSQL: every entry of the events and result streams stored exactly once (across
SIGKILLs, re-runs and two archives at once), amounts exact, the archive's positions equal
to the workers' fold, replay from the archive agreeing with Redis, and retention holding
what the archive has not stored."""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.archive import migrate, rows, tables
from executor.archive.archiver import Archiver
from executor.archive.store import ArchiveStore, engine
from executor.background.retention import Retention
from executor.config import Settings
from executor.infra.streams import positions_caught_up
from executor.model.positions import decode_position
from executor.operations.archive_cli import assets_source
from executor.operations.risk_commands import set_limits
from producer.client import OrderClient
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    decimal_text,
    decode_events,
    encode,
    wire,
)
from producer.keys import Keys

from .conftest import events_in, running

K = Keys()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(archive_url: str) -> AsyncIterator[AsyncEngine]:
    made = engine(archive_url)
    await migrate.upgrade(made)
    yield made
    await made.dispose()


def archiver(redis: aioredis.Redis, db: AsyncEngine, settings: Settings, *,
             batch: int = 1000, source: str | None = None) -> Archiver:
    return Archiver(redis, K, ArchiveStore(db), assets=assets_source(redis, settings, K.prefix),
                    batch=batch, block_ms=100, source=source)


async def drain(a: Archiver) -> None:
    await a.register()
    while await a.once():
        pass


async def trade(make_settings: Callable[..., Settings], client: OrderClient,
                redis: aioredis.Redis, n: int) -> None:
    """``n`` orders of every kind the paper exchange answers: market fills both ways, a
    resting limit then cancelled, a request refused by validation."""
    async with running(make_settings()):
        subs = []
        for i in range(n):
            side = "buy" if i % 3 else "sell"
            subs.append(await client.place("BTCUSDT", side, "market", f"0.00{1 + i % 7}"))
        rest = await client.place("ETHUSDT", "buy", "limit", "0.5", price="1.25")
        subs.append(rest)
        await client.wait_results([s.request_id for s in subs], 30)
        cancel = await client.cancel(rest.client_order_id)
        # Refused before any order is made: a result on the failed stream, no order.
        bad = (await redis.xadd(K.pending, {"data": b'{"action":"place","symbol":"BTCUSDT"}'}
                                )).decode()
        await client.wait_results([cancel.request_id, bad], 10)
        assert await positions_caught_up(redis, K, 10, poll_s=0.05)


async def stream_ids(redis: aioredis.Redis, stream: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(stream)]


async def scalar(db: AsyncEngine, query: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(query)).scalar()


async def column(db: AsyncEngine, query: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def assert_archived_exactly(redis: aioredis.Redis, db: AsyncEngine) -> None:
    """Every entry of the three streams stored once, and nothing else; the positions equal
    the workers' fold."""
    e, r = tables.events.c, tables.results.c
    async with db.connect() as conn:
        events = [tuple(row) for row in (await conn.execute(
            sa.select(e.entry_id, e.entry_index, e.client_order_id, e.seq)
            .order_by(e.entry_ms, e.entry_seq, e.entry_index))).all()]
    # Each event a row, an entry's several (event v2) numbered in their order.
    assert events == [(i.decode(), n, event.client_order_id, event.seq)
                      for i, f in await redis.xrange(K.events)
                      for n, event in enumerate(decode_events(f[b"data"]))]
    assert any(n > 0 for _, n, _, _ in events), "writes of several transitions are archived"
    for stream, key in (("completed", K.completed), ("failed", K.failed)):
        stored = await column(db, sa.select(r.entry_id).where(r.stream == stream))
        assert sorted(stored) == sorted(await stream_ids(redis, key))
    fills = await column(db, sa.select(sa.func.count()).select_from(tables.fills))
    assert fills == [sum(1 for x in await events_in(redis) if x.fill is not None)]
    await assert_positions_equal(redis, db)


async def assert_positions_equal(redis: aioredis.Redis, db: AsyncEngine) -> None:
    async with db.connect() as conn:
        archived = {(row["account"], row["symbol"]): rows.position_from_row(dict(row))
                    for row in (await conn.execute(sa.select(tables.positions))).mappings()}
    folded = {(p.account, p.symbol): p for p in
              map(decode_position, (await redis.hgetall(K.positions)).values())}
    assert archived == folded
    assert archived  # the trades moved something


async def test_every_entry_is_archived_once_with_its_orders_fills_and_positions(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    await trade(make_settings, client, redis_client, 30)
    a = archiver(redis_client, db, make_settings(), batch=7)
    await drain(a)
    await assert_archived_exactly(redis_client, db)
    o = tables.orders.c
    async with db.connect() as conn:
        states = dict((await conn.execute(
            sa.select(o.state, sa.func.count()).group_by(o.state))).all())
        limit = (await conn.execute(sa.select(tables.orders).where(
            o.symbol == "ETHUSDT"))).mappings().one()
    assert states == {"filled": 30, "cancelled": 1}
    assert (limit["type"], limit["price"], limit["quantity"], limit["state"]) == (
        "limit", Decimal("1.25"), Decimal("0.5"), "cancelled")
    failed = await column(db, sa.select(tables.results.c.reason_code).where(
        tables.results.c.stream == "failed"))
    assert len(failed) == 1 and failed[0]
    # Redis is told how far the archive has durably read, stream by stream.
    for stream, readers in ((K.events, K.events_readers), (K.completed, K.completed_readers),
                            (K.failed, K.failed_readers)):
        last = (await stream_ids(redis_client, stream))[-1]
        assert await redis_client.hget(readers, "archive") == last.encode()


async def test_a_rerun_from_the_start_stores_and_folds_nothing_twice(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    await trade(make_settings, client, redis_client, 12)
    await drain(archiver(redis_client, db, make_settings()))
    async with db.begin() as conn:
        await conn.execute(sa.update(tables.cursors).values(last_id="0-0"))
    await drain(archiver(redis_client, db, make_settings(), batch=5))
    await assert_archived_exactly(redis_client, db)


async def test_two_archives_at_once_store_each_entry_once(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    await trade(make_settings, client, redis_client, 40)
    first = archiver(redis_client, db, make_settings(), batch=6)
    second = archiver(redis_client, db, make_settings(), batch=9)
    await asyncio.gather(drain(first), drain(second))
    await drain(first)  # whichever lost the last race catches up
    await assert_archived_exactly(redis_client, db)
    assert first.archived + second.archived >= len(await stream_ids(redis_client, K.events))


def archive_process(redis_url: str, archive_url: str, log: Path, *args: str,
                    batch: int = 1000) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "ORDERSTREAM_ARCHIVE_URL": archive_url,
           "ORDERSTREAM_ARCHIVE_BATCH": str(batch), "ORDERSTREAM_ARCHIVE_BLOCK_MS": "100"}
    env.pop("ORDERSTREAM_CONFIG", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "executor", "archive", *args],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)


async def test_an_archive_killed_mid_batch_and_restarted_stores_every_row_once(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, redis_url: str, archive_url: str, db: AsyncEngine,
    tmp_path: Path,
) -> None:
    await trade(make_settings, client, redis_client, 150)
    log = tmp_path / "archive.log"
    c = tables.cursors.c
    rng = random.Random(19)
    kills = 0
    last = await column(db, sa.select(c.last_id).order_by(c.stream))
    for _ in range(6):
        proc = archive_process(redis_url, archive_url, log, batch=15)
        try:
            for _ in range(400):  # until it has committed something new, then at random
                now = await column(db, sa.select(c.last_id).order_by(c.stream))
                if now != last or proc.poll() is not None:
                    break
                await asyncio.sleep(0.025)
            await asyncio.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            proc.wait(10)
        last = await column(db, sa.select(c.last_id).order_by(c.stream))
    assert kills >= 3
    done = archive_process(redis_url, archive_url, log, "--once", batch=15)
    assert done.wait(120) == 0, log.read_text()
    await assert_archived_exactly(redis_client, db)


async def test_replay_from_the_archive_agrees_with_redis(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, redis_url: str, archive_url: str, db: AsyncEngine,
) -> None:
    await trade(make_settings, client, redis_client, 10)
    await drain(archiver(redis_client, db, make_settings()))
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("ORDERSTREAM_CONFIG", None)
    ok = subprocess.run([sys.executable, "-m", "executor", "replay", "--redis-url", redis_url,
                         "--from-archive", "--archive-url", archive_url, "--json"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"ok":true' in ok.stdout
    # A position the archive's fills do not make is a difference.
    held = decode_position((await redis_client.hget(K.positions, "default:BTCUSDT")) or b"")
    await redis_client.hset(K.positions, "default:BTCUSDT", encode(
        msgspec.structs.replace(held, quantity=Decimal("123"))))
    bad = subprocess.run([sys.executable, "-m", "executor", "replay", "--redis-url", redis_url,
                          "--from-archive", "--archive-url", archive_url], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "quantity" in bad.stdout


EXTREMES = [Decimal("99999999999999999999.99999999999999999999"),
            Decimal("0.00000000000000000001"), Decimal("1E-20"), Decimal("0.10"),
            Decimal("12345678901234567890.12345678901234567890"), Decimal("5E+19")]


async def test_amounts_round_trip_exactly_at_the_contracts_extremes(db: AsyncEngine) -> None:
    store = ArchiveStore(db)
    entries = []
    for n, plain in enumerate(EXTREMES, 1):
        amount = wire(plain)  # as the workers write them: fixed-point text
        spec = OrderSpec(account="x", symbol="S", side=Side.BUY, type=OrderType.LIMIT,
                         quantity=amount, price=amount)  # type: ignore[arg-type]
        cid = f"c{n}"
        fill = Fill(fill_id=f"f{n}", price=amount, quantity=amount,  # type: ignore[arg-type]
                    commission=amount, commission_asset="Q")  # type: ignore[arg-type]
        for seq, (state, more) in enumerate(
                [(OrderState.CREATED, {"order": spec}),
                 (OrderState.FILLED, {"fill": fill, "filled_quantity": amount,
                                      "average_price": amount})], 1):
            event = Event(client_order_id=cid, seq=seq, state=state, at=n, account="x",
                          symbol="S", **more)  # type: ignore[arg-type]
            entries.append(rows.Entry(rows.EVENTS, f"{n}-{seq}", {b"data": encode(event)}))
    cursors = await store.cursors("orders")
    await store.write(rows.decode("orders", entries), cursors, {("x", "S"): ("B", "Q")})
    o, f = tables.orders.c, tables.fills.c
    async with db.connect() as conn:
        got = (await conn.execute(sa.select(o.client_order_id, o.quantity, o.price,
                                            o.average_price).order_by(o.created_at))).all()
        fills = (await conn.execute(sa.select(f.price, f.quantity, f.commission)
                                    .order_by(f.fill_id))).all()
        position = (await conn.execute(sa.select(tables.positions))).mappings().one()
    assert len(got) == len(EXTREMES)
    for (_, quantity, price, average), amount in zip(got, EXTREMES, strict=True):
        for value in (quantity, price, average):
            assert value == amount and isinstance(value, Decimal)
            assert decimal_text(value) == decimal_text(amount)  # "0.10" stays "0.10"
    for price, quantity, commission in fills:
        assert price * quantity >= 0 and commission in EXTREMES
    # The position's amounts are products and sums far past 40 digits: kept to the digit.
    with decimal.localcontext(prec=100):
        expected = sum(EXTREMES, Decimal(0))
    assert position["quantity"] == expected
    assert decimal_text(position["quantity"]) == "162345678901234567890.22345678901234567891"


async def test_retention_keeps_what_the_archive_has_not_stored(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    a = archiver(redis_client, db, make_settings())
    await a.register()  # at the start of every stream, before any entry
    await trade(make_settings, client, redis_client, 8)
    clock = {"now": 10**15}
    retention = Retention(redis_client, K, events_retention_ms=0, results_retention_ms=1,
                          interval_ms=1000, clock=lambda: clock["now"])
    before = {s: await stream_ids(redis_client, s) for s in (K.events, K.completed)}
    await retention.once()
    for stream, ids in before.items():
        assert await stream_ids(redis_client, stream) == ids, stream
    while await a.once():
        pass
    await assert_archived_exactly(redis_client, db)
    removed = await retention.once()
    assert removed["events"] > 0 and removed["completed"] > 0
    assert len(await stream_ids(redis_client, K.events)) < len(before[K.events])


async def test_the_migrations_make_exactly_the_tables_the_code_writes(db: AsyncEngine) -> None:
    def differences(sync: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync), tables.metadata))

    async with db.connect() as conn:
        assert await conn.run_sync(differences) == []
    assert await migrate.current(db) == migrate.head()
    await migrate.check(db)  # at the head: no complaint
    async with db.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(migrate.config(sync), "base"))
    assert await migrate.current(db) is None
    with pytest.raises(migrate.SchemaError, match="--init"):
        await migrate.check(db)
    # A database archived by the first version gains the audit stream's cursor, at 0-0.
    assert await migrate.upgrade(db, "0001") == (None, "0001")
    with pytest.raises(migrate.SchemaError, match="--upgrade"):
        await migrate.check(db)
    async with db.begin() as conn:
        await conn.execute(sa.text("INSERT INTO archive_cursors VALUES "
                                   "('{orders-1}', 'events', '5-0', 1)"))
    assert await migrate.upgrade(db, "0002") == ("0001", "0002")
    # An event archived before event v2 is its entry's only one: it keeps its row, as 0.
    async with db.begin() as conn:
        await conn.execute(sa.text(
            "INSERT INTO order_events (source, entry_id, entry_ms, entry_seq, "
            "client_order_id, data) VALUES ('{orders-1}', '5-0', 5, 0, 'c1', '{}')"))
    assert await migrate.upgrade(db) == ("0002", migrate.head())
    assert await ArchiveStore(db).cursors("{orders-1}") == {
        "events": "5-0", "audit": "0-0", "completed": "0-0", "failed": "0-0"}
    e = tables.events.c
    async with db.begin() as conn:
        assert (await conn.execute(sa.select(e.entry_id, e.entry_index))).all() == [("5-0", 0)]
        # The same entry's second event is a row of its own; the first stays one.
        await conn.execute(sa.insert(tables.events).values(
            source="{orders-1}", entry_id="5-0", entry_ms=5, entry_seq=0, entry_index=1,
            client_order_id="c1", data="{}"))
        with pytest.raises(sa.exc.IntegrityError):
            async with conn.begin_nested():
                await conn.execute(sa.insert(tables.events).values(
                    source="{orders-1}", entry_id="5-0", entry_ms=5, entry_seq=0,
                    entry_index=1, client_order_id="c1", data="{}"))


async def test_operator_actions_and_the_latest_risk_limits_are_archived(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    await set_limits(redis_client, K, "default", {"max_open_orders": "7"}, by="ana@desk")
    await set_limits(redis_client, K, "default", {"max_quantity": "9"}, symbol="BTCUSDT",
                     by="ben@desk")
    a = archiver(redis_client, db, make_settings())
    await drain(a)
    rerun = archiver(redis_client, db, make_settings())
    async with db.begin() as conn:  # an old cursor must not write older limits back
        await conn.execute(sa.update(tables.cursors).values(last_id="0-0"))
    await drain(rerun)
    actions = await column(db, sa.select(tables.actions.c.entry_id).order_by(
        tables.actions.c.entry_id))
    assert actions == await stream_ids(redis_client, K.audit)
    async with db.connect() as conn:
        (row,) = (await conn.execute(sa.select(tables.risk_limits))).mappings().all()
    assert (row["account"], row["set_by"]) == ("default", "ben@desk")
    limits = json.loads(row["limits"])
    assert limits["max_open_orders"] == 7
    assert limits["symbols"]["BTCUSDT"]["max_quantity"] == "9"


async def test_deployments_sharing_a_database_keep_their_own_cursors_fills_and_positions(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    # Two deployments with the same key prefix (here, for the test, the same streams): the
    # same paper fill ids, the same account names, kept apart by their names.
    await trade(make_settings, client, redis_client, 6)
    desks = [archiver(redis_client, db, make_settings(), source=f"{name}/orders")
             for name in ("desk-a", "desk-b")]
    for desk in desks:
        await drain(desk)
    f, p = tables.fills.c, tables.positions.c
    fill_events = [x for x in await events_in(redis_client) if x.fill is not None]
    for desk in desks:
        assert await column(db, sa.select(sa.func.count()).where(f.source == desk.source)) \
            == [len(fill_events)]
        async with db.connect() as conn:
            rows_ = (await conn.execute(sa.select(tables.positions)
                                        .where(p.source == desk.source))).mappings().all()
        folded = [decode_position(v) for v in (await redis_client.hgetall(K.positions)).values()]
        key = lambda x: (x.account, x.symbol)  # noqa: E731
        assert sorted((rows.position_from_row(dict(r)) for r in rows_), key=key) == sorted(
            folded, key=key)


async def test_a_failing_pass_stores_nothing_and_the_archive_carries_on(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, db: AsyncEngine,
) -> None:
    await trade(make_settings, client, redis_client, 4)
    good = archiver(redis_client, db, make_settings())
    failures = {"left": 2}

    async def flaky() -> rows.Assets:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a bug of ours")
        return await good.assets()

    a = Archiver(redis_client, K, ArchiveStore(db), assets=flaky, batch=1000, block_ms=50)
    total = len(await stream_ids(redis_client, K.events))
    await asyncio.wait_for(a.run(lambda: a.archived < total, pause_s=0.005), 10)
    assert failures["left"] == 0
    while await a.once():
        pass
    await assert_archived_exactly(redis_client, db)
