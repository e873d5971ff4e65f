"""The result streams (orders:completed, orders:failed) are trimmed behind their registered
readers (an archive): neither their age nor the results_maxlen cap drops an entry a reader
has not durably processed, and the probe tells how far behind each reader is."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from executor.background.probes import Probe
from executor.background.retention import Retention, result_reader_lags
from executor.infra.metrics import Metrics
from executor.infra.store import Outcome, Store
from executor.infra.streams import parse_stream_id
from producer.contract import Action, Result, ResultStatus
from producer.keys import GROUP, Keys

K = Keys()
HOUR_MS = 3_600_000
# (stream, its readers hash, a result's reason code that sends it there)
STREAMS = {"completed": (K.completed, K.completed_readers, None),
           "failed": (K.failed, K.failed_readers, "not_found")}


def retention(r: aioredis.Redis, now: int, results_ms: int = HOUR_MS,
              maxlen: int = 0) -> Retention:
    return Retention(r, K, events_retention_ms=HOUR_MS, results_retention_ms=results_ms,
                     interval_ms=1_000, clock=lambda: now, results_maxlen=maxlen)


async def fill(r: aioredis.Redis, stream: str, n: int) -> list[str]:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(stream, {"data": str(i)})
        return [e.decode() for e in await pipe.execute()]


async def kept(r: aioredis.Redis, stream: str) -> list[str]:
    return [e.decode() for e, _ in await r.xrange(stream)]


def unread_all_kept(ids: list[str], left: list[str], reader_at: int) -> bool:
    """Every entry after the reader's position (ids[reader_at]) is still in the stream."""
    return set(ids[reader_at + 1:]) <= set(left)


@pytest.mark.parametrize("name", list(STREAMS))
async def test_results_past_their_age_are_trimmed_only_behind_every_reader(
    redis_client: aioredis.Redis, name: str,
) -> None:
    r = redis_client
    stream, readers, _ = STREAMS[name]
    ids = await fill(r, stream, 1_000)
    old = retention(r, int(time.time() * 1000) + 61_000, results_ms=60_000)  # all past it
    await r.hset(readers, mapping={"archive": ids[499], "audit": ids[799]})
    removed = (await old.once())[name]
    left = await kept(r, stream)
    assert 300 <= removed <= 500 and len(left) == 1_000 - removed
    assert unread_all_kept(ids, left, 499), "an entry the archive has not read was trimmed"
    # The archive catches up: the other reader is now the slowest; so far, no further.
    await r.hset(readers, "archive", ids[-1])
    removed += (await old.once())[name]
    left = await kept(r, stream)
    assert removed >= 700 and unread_all_kept(ids, left, 799)
    # Both are retired: the age alone decides again.
    await r.hdel(readers, "archive", "audit")
    assert (await old.once())[name] == len(left) and await r.xlen(stream) == 0


