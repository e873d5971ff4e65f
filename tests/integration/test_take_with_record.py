"""The paper exchange takes a plain new order in the script that records it (PaperAccount
``take_with_record``; brokers/sending.py ``door_for``, infra/store.py
``reserve_begin_and_open``): one round trip less than a call of the submit step, which then
only collects the answer. Whatever it takes is the order the submit step would have sent:
same answers, once, and nothing else takes that way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.brokers.paper import PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.store import NewOrder, ScriptCall, Store
from executor.model.order import Context, new_order
from executor.pipeline.steps import submit as submit_step
from producer.client import OrderClient
from producer.contract import OrderSpec, OrderState, OrderType, ResultStatus, Side, WireDecimal
from producer.keys import Keys

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


def order_item(cid: str) -> NewOrder:
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY,
                     type=OrderType.MARKET, quantity=WireDecimal("1"))
    order, events = new_order(cid, f"1-{cid}", spec, Context(now=1, worker="w1"))
    return NewOrder(order, events)


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
        now = (await redis_client.get("cv") or b"0").decode()
        return ScriptCall(["cv", "open", "sums", "day", "version"],
                          [version or now, 1000, 0, 0, 0, 0])

    opening = ScriptCall(["door-ran"], [1, -2])
    got = await store.reserve_begin_and_open([order_item("a"), order_item("b")],
                                             await reserve(), DOOR, opening)
    assert got == ([None, None], [1, -2])
    assert await redis_client.get("door-ran") == b"1"
    again = await store.reserve_begin_and_open([order_item("c"), order_item("a")],
                                               await reserve(), DOOR, opening)
    assert again is not None
    begun, codes = again
    assert begun[0] is None and begun[1] is not None and begun[1].order.client_order_id == "a"
    assert codes is None and await redis_client.get("door-ran") == b"1"
    assert await redis_client.exists(K.order("c"))  # created all the same
    stale = await reserve("7")  # the checks' version moved
    assert await store.reserve_begin_and_open([order_item("d")], stale, DOOR, opening) is None
    assert not await redis_client.exists(K.order("d"))
