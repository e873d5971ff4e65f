"""The paper exchange takes a plain new order in the script that records it (PaperAccount
``take_with_record``; brokers/sending.py ``door_for``, infra/store.py
``reserve_begin_and_open``): one round trip less than a call of the submit step, which then
only collects the answer. Whatever it takes is the order the submit step would have sent:
same answers, once, and nothing else takes that way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from executor.brokers.circuit import CircuitBroker
from executor.brokers.paper import PaperBroker
from executor.brokers.paper.store import SUBMIT_SCRIPT
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.store import AGAIN, NewOrder, Outcome, ScriptCall, Store, decode_order
from executor.model.order import Context, new_order
from executor.pipeline.steps import submit as submit_step
from executor.pipeline.steps.taken import FRESH
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import (
    Action,
    OrderSpec,
    OrderState,
    OrderType,
    Result,
    ResultStatus,
    Side,
    WireDecimal,
    decode_events,
)
from producer.keys import GROUP, Keys

from .conftest import running

K = Keys()


def counting_inserts(broker: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The submit step's own calls of the exchange's door (one entry per order)."""
    paper = unwrap(broker)
    assert isinstance(paper, PaperBroker)
    calls: list[int] = []
    insert = paper.store.insert

    async def counted(items: Any, guards: Any = None) -> list[int]:
        calls.extend(1 for _ in items)
        return await insert(items, guards)
    monkeypatch.setattr(paper.store, "insert", counted)
    return calls