async def test_a_reader_of_one_result_stream_holds_that_stream_only(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    await fill(r, K.completed, 300)
    await fill(r, K.failed, 300)
    await r.hset(K.failed_readers, "archive", "0-0")
    removed = await retention(r, int(time.time() * 1000) + 61_000, results_ms=60_000).once()
    assert removed["completed"] == 300 and removed["failed"] == 0
    assert await r.xlen(K.failed) == 300


async def test_a_reader_whose_position_is_not_an_entry_id_holds_everything(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    ids = await fill(r, K.completed, 500)
    old = retention(r, int(time.time() * 1000) + 61_000, results_ms=60_000, maxlen=100)
    await r.hset(K.completed_readers, mapping={"archive": ids[-1], "broken": "soon"})
    for _ in range(2):
        assert (await old.once())["completed"] == 0
    assert await r.xlen(K.completed) == 500
    await r.hdel(K.completed_readers, "broken")
    # Up to the archive (whole stream nodes: the last one, holding its entry, stays).
    assert 400 <= (await old.once())["completed"] < 500


async def test_the_results_are_kept_within_their_age_whoever_has_read_them(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    ids = await fill(r, K.completed, 300)
    await r.hset(K.completed_readers, "archive", ids[-1])
    assert (await retention(r, int(time.time() * 1000)).once())["completed"] == 0
    assert await r.xlen(K.completed) == 300


# -- the results_maxlen cap ---------------------------------------------------------------


async def answer_many(r: aioredis.Redis, store: Store, n: int,
                      reason_code: str | None) -> None:
    """n requests answered through Store.finish (finish.lua), as workers answer them."""
    await r.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    rids = await fill(r, K.pending, n)
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=n)
    status = ResultStatus.FAILED if reason_code else ResultStatus.CANCELLED
    for i in range(0, n, 50):  # batches, as a worker writes them
        await store.finish([Outcome(rid, Result(request_id=rid, action=Action.CANCEL,
                                                status=status, reason_code=reason_code))
                            for rid in rids[i:i + 50]])


@pytest.mark.parametrize("name", list(STREAMS))
async def test_the_cap_on_adding_results_holds_only_while_the_stream_has_no_reader(
    redis_client: aioredis.Redis, name: str,
) -> None:
    r = redis_client
    stream, readers, reason_code = STREAMS[name]
    store = Store(r, K, results_maxlen=10, order_ttl_ms=60_000)
    await r.hset(readers, "archive", "0-0")  # registered before it starts
    await answer_many(r, store, 500, reason_code)
    assert await r.xlen(stream) == 500, "the cap dropped results the archive has not read"
    await r.hdel(readers, "archive")
    await r.delete(K.pending)
    await answer_many(r, store, 500, reason_code)
    assert await r.xlen(stream) < 500, "without a reader the stream is capped as it grows"


async def test_retention_enforces_the_cap_behind_the_readers(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    ids = await fill(r, K.completed, 1_000)
    young = retention(r, int(time.time() * 1000), maxlen=300)  # nothing is past its age
    await r.hset(K.completed_readers, "archive", "0-0")
    assert (await young.once())["completed"] == 0
    await r.hset(K.completed_readers, "archive", ids[399])
    removed = (await young.once())["completed"]
    left = await kept(r, K.completed)
    assert 300 <= removed <= 400 and unread_all_kept(ids, left, 399)
    # Caught up: down to the cap (whole stream nodes), never below it.
    await r.hset(K.completed_readers, "archive", ids[-1])
    await young.once()
    assert 300 <= await r.xlen(K.completed) < 400
    assert (await kept(r, K.completed))[-300:] == ids[-300:]
    # No reader: the cap alone (what reclaim.py's uncapped dead letters may overrun).
    await fill(r, K.failed, 1_000)
    assert 600 <= (await young.once())["failed"] <= 700


# -- lag ----------------------------------------------------------------------------------


async def test_a_result_readers_lag_is_the_age_of_the_oldest_entry_it_has_not_read(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    assert await result_reader_lags(r, K) == {}
    ids = await fill(r, K.completed, 3)
    await fill(r, K.failed, 1)
    await r.hset(K.completed_readers, "archive", ids[0])
    await r.hset(K.failed_readers, "archive", "broken")  # holds all: as far behind as all
    await asyncio.sleep(0.05)
    lags = await result_reader_lags(r, K)
    assert set(lags) == {("completed", "archive"), ("failed", "archive")}
    server_ms = int(time.time() * 1000)
    assert 0.05 <= lags["completed", "archive"] <= (
        server_ms - parse_stream_id(ids[1])[0]) / 1000 + 1
    assert lags["failed", "archive"] >= 0.05
    await r.hset(K.completed_readers, "archive", ids[-1])
    await r.hdel(K.failed_readers, "archive")
    assert await result_reader_lags(r, K) == {("completed", "archive"): 0.0}


async def test_the_probe_exports_each_result_readers_lag_and_drops_a_retired_one(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    await fill(r, K.failed, 2)
    await r.hset(K.failed_readers, "archive", "0-0")
    await asyncio.sleep(0.05)
    metrics = Metrics()
    probe = Probe(r, K, metrics, {}, {})
    await probe._readers()
    gauge = metrics.result_reader_lag
    assert gauge.labels("failed", "archive")._value.get() >= 0.05
    await r.hdel(K.failed_readers, "archive")
    await probe._readers()
    assert not [s for m in metrics.registry.collect() for s in m.samples
                if s.name == "orderstream_result_reader_lag_seconds"]
