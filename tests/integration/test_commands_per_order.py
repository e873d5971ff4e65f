"""What a batch costs Redis in commands: a command is most of a script's cost in Redis, so
the writes and reads that a batch makes for every order it holds are one command for the
batch where one can answer for all (a run of HGETs of absent records: one EXISTS; the
reservations set, checked or released: one HSET, HMGET or HDEL of their hash; the orders
final at once: one ZADD), and each answer is still the one the per-order commands gave."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.background.projector import Projector
from executor.config import Settings
from executor.infra.batch_read import BatchRead, BatchReader
from executor.infra.store import NewOrder, Store
from executor.model.order import Context, new_order
from executor.safety.risk.book import Reservation
from executor.safety.risk.state import RiskState, Write, open_key
from producer.client import OrderClient
from producer.contract import (
    OrderSpec,
    OrderType,
    ResultStatus,
    Side,
    WireDecimal,
    encode,
)
from producer.keys import Keys

from .conftest import filled, running, until

K = Keys()
# The commands an order's way through the worker, the paper exchange and the positions fold
# makes (the background loops' reads are not among them: they do not grow with orders).
PER_ORDER = ("xadd", "hset", "hsetnx", "hget", "hmget", "hdel", "exists", "pexpire", "zadd",
             "zrem", "sadd", "srem", "xpending")


async def calls(r: aioredis.Redis) -> dict[str, int]:
    stats: Any = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_a_burst_of_market_orders_costs_at_most_eight_commands_an_order(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """Issue 15's target, counted end to end: a batch of market orders read at once, taken
    at the paper exchange's door, answered, and folded into the positions (reservations
    released), each order at most eight commands, where it was twelve."""
    n = 60
    subs = [await client.place("BTCUSDT", "buy" if i % 2 else "sell", "market", "0.001")
            for i in range(n)]
    await redis_client.config_resetstat()
    async with running(make_settings(batch_size=n)):
        results = [await client.wait_result(s.request_id, 20) for s in subs]

        async def folded() -> bool:  # every reservation released by the positions fold
            return not await redis_client.hlen(K.risk("default", "open"))
        await until(folded, 20)
        counted = await calls(redis_client)
    assert [r.status for r in results] == [ResultStatus.FILLED] * n
    assert await redis_client.hlen(K.risk("default", "open")) == 0
    per_order = sum(counted.get(name, 0) for name in PER_ORDER) / n
    assert per_order <= 8, {name: counted.get(name, 0) for name in PER_ORDER}
    # The batch's one-for-all commands: as many for 60 orders as for one.
    assert counted.get("exists", 0) <= 4 and counted.get("hmget", 0) <= 12
    assert counted.get("hdel", 0) <= 4 and counted.get("zadd", 0) <= 4


async def test_a_run_of_reads_of_absent_records_is_one_exists_and_each_answer_as_before(
        redis_client: aioredis.Redis) -> None:
    await redis_client.hset("rec:b", mapping={"record": "B"})
    await redis_client.hset("h", mapping={"state": "closed"})
    reader = BatchReader(redis_client)

    def queue(pipe: Any, names: str) -> None:
        for name in names:
            pipe.hget(f"rec:{name}", "record")
        pipe.hget("h", "state")

    for names, expected in (("acde", [None] * 4), ("abcd", [None, b"B", None, None])):
        async with redis_client.pipeline(transaction=True) as pipe:
            queue(pipe, names)
            multi = await pipe.execute()
        batch = BatchRead()
        queue(batch, names)
        await redis_client.config_resetstat()
        got = await reader.execute(batch)
        counted = await calls(redis_client)
        assert got == multi == [*expected, b"closed"]
        # All absent: one EXISTS for the run; one there: each read, as before.
        assert counted.get("exists") == 1
        assert counted.get("hget") == (1 if names == "acde" else 5)


def _reservation(cid: str) -> Reservation:
    return Reservation(request_id=f"1-{cid}", symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal("1"), price=WireDecimal("50000"), at=1)


async def _reserved(r: aioredis.Redis) -> set[str]:
    return {k.decode() for k in await r.hkeys(open_key(K, "default"))}


async def test_a_batch_s_reservations_are_one_hset_checked_by_one_hmget_dropped_by_one_hdel(
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    state = RiskState(r, K)
    snap = await state.snapshot("default", "x")
    await r.config_resetstat()
    assert await state.commit("default", "x", snap, Write(put=[
        (cid, _reservation(cid), True) for cid in "abcd"]))
    counted = await calls(r)
    assert await _reserved(r) == set("abcd")
    # One for the reservations, one for the account's totals.
    assert counted["hset"] == 2
    # Dropping three as read, one of which moved since (the projector shrank it): nothing
    # is written, the three are still there.
    snap = await state.snapshot("default", "x", ["a", "b", "c"])
    await r.hset(open_key(K, "default"), "b", b"moved")
    drop = [(cid, snap.reservations[cid]) for cid in "abc"]
    assert not await state.commit("default", "x", snap, Write(drop=drop))
    assert await _reserved(r) == set("abcd")
    # As read: one HMGET checks them and one HDEL drops them (the other HMGET reads the
    # trading states the commit compares).
    snap = await state.snapshot("default", "x", ["a", "c", "d"])
    await r.config_resetstat()
    drop = [(cid, snap.reservations[cid]) for cid in "acd"]
    assert await state.commit("default", "x", snap, Write(drop=drop))
    counted = await calls(r)
    assert await _reserved(r) == {"b"}
    assert (counted["hmget"], counted["hdel"]) == (2, 1)


@pytest.mark.parametrize("moved", [False, True])
async def test_a_fold_page_releases_its_orders_reservations_with_one_hdel(
        redis_client: aioredis.Redis, moved: bool) -> None:
    """Checked as read by one HMGET and released by one HDEL; one of them moved between the
    fold's read and its write, and the page writes nothing (the next one reads again)."""
    r = redis_client
    state = RiskState(r, K)
    snap = await state.snapshot("default", "x")
    assert await state.commit("default", "x", snap, Write(put=[
        (cid, _reservation(cid), True) for cid in "abcd"]))
    for cid in "abc":
        await filled(r, cid)
    projector = Projector(r, K, "p", quote_asset=lambda a, s: "USDT")
    if moved:
        reading = projector._risk_state

        async def moved_meanwhile(events: Any) -> Any:
            risk = await reading(events)
            await r.hset(open_key(K, "default"), "b", encode(_reservation("x")))
            return risk
        projector._risk_state = moved_meanwhile  # type: ignore[method-assign]
    await r.config_resetstat()
    folded = await projector.once()
    counted = await calls(r)
    if moved:
        assert folded == 0
        assert await _reserved(r) == set("abcd")
        assert await r.hlen(K.positions) == 0 and not await r.get(K.positions_cursor)
    else:
        assert folded == 6
        assert await _reserved(r) == {"d"}
        # The one HGET: the day's PnL; none per reservation.
        assert (counted.get("hdel"), counted.get("hget")) == (1, 1)


SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=WireDecimal("1"))


def _new(cid: str, request_id: str) -> NewOrder:
    order, events = new_order(cid, request_id, SPEC,
                              Context(now=1, worker="w1", request_id=request_id))
    return NewOrder(order, events)


async def test_a_batch_of_new_orders_is_checked_absent_by_one_exists(
        redis_client: aioredis.Redis) -> None:
    """None there: one EXISTS, no read of each. One there: each read, and a client id twice
    in the batch meets the first as it would its record, all as the per-order reads did."""
    r = redis_client
    store = Store(r, K, results_maxlen=100, order_ttl_ms=60_000)
    await r.config_resetstat()
    assert await store.begin([_new(cid, f"1-{cid}") for cid in "abc"]) == [None] * 3
    counted = await calls(r)
    assert (counted.get("exists"), counted.get("hmget")) == (1, None)
    await r.config_resetstat()
    got = await store.begin([_new("d", "2-d"), _new("b", "2-b"), _new("e", "2-e"),
                             _new("e", "3-e")])
    counted = await calls(r)
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[1].request_id == "1-b"
    assert got[3] is not None and got[3].request_id == "2-e"
    assert counted.get("exists") == 1 and counted.get("hmget") == 3
    assert [(await r.hget(K.order(cid), "request_id")) for cid in "abcde"] == [
        b"1-a", b"1-b", b"1-c", b"2-d", b"2-e"]
