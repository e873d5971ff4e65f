"""The paper exchange takes the send token in the script that takes the order
(brokers/sending.py ``at_door``, brokers/paper/submit.lua): the token and the order are
taken together or not at all, with no call of the token script of its own."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import redis.asyncio as aioredis

from executor.brokers.base import BrokerOrder, DuplicateClientId, SendRefused, submit_all
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.brokers.sending import SEND_TOKENS, SendGuard
from executor.infra.store import NewOrder, Store
from executor.model.order import Context, new_order
from producer.contract import OrderSpec, OrderType, Side, WireDecimal
from producer.keys import Keys

K = Keys()
SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=WireDecimal("0.01"))


class Takes:
    """The token script, counted (it must not be called at the door)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    async def __call__(self, tokens: Mapping[str, str]) -> list[int]:
        self.calls += 1
        return await self.store.take_send_tokens(tokens)


async def _setup(redis_client: aioredis.Redis, cids: list[str]) -> tuple[Store, PaperBroker]:
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    for n, cid in enumerate(cids):
        order, events = new_order(cid, f"1-{n}", SPEC,
                                  Context(now=1, worker="w1", request_id=f"1-{n}"))
        await store.begin([NewOrder(order, events)])
    broker = PaperBroker("default", PaperAccount(), redis_client, K)
    await broker.start(background=False)
    return store, broker


@pytest.mark.parametrize("at_door", [True, False])
async def test_the_token_is_taken_with_the_order_or_the_order_is_refused(
        redis_client: aioredis.Redis, at_door: bool) -> None:
    store, paper = await _setup(redis_client, ["free", "held", "moved"])
    try:
        await redis_client.hset(K.order("held"), "sender", "w9:other:delivery")
        await redis_client.hset(K.order("moved"), "state", "filled")
        takes = Takes(store)
        guard = SendGuard(paper, takes, at_door=at_door)
        SEND_TOKENS.set({cid: f"w1:{cid}:mine" for cid in ("free", "held", "moved")})
        answers = await submit_all(guard, [("free", SPEC), ("held", SPEC), ("moved", SPEC)])
    finally:
        await paper.close()
    free, held, moved = answers
    assert isinstance(free, BrokerOrder) and free.client_order_id == "free"
    assert isinstance(held, SendRefused) and held.why == "held"
    assert isinstance(moved, SendRefused) and moved.why == "moved_on"
    assert await redis_client.hget(K.order("free"), "sender") == b"w1:free:mine"
    assert await redis_client.hget(K.order("held"), "sender") == b"w9:other:delivery"
    assert await redis_client.hget(K.order("moved"), "sender") is None
    received = await redis_client.xrange(K.paper("default", "received"))
    assert [f[b"client_order_id"] for _, f in received] == [b"free"]  # only the one sent
    assert takes.calls == (0 if at_door else 1)


async def test_a_second_send_under_the_same_token_passes_the_door_and_is_a_duplicate(
        redis_client: aioredis.Redis) -> None:
    """The same delivery's retry holds the token already: the door lets it through, and the
    exchange answers it as any exchange would a client id it has (one order)."""
    store, paper = await _setup(redis_client, ["once"])
    try:
        guard = SendGuard(paper, Takes(store), at_door=True)
        SEND_TOKENS.set({"once": "w1:once:mine"})
        first = await paper.submit_many_guarded([("once", SPEC)], {"once": "w1:once:mine"})
        (again,) = await submit_all(guard, [("once", SPEC)])
    finally:
        await paper.close()
    assert isinstance(first[0], BrokerOrder)
    assert isinstance(again, DuplicateClientId)
    assert await redis_client.xlen(K.paper("default", "received")) == 1