def counting_finishes(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The request ids the worker's final write (``Store.finish``) writes the outcomes of."""
    finished: list[str] = []
    finish = worker.svc.store.finish

    async def counted(outcomes: Any, *args: Any) -> list[str]:
        outcomes = list(outcomes)
        finished.extend(o.request_id for o in outcomes)
        return await finish(outcomes, *args)
    monkeypatch.setattr(worker.svc.store, "finish", counted)
    return finished


async def received(r: aioredis.Redis) -> list[bytes]:
    return [f[b"client_order_id"] for _, f in await r.xrange(K.paper("default", "received"))]


@pytest.mark.parametrize("with_record", [True, False])
async def test_plain_orders_are_taken_with_their_record_and_answered_the_same(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch, with_record: bool,
) -> None:
    settings = make_settings(batch_size=1,
                             accounts_default_take_with_record=str(with_record).lower())
    async with running(settings) as worker:
        inserts = counting_inserts(worker.brokers["default"], monkeypatch)
        market = await client.place("BTCUSDT", "buy", "market", "0.01")
        limit = await client.place("BTCUSDT", "buy", "limit", "0.01", price="40000")
        stop = await client.place("BTCUSDT", "sell", "stop", "0.01", stop_price="40000")
        results = await client.wait_results(
            [market.request_id, limit.request_id, stop.request_id], 10)
    assert [results[s.request_id].status for s in (market, limit, stop)] == [
        ResultStatus.FILLED, ResultStatus.ACCEPTED, ResultStatus.ACCEPTED]
    assert results[market.request_id].filled_quantity == WireDecimal("0.01")
    assert sorted(await received(redis_client)) == sorted(
        s.client_order_id.encode() for s in (market, limit, stop) if s.client_order_id)
    # A stop is not a plain order: it goes the submit step's way either way.
    assert len(inserts) == (1 if with_record else 3)
    for sub in (market, limit, stop):
        assert sub.client_order_id is not None
        sender = await redis_client.hget(K.order(sub.client_order_id), "sender")
        assert sender is not None and sender.startswith(b"w1:")


async def test_a_deadline_reached_after_the_record_does_not_expire_an_order_taken_with_it(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taken in the script that recorded it, before its deadline: the submit step only
    collects the answer, and must not call it expired however late it runs (the exchange
    has it). Sent by the submit step, the same lateness expires it unsent."""
    monkeypatch.setattr(submit_step, "past_deadline", lambda job, now: "deadline passed")
    async with running(make_settings(batch_size=1)):
        taken = await client.place("BTCUSDT", "buy", "market", "0.01")
        result = await client.wait_result(taken.request_id, 10)
    assert result.status is ResultStatus.FILLED
    async with running(make_settings(batch_size=1,
                                     accounts_default_take_with_record="false")):
        late = await client.place("BTCUSDT", "buy", "market", "0.01")
        expired = await client.wait_result(late.request_id, 10)
    assert expired.order_state is OrderState.EXPIRED
    assert await received(redis_client) == [(taken.client_order_id or "").encode()]


def order_item(cid: str, request_id: str | None = None) -> NewOrder:
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY,
                     type=OrderType.MARKET, quantity=WireDecimal("1"))
    order, events = new_order(cid, request_id or f"1-{cid}", spec,
                              Context(now=1, worker="w1"))
    return NewOrder(order, events)


def empty_reserve(version: str) -> ScriptCall:
    """risk_reserve.lua reserving nothing over the checks' version ``version``, with the
    trading states as they are here (absent)."""
    return ScriptCall(["cv", "open", "sums", "day", "version", "trading", "turn"],
                      [version, 1000, 0, "default", "global", "", "", "", 0, 0, 0])


async def as_is(r: aioredis.Redis) -> ScriptCall:
    """An empty reservation over the checks' version as it is."""
    return empty_reserve((await r.get("cv") or b"0").decode())


async def delivered(r: aioredis.Redis, cid: str, crowd: int = 0) -> tuple[NewOrder, Outcome]:
    """A market order's request read by worker w1 (after ``crowd`` others read by w2), its
    new order, and the outcome of its fill taken at the door."""
    for _ in range(crowd):
        await r.xadd(K.pending, {"data": "other"})
    if crowd:
        await r.xreadgroup(GROUP, "w2", {K.pending: ">"}, count=crowd)
    rid = (await r.xadd(K.pending, {"data": cid})).decode()
    await r.xreadgroup(GROUP, "w1", {K.pending: ">"}, count=1)
    item = order_item(cid, rid)
    done = msgspec.structs.replace(item.order, state=OrderState.FILLED, seq=4)
    result = Result(request_id=rid, action=Action.PLACE, status=ResultStatus.FILLED,
                    client_order_id=cid)
    return item, Outcome(rid, result, done, FRESH, item.events)


DOOR = """redis.call('INCR', KEYS[1])
local out = {}
for i = 1, #ARGV do out[i] = tonumber(ARGV[i]) end
return out"""


async def test_the_door_runs_only_when_every_order_was_created_by_the_same_write(
        redis_client: aioredis.Redis) -> None:
    """An order already recorded (a redelivery, a client id taken) keeps the whole batch
    from the door: each then goes the submit step's way, which looks such an order up
    before anything else. Nothing runs when the reservations did not apply."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)

    async def reserve(version: str | None = None) -> ScriptCall:
        """An empty reservation over the checks' version as it is (or ``version``)."""
        return empty_reserve(version or (await redis_client.get("cv") or b"0").decode())

    opening = ScriptCall(["door-ran"], [1, -2])
    got = await store.reserve_begin_and_open([order_item("a"), order_item("b")],
                                             await as_is(redis_client), DOOR, opening)
    assert got == ([None, None], [1, -2], False)
    assert await redis_client.get("door-ran") == b"1"
    again = await store.reserve_begin_and_open([order_item("c"), order_item("a")],
                                               await as_is(redis_client), DOOR, opening)
    assert again is not None
    begun, codes, finished = again
    assert begun[0] is None and begun[1] is not None and begun[1].order.client_order_id == "a"
    assert codes is None and not finished and await redis_client.get("door-ran") == b"1"
    assert await redis_client.exists(K.order("c"))  # created all the same
    stale = await reserve("7")  # the checks' version moved
    assert await store.reserve_begin_and_open([order_item("d")], stale, DOOR, opening) is None
    assert not await redis_client.exists(K.order("d"))


@pytest.mark.parametrize("with_record", [True, False])
async def test_the_outcomes_are_written_by_the_script_that_records_and_takes_the_orders(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch, with_record: bool,
) -> None:
    """Taken with its record, an order's outcome is written in that script too
    (pipeline/steps/taken.py): no final write of its own, and the same record, events,
    result and indexes as the usual way's. The breaker counts the taken orders' answers."""
    settings = make_settings(batch_size=1,
                             accounts_default_take_with_record=str(with_record).lower())
    async with running(settings) as worker:
        finished = counting_finishes(worker, monkeypatch)
        circuit = worker.brokers["default"]
        assert isinstance(circuit, CircuitBroker)
        told: list[str] = []
        tell = circuit.taken

        async def taken(answers: Any) -> None:
            told.extend(a.client_order_id for a in answers)
            await tell(answers)
        monkeypatch.setattr(circuit, "taken", taken)
        market = await client.place("BTCUSDT", "buy", "market", "0.01")
        limit = await client.place("BTCUSDT", "buy", "limit", "0.01", price="40000")
        results = await client.wait_results([market.request_id, limit.request_id], 10)
    subs = (market, limit)
    assert [results[s.request_id].status for s in subs] == [ResultStatus.FILLED,
                                                           ResultStatus.ACCEPTED]
    assert sorted(finished) == ([] if with_record else sorted(s.request_id for s in subs))
    assert market.client_order_id is not None and limit.client_order_id is not None
    states = [await redis_client.hget(K.order(s.client_order_id or ""), "state") for s in subs]
    assert states == [b"filled", b"accepted"]
    # The filled one left the open orders and the tracker's index; the resting one is in both.
    assert await redis_client.smembers(K.open) == {limit.client_order_id.encode()}
    assert await redis_client.zscore(K.due("default"), market.client_order_id) is None
    assert await redis_client.zscore(K.due("default"), limit.client_order_id) is not None
    # Every state change is an event, in order, whichever write made it.
    entries = [decode_events(f[b"data"]) for _, f in await redis_client.xrange(K.events)
               if f[b"client_order_id"] == market.client_order_id.encode()]
    flat = [e for entry in entries for e in entry]
    # One write (the record and its outcome), one entry; else the record's, the outcome's.
    assert len(entries) == (1 if with_record else 2)
    assert [e.state for e in flat] == [OrderState.CREATED, OrderState.PENDING_SUBMIT,
                                       OrderState.SUBMITTED, OrderState.FILLED]
    assert [e.seq for e in flat] == list(range(1, len(flat) + 1))
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.xlen(K.pending) == 0  # acked and deleted, as the usual way
    # The breaker counts the answers the script wrote (the tracker's lookups besides).
    assert sorted(told) == (sorted(s.client_order_id or "" for s in subs) if with_record else [])
    assert int(await redis_client.hget(K.breaker("default"), "calls") or 0) >= 2


async def test_the_outcomes_are_written_only_when_the_door_took_every_order(
        redis_client: aioredis.Redis) -> None:
    """The outcomes made before the script (pipeline/steps/taken.py) are those of orders
    taken: a door that refuses one (a code other than 1) leaves every outcome unwritten,
    and the requests pending, for the usual way."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)

    async def indexed(cid: str) -> tuple[bool, bool, int]:
        """In the open set, in the tracker's index, its events entries."""
        entries = [f for _, f in await redis_client.xrange(K.events)
                   if f[b"client_order_id"] == cid.encode()]
        return (await redis_client.sismember(K.open, cid),
                await redis_client.zscore(K.due("default"), cid) is not None, len(entries))

    (a, a_done), (b, b_done) = [await delivered(redis_client, cid) for cid in "ab"]
    refused = await store.reserve_begin_and_open(
        [a, b], await as_is(redis_client), DOOR, ScriptCall(["door-ran"], [1, 0]), [a_done, b_done])
    assert refused == ([None, None], [1, 0], False)
    assert await redis_client.hget(K.order("a"), "state") == b"pending_submit"
    # Created whole all the same, as begin.lua alone creates an order.
    assert [await indexed(cid) for cid in "ab"] == [(True, True, 1)] * 2
    assert await redis_client.xlen(K.completed) == 0
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 2

    (c, c_done), (d, d_done) = [await delivered(redis_client, cid) for cid in "cd"]
    taken = await store.reserve_begin_and_open(
        [c, d], await as_is(redis_client), DOOR, ScriptCall(["door-ran"], [1, 1]), [c_done, d_done])
    assert taken == ([None, None], [1, 1], True)
    assert [await redis_client.hget(K.order(cid), "state") for cid in "cd"] == [b"filled"] * 2
    written = [f[b"request_id"].decode() for _, f in await redis_client.xrange(K.completed)]
    assert written == [c_done.request_id, d_done.request_id]
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 2  # a and b only
    # Ended: never in the open set nor the index; one events entry for the one write.
    assert [await indexed(cid) for cid in "cd"] == [(False, False, 1)] * 2

    # A request answered elsewhere meanwhile: no outcome written, the order created whole.
    (e, e_done), = [await delivered(redis_client, "e")]
    await redis_client.xack(K.pending, GROUP, e_done.request_id)
    unanswered = await store.reserve_begin_and_open(
        [e], await as_is(redis_client), DOOR, ScriptCall(["door-ran"], [1]), [e_done])
    assert unanswered == ([None], [1], False)
    assert await indexed("e") == (True, True, 1)
    assert await redis_client.xlen(K.completed) == 2

    # An order already recorded: no door, no outcome, the new one created whole.
    (f, f_done), = [await delivered(redis_client, "f")]
    again = await store.reserve_begin_and_open(
        [f, c], await as_is(redis_client), DOOR, ScriptCall(["door-ran"], [1, 1]), [f_done, c_done])
    assert again is not None and again[0][0] is None and again[1:] == (None, False)
    assert await indexed("f") == (True, True, 1)
    assert await redis_client.xlen(K.completed) == 2


async def test_the_door_is_told_its_guards_need_no_read_only_of_orders_created_pending_submit(
        redis_client: aioredis.Redis) -> None:
    """Every order the door sees was created by the same script; where each was created
    pending_submit, the door's guard knows the state without reading it (ARGV.fresh, which
    submit.lua trusts); one created in any other state leaves the door to read it."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    telling = "return {ARGV.fresh and 1 or 0}"

    both = [order_item("a"), order_item("b")]
    assert [i.order.state for i in both] == [OrderState.PENDING_SUBMIT] * 2
    told = await store.reserve_begin_and_open(both, await as_is(redis_client), telling,
                                              ScriptCall([], []))
    assert told == ([None, None], [1], False)
    other = order_item("d")
    other = NewOrder(msgspec.structs.replace(other.order, state=OrderState.ACCEPTED),
                     other.events)
    told = await store.reserve_begin_and_open([order_item("c"), other], await as_is(redis_client),
                                              telling, ScriptCall([], []))
    assert told == ([None, None], [0], False)


async def test_one_client_id_twice_in_a_batch_is_created_once_when_the_records_wait(
        redis_client: aioredis.Redis) -> None:
    """Where the outcomes may follow, begin.lua leaves the records to the outcomes' write:
    a second item of a client id the batch creates is then found as the first, exactly as
    if the first had been written, and the first is created whole; the door does not run."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    first, second = order_item("a", "1-1"), order_item("a", "2-1")
    outcomes = [Outcome(i.order.request_id, None, i.order, FRESH, i.events)
                for i in (first, second)]
    reserve = empty_reserve("0")
    got = await store.reserve_begin_and_open(
        [first, second], reserve, DOOR, ScriptCall(["door-ran"], [1, 1]), outcomes)
    assert got is not None
    begun, codes, finished = got
    assert begun[0] is None and codes is None and not finished
    found = begun[1]
    assert found is not None and found.request_id == "1-1"
    assert found.order == first.order
    assert await redis_client.hmget(K.order("a"), "request_id", "state") == [
        b"1-1", b"pending_submit"]
    assert await redis_client.get("door-ran") is None
    assert await redis_client.sismember(K.open, "a")
    assert await redis_client.xlen(K.events) == 1


async def test_outcomes_that_are_not_every_order_s_in_order_leave_the_records_to_begin(
        redis_client: aioredis.Redis) -> None:
    """begin.lua leaves the records to the outcomes' write only if that write makes each of
    them: outcomes missing an order, or in another order, are not written, and every
    record is created whole all the same (never an order at the exchange without one)."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    (a, a_done), (b, _), (c, c_done), (d, d_done) = [
        await delivered(redis_client, cid) for cid in "abcd"]
    for items, outcomes in (([a, b], [a_done]), ([c, d], [d_done, c_done])):
        got = await store.reserve_begin_and_open(
            items, await as_is(redis_client), DOOR, ScriptCall(["door-ran"], [1, 1]),
            outcomes)
        assert got == ([None, None], [1, 1], False)
    assert await redis_client.xlen(K.completed) == 0
    for cid in "abcd":
        assert await redis_client.hmget(K.order(cid), "state", "seq") == [
            b"pending_submit", b"2"]
        assert await redis_client.sismember(K.open, cid)


async def test_the_send_token_the_door_takes_is_written_with_the_record_either_way(
        redis_client: aioredis.Redis) -> None:
    """Where begin.lua leaves the records to a later write, the door hands the send tokens
    it takes to that write (ARGV.senders) rather than writing them on a record not written
    yet: the outcomes' write, or begin's rest where the outcomes are not written, writes
    each with its record; a door of a composition that writes no outcomes gets none."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    handing = """for i = 1, #ARGV, 2 do
  if ARGV.senders then ARGV.senders[ARGV[i]] = ARGV[i + 1] else
    redis.call('HSET', ARGV[i], 'sender', ARGV[i + 1] .. ' (written by the door)') end
end
return {1}"""
    (a, a_done), (b, b_done), (c, _) = [await delivered(redis_client, cid) for cid in "abc"]
    await redis_client.xack(K.pending, GROUP, b_done.request_id)  # answered elsewhere
    for item, outcomes in ((a, [a_done]), (b, [b_done]), (c, [])):
        cid = item.order.client_order_id
        got = await store.reserve_begin_and_open(
            [item], await as_is(redis_client), handing,
            ScriptCall([], [K.order(cid), f"token-{cid}"]), outcomes)
        assert got is not None and got[1] == [1]
    assert [await redis_client.hmget(K.order(cid), "state", "sender") for cid in "abc"] == [
        [b"filled", b"token-a"], [b"pending_submit", b"token-b"],
        [b"pending_submit", b"token-c (written by the door)"]]


async def test_the_pending_check_is_one_read_of_the_batch_span_and_exact_when_it_is_crowded(
        redis_client: aioredis.Redis) -> None:
    """Whether each request is still pending is one XPENDING over the span of the batch's
    ids; where other deliveries' entries crowd that span past what it asks for, the ids it
    did not see are asked one by one, so a request answered elsewhere is never missed and
    a pending one never taken for answered."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)

    async def xpending_calls() -> int:
        stats: Any = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_xpending", {"calls": 0})["calls"])

    async def opened(batch: list[tuple[NewOrder, Outcome]]) -> Any:
        return await store.reserve_begin_and_open(
            [i for i, _ in batch], await as_is(redis_client), DOOR,
            ScriptCall(["door-ran"], [1] * len(batch)), [o for _, o in batch])

    # Three in a row, listed out of order: one read for the batch.
    batch = [await delivered(redis_client, cid) for cid in "abc"]
    await redis_client.config_resetstat()
    assert await opened([batch[2], batch[0], batch[1]]) == ([None] * 3, [1] * 3, True)
    assert await xpending_calls() == 1
    # Each record whole, made by the outcomes' one write.
    for item, outcome in batch:
        stored = await redis_client.hmget(K.order(item.order.client_order_id), "request_id",
                                          "state", "seq", "record")
        assert stored[:3] == [outcome.request_id.encode(), b"filled", b"4"]
        assert stored[3] is not None
        assert decode_order(stored[3]).state is OrderState.FILLED
    # 200 entries of another worker between the two: the span holds more than the read
    # asks for (2 per order and 64), which sees the first and not the second: the second
    # is asked by id.
    crowded = [await delivered(redis_client, "d"), await delivered(redis_client, "e", crowd=200)]
    await redis_client.config_resetstat()
    assert await opened(crowded) == ([None] * 2, [1] * 2, True)
    assert await xpending_calls() == 2
    # Crowded, one of them answered elsewhere meanwhile: nothing of the outcomes written.
    answered = [await delivered(redis_client, "f"), await delivered(redis_client, "g", crowd=200)]
    await redis_client.xack(K.pending, GROUP, answered[0][1].request_id)
    assert await opened(answered) == ([None] * 2, [1] * 2, False)
    # And in a span that is not crowded.
    near = [await delivered(redis_client, "h"), await delivered(redis_client, "i")]
    await redis_client.xack(K.pending, GROUP, near[1][1].request_id)
    assert await opened(near) == ([None] * 2, [1] * 2, False)
    written = [f[b"request_id"].decode() for _, f in await redis_client.xrange(K.completed)]
    assert written == [o.request_id for _, o in (batch[2], batch[0], batch[1], *crowded)]
    assert [await redis_client.hget(K.order(cid), "state") for cid in "fghi"] == [
        b"pending_submit"] * 4


async def test_a_bug_making_the_outcomes_at_the_door_leaves_the_orders_to_the_usual_way(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outcomes written with the records are a shortcut: a bug while making them
    (counted, logged) writes none of them, and the orders are answered the usual way,
    through the submit step and the final write, each sent once."""
    from executor.pipeline.steps import taken

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug making the outcomes")
    monkeypatch.setattr(taken, "outcomes", broken)
    async with running(make_settings(batch_size=1)) as worker:
        finished = counting_finishes(worker, monkeypatch)
        sub = await client.place("BTCUSDT", "buy", "market", "0.01")
        result = await client.wait_result(sub.request_id, 10)
        errors = worker.metrics.registry.get_sample_value(
            "orderstream_internal_errors_total", {"step": "door"})
    assert result.status is ResultStatus.FILLED
    assert finished == [sub.request_id] and errors == 1
    assert await received(redis_client) == [(sub.client_order_id or "").encode()]


async def test_an_order_taken_and_answered_in_its_record_s_write_costs_one_hsetnx(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """The exchange's own (its book of orders); the send token is written with the
    record, by its one write."""
    async with running(make_settings(batch_size=1)):
        first = await client.place("BTCUSDT", "buy", "market", "0.01")
        await client.wait_result(first.request_id, 10)
        await redis_client.config_resetstat()
        sub = await client.place("BTCUSDT", "buy", "market", "0.01")
        result = await client.wait_result(sub.request_id, 10)
        stats: Any = await redis_client.info("commandstats")
    assert result.status is ResultStatus.FILLED
    assert stats["cmdstat_hsetnx"]["calls"] == 1
    sender = await redis_client.hget(K.order(sub.client_order_id or ""), "sender")
    assert sender is not None and sender.startswith(f"w1:{sub.request_id}:".encode())


async def test_a_request_answered_elsewhere_meanwhile_gets_no_second_answer(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its request no longer pending when the script runs (another worker answered it):
    its outcome is not written, as the worker's own final write would not write it; the
    order stays as recorded, taken under this delivery's token, and nothing is acked."""
    async with running(make_settings(batch_size=1)) as worker:
        store = worker.svc.store
        opening = store.reserve_begin_and_open

        async def answered_meanwhile(items: Any, *args: Any) -> Any:
            for item in items:  # another worker acked it (its answer is its own)
                await redis_client.xack(K.pending, GROUP, item.order.request_id)
            return await opening(items, *args)
        monkeypatch.setattr(store, "reserve_begin_and_open", answered_meanwhile)
        sub = await client.place("BTCUSDT", "buy", "market", "0.01")
        cid = sub.client_order_id or ""

        async def conflicts() -> float:
            return worker.metrics.registry.get_sample_value(
                "orderstream_finish_conflicts_total") or 0.0
        for _ in range(100):
            if await conflicts():
                break
            await asyncio.sleep(0.05)
        assert await conflicts() == 1
    assert await redis_client.xlen(K.completed) == 0
    assert await redis_client.hget(K.order(cid), "state") == b"pending_submit"
    assert await redis_client.hget(K.order(cid), "sender") is not None
    assert await received(redis_client) == [cid.encode()]


# A door that answers the lean call's probe (as submit.lua does): it would take every
# order unless KEYS[2] says "refuse", and then refuses the last one (0) when it runs.
PROBING_DOOR = """if ARGV.probe then
  return redis.call('GET', KEYS[2]) ~= 'refuse'
end
redis.call('INCR', KEYS[1])
local out = {}
for i = 1, #ARGV do out[i] = tonumber(ARGV[i]) end
if redis.call('GET', KEYS[2]) == 'refuse' then out[#out] = 0 end
return out"""


async def keyspace(r: aioredis.Redis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value: two equal snapshots, nothing was written."""
    return {key: await r.dump(key) for key in sorted(await r.keys("*"))}


def watching_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Each composed call the store makes: whether it was lean, and how many of begin.lua's
    arguments it carried (its short values, then the records and events)."""
    calls: list[tuple[bool, int]] = []
    begin_call = store._begin_call

    def counted(items: Any, records: bool = True) -> Any:
        keys, args = begin_call(items, records)
        calls.append((not records, len(args)))
        return keys, args
    monkeypatch.setattr(store, "_begin_call", counted)
    return calls


async def test_a_lean_call_carries_no_records_and_writes_what_the_full_call_writes(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the door answers a probe, outcomes for orders created pending_submit go in
    a call without the records and events begin.lua would have written (the outcomes'
    records replace them): one call, and every record, events entry and result as the
    full call writes them."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    calls = watching_calls(store, monkeypatch)
    written: dict[bool, list[Any]] = {}
    for probes, cids in ((True, "ab"), (False, "cd")):
        batch = [await delivered(redis_client, cid) for cid in cids]
        got = await store.reserve_begin_and_open(
            [i for i, _ in batch], await as_is(redis_client), PROBING_DOOR,
            ScriptCall(["door-ran", "door-says"], [1, 1]), [o for _, o in batch],
            probes=probes)
        assert got == ([None, None], [1, 1], True)
        written[probes] = [
            (await redis_client.hmget(K.order(cid), "request_id", "state", "seq"),
             decode_order(await redis_client.hget(K.order(cid), "record") or b"").state,
             [e.state for _, f in await redis_client.xrange(K.events)
              if f[b"client_order_id"] == cid.encode() for e in decode_events(f[b"data"])],
             await redis_client.sismember(K.open, cid))
            for cid in cids]
    # One call each: the lean one with begin's short values alone (1 argument), the full
    # one with each order's record and events too (1 + 2 per order).
    assert calls == [(True, 1), (False, 5)]
    assert await redis_client.get("door-ran") == b"2"
    # The same writes either way, the request ids aside.
    for lean, full in zip(written[True], written[False], strict=True):
        assert lean[0][1:] == full[0][1:] == [b"filled", b"4"]
        assert lean[1:] == full[1:]
    assert await redis_client.xlen(K.completed) == 4
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0


async def test_a_lean_call_that_would_need_the_records_writes_nothing_and_the_full_call_follows(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever would need the records the lean call leaves out is read before any write:
    an order that exists, a request answered elsewhere, an order the door would refuse
    (its probe), outcomes not every order's. The lean call then writes nothing at all (not
    a reservation, not the exchange's order), and the full call does what it always did."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    existing, _ = await delivered(redis_client, "x")
    assert await store.reserve_and_begin([existing], await as_is(redis_client)) == [None]

    async def lean_then_full(items: list[NewOrder], outcomes: list[Outcome]) -> Any:
        # The lean call alone: it answers AGAIN, and the keyspace is as it was.
        opening = ScriptCall(["door-ran", "door-says"], [1] * len(items))
        before = await keyspace(redis_client)
        last = ScriptCall(*store._finish_call(outcomes, GROUP))
        reply = await store._open(items, await as_is(redis_client), PROBING_DOOR, opening,
                                  last, None, True)
        assert reply == AGAIN
        assert await keyspace(redis_client) == before
        return await store.reserve_begin_and_open(
            items, await as_is(redis_client), PROBING_DOOR, opening, outcomes, probes=True)

    # An order that exists: the door does not run, the other one is created whole.
    a, a_done = await delivered(redis_client, "a")
    x_done = Outcome(existing.order.request_id, None, existing.order, FRESH, existing.events)
    got = await lean_then_full([a, existing], [a_done, x_done])
    assert got is not None and got[0][0] is None and got[0][1] is not None
    assert got[1:] == (None, False)
    assert await redis_client.hget(K.order("a"), "state") == b"pending_submit"
    # A request answered elsewhere meanwhile: taken, nothing answered.
    b, b_done = await delivered(redis_client, "b")
    await redis_client.xack(K.pending, GROUP, b_done.request_id)
    assert await lean_then_full([b], [b_done]) == ([None], [1], False)
    assert await redis_client.hget(K.order("b"), "state") == b"pending_submit"
    # The door would refuse one: it runs, refuses it, and both records are created whole.
    await redis_client.set("door-says", "refuse")
    (c, c_done), (d, d_done) = [await delivered(redis_client, cid) for cid in "cd"]
    assert await lean_then_full([c, d], [c_done, d_done]) == ([None, None], [1, 0], False)
    assert [await redis_client.hget(K.order(cid), "state") for cid in "cd"] == [
        b"pending_submit"] * 2
    await redis_client.delete("door-says")
    # Outcomes not every order's in order.
    (e, e_done), (f, f_done) = [await delivered(redis_client, cid) for cid in "ef"]
    assert await lean_then_full([e, f], [f_done, e_done]) == ([None, None], [1, 1], False)
    assert [await redis_client.hget(K.order(cid), "state") for cid in "ef"] == [
        b"pending_submit"] * 2
    assert await redis_client.xlen(K.completed) == 0
    # The door ran once per full call that reached it, never for a lean one.
    assert await redis_client.get("door-ran") == b"3"


async def test_a_lean_call_whose_reservations_do_not_apply_writes_nothing_and_is_not_made_again(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' version moved: the lean call answers as the full one would (None),
    writing nothing, and no second call follows."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    calls = watching_calls(store, monkeypatch)
    item, outcome = await delivered(redis_client, "a")
    before = await keyspace(redis_client)
    got = await store.reserve_begin_and_open(
        [item], empty_reserve("7"), PROBING_DOOR, ScriptCall(["door-ran", "door-says"], [1]),
        [outcome], probes=True)
    assert got is None and calls == [(True, 1)]
    assert await keyspace(redis_client) == before


async def test_one_client_id_twice_is_never_created_twice_by_a_lean_call(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with a client id twice goes the full way at once; and the lean script, were
    it called with one, finds the second as the first would be found and writes nothing."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    calls = watching_calls(store, monkeypatch)
    # Two deliveries of one client id, both pending: nothing else would stop the call.
    (first, first_done), (second, second_done) = [
        await delivered(redis_client, "a") for _ in range(2)]
    outcomes = [first_done, second_done]
    opening = ScriptCall(["door-ran", "door-says"], [1, 1])
    before = await keyspace(redis_client)
    last = ScriptCall(*store._finish_call(outcomes, GROUP))
    assert await store._open([first, second], empty_reserve("0"), PROBING_DOOR, opening,
                             last, None, True) == AGAIN
    assert await keyspace(redis_client) == before
    calls.clear()
    got = await store.reserve_begin_and_open([first, second], empty_reserve("0"),
                                             PROBING_DOOR, opening, outcomes, probes=True)
    assert calls == [(False, 5)]
    assert got is not None and got[0][0] is None and got[0][1] is not None
    assert got[1:] == (None, False)
    assert await redis_client.hget(K.order("a"), "request_id") == first_done.request_id.encode()
    assert await redis_client.xlen(K.completed) == 0


async def test_a_door_that_refuses_what_its_probe_took_is_an_error_not_a_silent_write(
        redis_client: aioredis.Redis) -> None:
    """The lean call's records are the outcomes': were the door to refuse an order its
    probe said it would take (a bug of the door), the script raises rather than finish."""
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    lying = "if ARGV.probe then return true end\nreturn {0}"
    item, outcome = await delivered(redis_client, "a")
    with pytest.raises(ResponseError, match="refused an order its probe took"):
        await store.reserve_begin_and_open([item], await as_is(redis_client), lying,
                                           ScriptCall([], []), [outcome], probes=True)
    assert await redis_client.xlen(K.completed) == 0


async def test_the_paper_exchange_s_probe_writes_nothing_and_answers_only_for_what_it_takes(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """submit.lua's probe (ARGV.probe) reads the exchange's book of orders and writes
    nothing: true only for orders created pending_submit (ARGV.fresh), each a client id
    the exchange does not hold, none twice. A worker's plain orders go in lean calls."""
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY,
                     type=OrderType.MARKET, quantity=WireDecimal("0.01"))

    def probing(fresh: bool) -> str:
        return ("local function door(KEYS, ARGV)\n" + SUBMIT_SCRIPT + "\nend\n"
                "local a = {unpack(ARGV)}\n"
                f"a.probe, a.fresh = true, {'true' if fresh else 'nil'}\n"
                "return door(KEYS, a) and 1 or 0\n")

    async with running(make_settings(batch_size=1)) as worker:
        calls = watching_calls(worker.svc.store, monkeypatch)
        taken = await client.place("BTCUSDT", "buy", "market", "0.01")
        await client.wait_result(taken.request_id, 10)
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)

        async def probe(cids: list[str], fresh: bool = True) -> int:
            door = paper.open_door([(cid, spec) for cid in cids],
                                   {cid: f"token-{cid}" for cid in cids})
            assert door is not None and door.probes
            # Every key the door may write (the worker runs on beside: its breaker's
            # counts and heartbeats are written meanwhile, elsewhere).
            before = [await redis_client.dump(key) for key in door.keys]
            got = int(await redis_client.eval(probing(fresh), len(door.keys), *door.keys,
                                              *door.args))
            assert [await redis_client.dump(key) for key in door.keys] == before
            return got
        assert await probe(["new-1", "new-2"]) == 1
        assert await probe(["new-1"], fresh=False) == 0
        assert await probe(["new-1", taken.client_order_id or ""]) == 0
        assert await probe(["new-1", "new-1"]) == 0
    # The worker's order went in one lean call: begin.lua's short values alone.
    assert calls == [(True, 1)]


async def test_a_guarded_lean_call_that_writes_nothing_is_made_again_whole_behind_its_guard(
        redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A speculative write (unchanged.lua in front): its lean call answering AGAIN wrote
    nothing, so the guard still holds for the full call, which is made behind it; and a
    guard that fails stops the lean call before anything, with no second call."""
    from executor.safety.risk.state import open_key, turn_key, version_key

    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    calls = watching_calls(store, monkeypatch)

    def guard(cid: str, version: str = "0") -> ScriptCall:
        return ScriptCall([version_key(K, "default"), K.breaker("default"),
                           open_key(K, "default"), turn_key(K, "default"), K.order(cid)],
                          [version, cid])

    # Answered elsewhere meanwhile: the lean call reads it before any write.
    item, outcome = await delivered(redis_client, "a")
    await redis_client.xack(K.pending, GROUP, outcome.request_id)
    got = await store.reserve_begin_and_open(
        [item], await as_is(redis_client), PROBING_DOOR,
        ScriptCall(["door-ran", "door-says"], [1]), [outcome], guard("a"), probes=True)
    assert got == ([None], [1], False)
    assert calls == [(True, 1), (False, 3)]
    assert await redis_client.hget(K.order("a"), "state") == b"pending_submit"
    assert await redis_client.get("door-ran") == b"1"
    # A guard that fails: nothing written, one call.
    calls.clear()
    item, outcome = await delivered(redis_client, "b")
    before = await keyspace(redis_client)
    got = await store.reserve_begin_and_open(
        [item], await as_is(redis_client), PROBING_DOOR,
        ScriptCall(["door-ran", "door-says"], [1]), [outcome], guard("b", "41"), probes=True)
    assert got is None and calls == [(True, 1)]
    assert await keyspace(redis_client) == before
