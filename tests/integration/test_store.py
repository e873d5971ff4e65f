"""The store's scripts on a real redis-server: persist-before-submit is create-if-absent, and
the outcome write is all-or-nothing per request with a compare-and-set on the order."""

from __future__ import annotations

import redis.asyncio as aioredis

from executor.infra.store import NewOrder, Outcome, Store
from executor.model.order import Context, Order, new_order, transition
from producer.contract import (
    Action,
    OrderSpec,
    OrderState,
    OrderType,
    Result,
    ResultStatus,
    Side,
    WireDecimal,
)
from producer.keys import GROUP, Keys

from .conftest import events_in

K = Keys()
SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                 quantity=WireDecimal("1"), price=WireDecimal("100"))


async def pending_entry(r: aioredis.Redis) -> str:
    await r.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    await r.xadd(K.pending, {"data": "{}"})
    reply = await r.xreadgroup(GROUP, "w1", {K.pending: ">"})
    return str(reply[0][1][0][0].decode())


async def test_begin_creates_once_and_reports_the_existing_order(
    redis_client: aioredis.Redis,
) -> None:
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    ctx = Context(now=1, worker="w1", request_id="1-0")
    first, events = new_order("c1", "1-0", SPEC, ctx)
    second, events2 = new_order("c1", "2-0", SPEC, ctx)
    assert await store.begin([NewOrder(first, events)]) == [None]
    (existing,) = await store.begin([NewOrder(second, events2)])
    assert existing is not None and existing.request_id == "1-0"
    assert existing.order.state is OrderState.PENDING_SUBMIT
    # One entry, [created, pending_submit]: the second begin wrote nothing.
    assert [e.seq for e in await events_in(redis_client)] == [1, 2]
    assert await redis_client.xlen(K.events) == 1
    assert await redis_client.smembers(K.open) == {b"c1"}


async def begun_rejection(r: aioredis.Redis, store: Store) -> Outcome:
    """Order c1 created for a pending request, and the outcome that rejects it (its
    record from seq 2, a result on the failed stream)."""
    rid = await pending_entry(r)
    ctx = Context(now=1, worker="w1", request_id=rid)
    order, events = new_order("c1", rid, SPEC, ctx)
    await store.begin([NewOrder(order, events)])
    ev = [transition(order, OrderState.REJECTED, ctx, reason_code="broker_rejected")]
    result = Result(request_id=rid, action=Action.PLACE, status=ResultStatus.REJECTED,
                    reason_code="broker_rejected", reason="no")
    return Outcome(rid, result, order, 2, ev)


async def test_finish_is_a_compare_and_set_and_skips_a_changed_order(
    redis_client: aioredis.Redis,
) -> None:
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    rejected = await begun_rejection(redis_client, store)
    rid = rejected.request_id
    await redis_client.hset(K.order("c1"), "seq", 9)  # someone else moved it
    conflicts = await store.finish([rejected])
    assert conflicts == [rid]
    assert await redis_client.xlen(K.failed) == 0
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 1
    assert await redis_client.hget(K.order("c1"), "state") == b"pending_submit"

    await redis_client.hset(K.order("c1"), "seq", 2)
    assert await store.finish([rejected]) == []
    assert await redis_client.xlen(K.failed) == 1
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.hget(K.order("c1"), "state") == b"rejected"
    assert await redis_client.smembers(K.open) == set()
    ttl = await redis_client.pttl(K.order("c1"))
    assert 0 < ttl <= 60_000  # a finished order's record expires; an open one does not


async def test_a_request_answered_by_another_worker_gets_no_second_result(
    redis_client: aioredis.Redis,
) -> None:
    # Worker w1 stalled past the visibility timeout; w2 took the request over and answered
    # it. Whatever w1 then decided (here a result without an order change, such as a
    # `duplicate` or an `invalid`), it must not be written: one request, one result.
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    rid = await pending_entry(redis_client)
    await redis_client.xclaim(K.pending, GROUP, "w2", 0, [rid])
    answer = Result(request_id=rid, action=Action.PLACE, status=ResultStatus.FAILED,
                    reason_code="duplicate", reason="client_order_id already used")
    assert await store.finish([Outcome(rid, answer, None, 0, [])]) == []  # w2's
    assert await store.finish([Outcome(rid, answer, None, 0, [])]) == [rid]  # w1's, late
    assert await redis_client.xlen(K.failed) == 1
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0


