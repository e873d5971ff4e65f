"""The risk checks' reservations and the orders that passed them, written by one script
(infra/store.py ``compose``, ``Store.reserve_and_begin``; pipeline/steps/risk.py): both or
neither, on a real Redis, and the worker's outcomes as when they were two round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from executor.config import Settings
from executor.infra.store import NewOrder, Store, compose
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
)
from producer.keys import GROUP, Keys

from .conftest import running

K = Keys()
SPEC = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                 quantity=WireDecimal("0.01"))


async def test_compose_runs_the_second_script_only_after_the_first_returned_one(
        redis_client: aioredis.Redis) -> None:
    first = "redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[2])"
    second = "redis.call('SET', KEYS[1], ARGV[1]) return {KEYS[1], ARGV[1], #ARGV}"
    script = redis_client.register_script(compose(first, second))
    reply = await script(keys=["a", "b"], args=[1, 2, "x", 1, "y"])
    assert reply == [b"b", b"y", 1]  # each saw its own keys and arguments
    assert await redis_client.mget("a", "b") == [b"x", b"y"]
    assert await script(keys=["c", "d"], args=[1, 2, "x", 0, "y"]) is None
    assert await redis_client.mget("c", "d") == [b"x", None]  # the second never ran


def _item(cid: str, request_id: str) -> NewOrder:
    order, events = new_order(cid, request_id, SPEC,
                              Context(now=1, worker="w1", request_id=request_id))
    return NewOrder(order, events)


def _reservation(request_id: str) -> Reservation:
    return Reservation(request_id=request_id, symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal("0.01"), price=WireDecimal("50000"), at=1)


async def test_orders_are_created_only_with_their_reservations(
        redis_client: aioredis.Redis) -> None:
    store = Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)
    state = RiskState(redis_client, K)
    snap = await state.snapshot("default", "20261203", ["a"])
    write = Write(put=[("a", _reservation("1-0"), True)])
    # Another worker commits first: the version moved, so neither is written.
    assert await state.commit("default", "20261203", snap,
                              Write(put=[("z", _reservation("9-0"), True)]))
    stale = state.commit_call("default", "20261203", snap, write)
    assert await store.reserve_and_begin([_item("a", "1-0")], stale) is None
    assert not await redis_client.exists(K.order("a"))
    assert await redis_client.hexists(open_key(K, "default"), "a") == 0
    assert await redis_client.xlen(K.events) == 0

    snap = await state.snapshot("default", "20261203", ["a"])
    fresh = state.commit_call("default", "20261203", snap, write)
    assert await store.reserve_and_begin([_item("a", "1-0")], fresh) == [None]
    (order,) = await store.load_orders(["a"])
    assert order is not None and order.request_id == "1-0"
    assert await redis_client.hexists(open_key(K, "default"), "a") == 1


class Calls:
    def __init__(self, worker: Any) -> None:
        self.begin = self.commit = self.together = 0
        store, state = worker.svc.store, worker.risk.state
        begin, commit, together = store.begin, state.commit, store.reserve_and_begin

        async def counted_begin(*args: Any) -> Any:
            self.begin += 1
            return await begin(*args)

        async def counted_commit(*args: Any) -> Any:
            self.commit += 1
            return await commit(*args)

        async def counted_together(*args: Any) -> Any:
            self.together += 1
            return await together(*args)

        # With the paper exchange's door (PaperAccount take_with_record) or without.
        opening = store.reserve_begin_and_open

        async def counted_opening(*args: Any) -> Any:
            self.together += 1
            return await opening(*args)

        store.begin = counted_begin
        state.commit = counted_commit
        store.reserve_and_begin = counted_together
        store.reserve_begin_and_open = counted_opening


async def test_a_batch_of_places_is_reserved_and_created_in_one_script(
    make_settings: Callable[..., Settings], client: OrderClient,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        calls = Calls(worker)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.01")).request_id, 10)
        assert result.status is ResultStatus.FILLED
        assert (calls.together, calls.commit, calls.begin) == (1, 0, 0)
        # An amend's old order is cancelled between the checks and the create: two calls.
        resting = await client.wait_result((await client.place(
            "BTCUSDT", "buy", "limit", "0.01", price="45000")).request_id, 10)
        assert resting.client_order_id is not None
        calls.together = calls.commit = calls.begin = 0
        amended = await client.wait_result((await client.amend(
            resting.client_order_id, price="45100")).request_id, 10)
        assert amended.status is ResultStatus.ACCEPTED, amended
        assert (calls.together, calls.commit, calls.begin) == (0, 1, 1)


@pytest.mark.parametrize("with_record", [False, True])
async def test_a_lost_reply_leaves_the_request_pending_and_its_redelivery_sends_once(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    with_record: bool,
) -> None:
    """The script ran, its reply was lost: the orders may exist, so the request is neither
    denied nor answered; taken over, it finds its order and reservation and goes on. With
    the paper exchange's door in that script, the order is at the exchange too: found
    there, never sent again."""
    name = "reserve_begin_and_open" if with_record else "reserve_and_begin"
    settings = make_settings(batch_size=1, visibility_timeout_ms=300,
                             accounts_default_take_with_record=str(with_record).lower())
    async with running(settings) as worker:
        store = worker.svc.store
        together = getattr(store, name)

        async def lost_reply(*args: Any) -> Any:
            setattr(store, name, together)
            await together(*args)
            raise RedisConnectionError("connection reset by peer")

        setattr(store, name, lost_reply)
        sub = await client.place("BTCUSDT", "buy", "market", "0.01")
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED, result
    results = [e for s in (K.completed, K.failed) for e in await redis_client.xrange(s)]
    assert len(results) == 1
    assert await redis_client.hlen(K.paper("default", "orders")) == 1  # sent once
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0


@pytest.mark.parametrize("with_record", [False, True])
async def test_a_bug_after_the_orders_were_created_holds_the_request_for_its_redelivery(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch, with_record: bool,
) -> None:
    """Its order exists once the script ran: a bug then leaves the request pending, not
    answered internal_error, and its redelivery carries on from the record (sent once).
    Where the script wrote the order's outcome too (the paper exchange taking it with its
    record: pipeline/steps/taken.py), the request is answered and acked by the script, and
    the bug after it adds nothing: one result, nothing pending, sent once."""
    from executor.pipeline.steps import risk as risk_step

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug after the write")

    settings = make_settings(batch_size=1,
                             accounts_default_take_with_record=str(with_record).lower())
    async with running(settings) as worker:
        monkeypatch.setattr(risk_step, "persisted", broken)
        sub = await client.place("BTCUSDT", "buy", "market", "0.01")

        async def held() -> bool:
            return bool(worker.metrics.registry.get_sample_value(
                "orderstream_internal_errors_total", {"step": "risk"}))
        for _ in range(100):
            if await held():
                break
            await asyncio.sleep(0.05)
        assert await held()
        monkeypatch.undo()
        assert sub.client_order_id is not None
        state = await redis_client.hget(K.order(sub.client_order_id), "state")
        assert state == (b"filled" if with_record else b"pending_submit")
    pending = (await redis_client.xpending(K.pending, GROUP))["pending"]
    assert pending == (0 if with_record else 1)
    async with running(make_settings("w2", visibility_timeout_ms=300)):
        result = await client.wait_result(sub.request_id, 15)
    results = [e for s in (K.completed, K.failed) for e in await redis_client.xrange(s)]
    assert len(results) == 1
    assert result.status is ResultStatus.FILLED
    assert await redis_client.hlen(K.paper("default", "orders")) == 1
