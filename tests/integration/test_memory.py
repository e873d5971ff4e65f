"""Redis memory stays bounded: what a request or an order leaves behind is removed once no
one needs it, and never before: an answered request leaves the requests stream, while an
unread or pending one stays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import redis.asyncio as aioredis

from executor.background.retention import TRIM_LIMIT, Retention, reader_lags
from executor.brokers.paper import PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.store import Outcome, Store
from executor.infra.streams import parse_stream_id, positions_caught_up
from producer.client import OrderClient
from producer.contract import Action, Result, ResultStatus
from producer.keys import GROUP, Keys

from .conftest import running
from .test_operator_commands import cli_json

K = Keys()


def answer(rid: str) -> Outcome:
    return Outcome(rid, Result(request_id=rid, action=Action.CANCEL, status=ResultStatus.FAILED,
                               reason_code="not_found", reason="no such order"))


async def test_an_answered_request_is_deleted_and_an_unread_or_pending_one_stays(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    store = Store(r, K, results_maxlen=100, order_ttl_ms=60_000)
    await r.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    ids = [(await r.xadd(K.pending, {"data": "{}"})).decode() for _ in range(3)]
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=2)  # the third stays unread
    # The first is answered; an answer for the unread third is refused (not pending).
    assert await store.finish([answer(ids[0]), answer(ids[2])]) == [ids[2]]
    left = [e.decode() for e, _ in await r.xrange(K.pending)]
    assert left == ids[1:], "only the answered request leaves the stream"
    assert (await r.xpending(K.pending, GROUP))["pending"] == 1
    assert await r.xlen(K.completed) + await r.xlen(K.failed) == 1


async def test_a_worker_leaves_no_answered_request_in_the_stream(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings(batch_size=20)):
        subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(100)]
        subs += [await client.place("NOPE", "buy", "market", "0.001") for _ in range(5)]
        results = await client.wait_results([s.request_id for s in subs], 30)
    assert len(results) == 105
    assert await redis_client.xlen(K.pending) == 0


# -- retention --------------------------------------------------------------------------------


def retention(r: aioredis.Redis, now: int, events_ms: int = 0,
              results_ms: int = 3_600_000) -> Retention:
    return Retention(r, K, events_retention_ms=events_ms, results_retention_ms=results_ms,
                     interval_ms=1_000, clock=lambda: now)


async def fill(r: aioredis.Redis, stream: str, n: int, size: int = 0) -> list[str]:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"data": str(i).ljust(size)})
        return [e.decode() for e in await pipe.execute()]


async def first_id(r: aioredis.Redis, stream: str) -> str:
    return str((await r.xrange(stream, count=1))[0][0].decode())


def at_or_before(a: str, b: str) -> bool:
    return parse_stream_id(a) <= parse_stream_id(b)


async def test_events_are_trimmed_only_behind_the_fold_every_reader_and_the_checkpoint(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    ids = await fill(r, K.events, 1_000)
    now = int(time.time() * 1000) + 1_000  # every entry is past a 0 ms retention window
    trim = retention(r, now)
    assert await trim.once() == {"events": 0, "pending": 0, "completed": 0, "failed": 0}
    await r.set(K.positions_cursor, ids[799])  # the fold is at entry 800
    await r.hset(K.positions, "default:BTCUSDT", '{"quantity":"1"}')
    await r.hset(K.events_readers, "archive", ids[499])  # an archive at entry 500
    # The first pass only takes a checkpoint: nothing goes before one exists.
    assert (await trim.once())["events"] == 0
    assert await r.get(K.positions_base_cursor) == ids[799].encode()
    assert await r.hgetall(K.positions_base) == {b"default:BTCUSDT": b'{"quantity":"1"}'}
    # Then the log goes up to the slowest reader, the archive, and not one entry further.
    removed = (await trim.once())["events"]
    assert removed >= 300 and await r.xlen(K.events) == 1_000 - removed
    assert at_or_before(await first_id(r, K.events), ids[499])
    # The archive catches up: the fold is now the slowest; so far, and no further.
    await r.hset(K.events_readers, "archive", ids[-1])
    removed += (await trim.once())["events"]
    assert removed >= 700 and at_or_before(await first_id(r, K.events), ids[799])
    # A reader whose value is not an entry id holds everything (fail safe).
    await r.set(K.positions_cursor, ids[-1])
    await r.hset(K.events_readers, "broken", "soon")
    assert (await trim.once())["events"] == 0
    await r.hdel(K.events_readers, "broken")
    assert (await trim.once())["events"] > 0
    # The retention window holds what is younger than it, whoever has read it.
    await r.delete(K.events)
    ids = await fill(r, K.events, 500)
    await r.set(K.positions_cursor, ids[-1])
    await r.hset(K.events_readers, "archive", ids[-1])
    assert (await retention(r, now, events_ms=3_600_000).once())["events"] == 0
    assert await r.xlen(K.events) == 500


async def test_nothing_is_trimmed_before_the_positions_fold_has_a_cursor(
    redis_client: aioredis.Redis,
) -> None:
    await fill(redis_client, K.events, 500)
    trim = retention(redis_client, int(time.time() * 1000) + 1_000)
    for _ in range(3):
        assert (await trim.once())["events"] == 0
    assert await redis_client.xlen(K.events) == 500


async def test_results_past_their_retention_are_trimmed(redis_client: aioredis.Redis) -> None:
    r = redis_client
    await fill(r, K.completed, 300)
    await fill(r, K.failed, 300)
    now = int(time.time() * 1000)
    assert (await retention(r, now, results_ms=60_000).once())["completed"] == 0
    removed = await retention(r, now + 61_000, results_ms=60_000).once()
    assert removed["completed"] == removed["failed"] == 300
    assert await r.xlen(K.completed) == await r.xlen(K.failed) == 0


async def test_acknowledged_requests_are_trimmed_never_a_pending_or_unread_one(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    await r.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    # As an older version left them: acknowledged, not deleted.
    acked = await fill(r, K.pending, 250)
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=250)
    await r.xack(K.pending, GROUP, *acked)
    (held,) = await fill(r, K.pending, 1)
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=1)  # in flight
    later = await fill(r, K.pending, 50)
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=50)
    await r.xack(K.pending, GROUP, *later)
    unread = await fill(r, K.pending, 20)
    trim = retention(r, int(time.time() * 1000))
    # A second group that has read nothing holds every entry.
    await r.xgroup_create(K.pending, "audit", id="0")
    assert (await trim.once())["pending"] == 0
    await r.xgroup_destroy(K.pending, "audit")
    removed = (await trim.once())["pending"]
    assert removed >= 200
    left = [e.decode() for e, _ in await r.xrange(K.pending)]
    assert {held, *unread} <= set(left), "a pending or unread request was trimmed"
    assert len(left) == 321 - removed


async def test_each_readers_lag_is_the_age_of_the_oldest_entry_it_has_not_read(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    assert await reader_lags(r, K) == {"positions": 0.0}
    ids = await fill(r, K.events, 3)
    await r.set(K.positions_cursor, ids[-1])
    await r.hset(K.events_readers, "archive", "0-0")
    lags = await reader_lags(r, K)
    assert lags["positions"] == 0.0
    server_ms = int(time.time() * 1000)
    assert 0 <= lags["archive"] <= (server_ms - int(ids[0].partition("-")[0])) / 1000 + 1
    await asyncio.sleep(0.05)
    assert (await reader_lags(r, K))["archive"] >= 0.05
    await r.hset(K.events_readers, "archive", ids[-1])
    assert await reader_lags(r, K) == {"positions": 0.0, "archive": 0.0}


async def test_replay_checks_a_log_the_workers_trimmed(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    settings = make_settings(events_retention_ms=0, retention_interval_ms=100)
    async with running(settings) as worker:
        # An order that rests across the trims, and fills after them.
        (early,) = [await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                       time_in_force="gtc")]
        subs = [await client.place("BTCUSDT", "buy" if i % 2 else "sell", "market", "0.001")
                for i in range(300)]
        await client.wait_results([early.request_id, *[s.request_id for s in subs]], 30)
        for _ in range(200):
            if await r.exists(K.events_trimmed):
                break
            await asyncio.sleep(0.05)
        first = (await r.xrange(K.events, count=1))[0][0].decode()
        assert await r.get(K.events_trimmed), "the workers trimmed the log"
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        await paper.set_price("BTCUSDT", Decimal("48900"))
        for _ in range(200):
            if await r.hget(K.order(early.client_order_id or ""), "state") == b"filled":
                break
            await asyncio.sleep(0.05)
        await positions_caught_up(r, K, 30)
    written = (await r.xinfo_stream(K.events))["entries-added"]
    assert written >= 301  # a write at least per order, an entry each
    assert parse_stream_id(first) > (0, 0) and await r.xlen(K.events) < written
    code, report = await cli_json(settings.redis.url, "replay")
    assert code == 0 and report["ok"], report["differences"]
    assert report["history_trimmed"] > 0 and report["positions_checked"]


async def test_a_pass_trims_everything_due_however_many_calls_it_takes(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    # Entries the size of real ones: a stream node (4 KB) holds a few, not 100.
    ids = await fill(r, K.events, 3 * TRIM_LIMIT, size=300)
    await fill(r, K.completed, 3 * TRIM_LIMIT, size=300)
    await r.set(K.positions_cursor, ids[-1])
    trim = retention(r, int(time.time() * 1000) + 1_000, results_ms=1)
    first = await trim.once()  # the checkpoint; the results go at once
    assert first["events"] == 0 and first["completed"] == 3 * TRIM_LIMIT
    # Each call removes whole stream nodes, at most TRIM_LIMIT entries: a pass goes on.
    assert (await trim.once())["events"] >= 3 * TRIM_LIMIT - 100
