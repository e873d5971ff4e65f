"""Redis memory stays bounded: what a request or an order leaves behind is removed once no
one needs it, and never before: an answered request leaves the requests stream, while an
unread or pending one stays."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from executor.config import Settings
from executor.store import Outcome, Store
from producer.client import OrderClient
from producer.contract import Action, Result, ResultStatus
from producer.keys import GROUP, Keys

from .conftest import running

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