async def test_an_order_change_for_a_request_no_longer_pending_writes_nothing(
    redis_client: aioredis.Redis,
) -> None:
    # The order's compare-and-set passes (nobody moved it), but the request was acked by
    # the worker that took it over: neither the order's change nor a result is written.
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    rejected = await begun_rejection(redis_client, store)
    rid = rejected.request_id
    await redis_client.xack(K.pending, GROUP, rid)
    assert await store.finish([rejected]) == [rid]
    assert await redis_client.xlen(K.failed) == 0
    assert await redis_client.hget(K.order("c1"), "state") == b"pending_submit"
    assert [e.seq for e in await events_in(redis_client)] == [1, 2]
    assert await redis_client.xlen(K.pending) == 1  # not deleted: it was not ours to ack


async def accepted_deferred(store: Store, rid: str) -> tuple[Order, Context, Outcome]:
    """An algorithm's parent created for request ``rid``, and the deferred outcome that
    accepts it (its record accepted, the request acked, no result)."""
    ctx = Context(now=1, worker="w1", request_id=rid)
    order, events = new_order("c1", rid, SPEC, ctx)
    await store.begin([NewOrder(order, events)])
    accepted = [transition(order, OrderState.SUBMITTED, ctx),
                transition(order, OrderState.ACCEPTED, ctx)]
    now = Result(request_id=rid, action=Action.PLACE, status=ResultStatus.ACCEPTED)
    return order, ctx, Outcome(rid, now, order, 2, accepted, deferred=True)


async def test_a_deferred_answer_acks_now_and_its_late_result_is_written_once(
    redis_client: aioredis.Redis,
) -> None:
    """An algorithm's parent: accepted with the XACK and no result; its result written
    later with the change that ends it, once (the compare-and-set on its seq), though the
    request is no longer pending."""
    r = redis_client
    store = Store(r, K, results_maxlen=100, order_ttl_ms=60_000)
    rid = await pending_entry(r)
    order, ctx, acceptance = await accepted_deferred(store, rid)
    assert await store.finish([acceptance]) == []
    assert (await r.xpending(K.pending, GROUP))["pending"] == 0
    assert await r.xlen(K.completed) == 0 and await r.xlen(K.failed) == 0
    assert await r.hget(K.order("c1"), "state") == b"accepted"

    ended = [transition(order, OrderState.CANCELLED, ctx)]
    end = Result(request_id=rid, action=Action.PLACE, status=ResultStatus.CANCELLED)
    assert await store.finish([Outcome(rid, end, order, 4, ended, late=True)]) == []
    # Again (a second owner, or a retry after a lost reply): the seq has moved, no result.
    assert await store.finish([Outcome(rid, end, order, 4, ended, late=True)]) == [rid]
    entries = await r.xrange(K.completed)
    assert [f[b"request_id"] for _, f in entries] == [rid.encode()]
    assert await r.hget(K.order("c1"), "state") == b"cancelled"


async def test_a_deferred_answer_to_a_request_another_worker_took_is_not_written(
    redis_client: aioredis.Redis,
) -> None:
    r = redis_client
    store = Store(r, K, results_maxlen=100, order_ttl_ms=60_000)
    rid = await pending_entry(r)
    await r.xclaim(K.pending, GROUP, "w2", 0, [rid])
    await r.xack(K.pending, GROUP, rid)  # w2 answered it
    _, _, acceptance = await accepted_deferred(store, rid)
    assert await store.finish([acceptance]) == [rid]
    assert await r.hget(K.order("c1"), "state") == b"pending_submit"
