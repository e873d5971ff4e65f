"""Open orders after submission: a resting order's later fills reach its record and the
events, pushed by the exchange or found by polling; live workers share the open orders out,
and a gone worker's share moves to the others."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import redis.asyncio as aioredis

from executor.background.tracker import Tracker, owner
from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.metrics import Metrics
from executor.infra.store import NewOrder, Outcome, Store
from executor.model.order import Context, Order, new_order, transition
from executor.pipeline.services import Services
from producer.client import OrderClient
from producer.contract import (
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    ResultStatus,
    Side,
)
from producer.keys import GROUP, Keys

from .conftest import (
    events_in,
    persisted_by_the_dead_worker,
    running,
    settings_for,
    taken_by_a_dead_worker,
)

K = Keys()


@contextlib.asynccontextmanager
async def standalone_tracker(r: aioredis.Redis, settings: Settings,
                             peers: Callable[[], Awaitable[list[str]]] | None,
                             ) -> AsyncIterator[Tracker]:
    """A tracker of worker "w1" outside any worker, on a paper exchange whose matcher does
    not run (the test drives what changes)."""
    store = Store(r, K, results_maxlen=1000, order_ttl_ms=60_000)
    broker = PaperBroker("default", PaperAccount(), r, K)
    await broker.start(background=False)
    try:
        svc = Services(settings, store, {"default": broker}, Metrics(), "w1")
        yield Tracker(svc, peers, interval_ms=100, market_timeout_ms=300_000)
    finally:
        await broker.close()


async def state_of(r: aioredis.Redis, cid: str) -> str:
    return (await r.hget(K.order(cid), "state") or b"").decode()


async def event_states(r: aioredis.Redis, cid: str) -> list[OrderState]:
    return [e.state for e in await events_in(r, cid)]


async def test_a_resting_order_filled_later_is_recorded_from_the_push_feed(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()) as worker:
        sub = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                 time_in_force="gtc")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        await paper.set_price("BTCUSDT", Decimal("48900"))
        for _ in range(200):
            if await state_of(redis_client, sub.client_order_id) == "filled":
                break
            await asyncio.sleep(0.05)
        assert await state_of(redis_client, sub.client_order_id) == "filled"
        changes = worker.metrics.registry.get_sample_value(
            "orderstream_tracked_changes_total", {"state": "filled"})
        assert changes == 1
    assert await event_states(redis_client, sub.client_order_id) == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
        OrderState.ACCEPTED, OrderState.FILLED]
    fill = (await events_in(redis_client, count=1))[-1]
    assert fill.fill is not None and fill.fill.price == Decimal("49000")
    assert fill.filled_quantity == Decimal("0.002")
    assert not await redis_client.sismember(K.open, sub.client_order_id)


async def test_polling_finds_what_no_feed_told_and_follows_only_its_share(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    settings = make_settings()
    async with running(settings):
        subs = [await client.place("BTCUSDT", "sell", "limit", "0.002", price="51000",
                                   time_in_force="gtc") for _ in range(12)]
        await client.wait_results([s.request_id for s in subs], 10)
    # The workers are gone; the exchange fills the resting orders meanwhile.
    exchange = PaperBroker("default", PaperAccount(), redis_client, K)
    await exchange.start(background=False)
    await exchange.set_price("BTCUSDT", Decimal("51100"))
    assert await exchange.match_once() == 12
    await exchange.close()
    cids = [s.client_order_id for s in subs]
    assert {await state_of(redis_client, c) for c in cids} == {"accepted"}

    peers = ["w1", "other"]

    async def live() -> list[str]:
        return list(peers)

    async with standalone_tracker(redis_client, settings, live) as tracker:
        mine = [c for c in cids if owner(c, peers) == "w1"]
        assert 0 < len(mine) < 12  # a real split, for this fixed set of ids
        assert await tracker.poll_once() == len(mine)
        filled = [c for c in cids if await state_of(redis_client, c) == "filled"]
        assert sorted(filled) == sorted(mine), "only w1's share is followed while other lives"
        peers.remove("other")  # "other" is gone: its share moves to w1
        assert await tracker.poll_once() == 12 - len(mine)
        assert await tracker.poll_once() == 0  # applying again changes nothing
    assert {await state_of(redis_client, c) for c in cids} == {"filled"}
    assert await redis_client.scard(K.open) == 0


async def test_a_cancel_that_comes_while_the_place_is_being_submitted_is_honoured_after(
    redis_url: str, client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    # Another worker has persisted the place (pending_submit) and not sent it yet.
    sub = await taken_by_a_dead_worker(redis_client, client, type="limit", price="49000",
                                       time_in_force="gtc")
    await persisted_by_the_dead_worker(redis_client, sub)
    assert sub.client_order_id is not None
    settings = settings_for(redis_url, visibility_timeout_ms=60_000, track_interval_ms=100,
                            lookup_window_ms=100)
    async with running(settings):
        cancel = await client.cancel(sub.client_order_id)
        answer = await client.wait_result(cancel.request_id, 10)
        assert answer.ok and answer.order_state is OrderState.PENDING_CANCEL
        assert await redis_client.hget(K.cancels, sub.client_order_id) == \
            cancel.request_id.encode()
        # The place lands only now (its entry is handed over, as a reclaim would) ...
        await redis_client.xclaim(K.pending, GROUP, "dead", 0, [sub.request_id],
                                  idle=120_000)
        async with running(settings_for(redis_url, consumer="w2", visibility_timeout_ms=300,
                                        lookup_window_ms=100)):
            placed = await client.wait_result(sub.request_id, 15)
        assert placed.status is ResultStatus.ACCEPTED
        # ... and the cancel follows it to the exchange.
        for _ in range(200):
            if await state_of(redis_client, sub.client_order_id) == "cancelled":
                break
            await asyncio.sleep(0.05)
    assert await state_of(redis_client, sub.client_order_id) == "cancelled"
    states = await event_states(redis_client, sub.client_order_id)
    assert states[-3:] == [OrderState.ACCEPTED, OrderState.PENDING_CANCEL,
                           OrderState.CANCELLED]
    assert await redis_client.hlen(K.cancels) == 0
    last = (await events_in(redis_client, count=1))[-1]
    assert last.request_id == cancel.request_id


async def test_an_order_past_its_expire_at_is_cancelled_by_the_tracker(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    settings = make_settings()
    expire_at = int(time.time() * 1000) + 60_000
    async with running(settings):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                 time_in_force="gtd", expire_at=expire_at)
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
    cid = sub.client_order_id or ""
    # No matcher runs (no background task): the exchange would not expire it by itself.
    async with standalone_tracker(redis_client, settings, None) as tracker:
        assert await tracker.poll_once() == 0  # not due yet: nothing happens
        tracker.svc.clock = lambda: expire_at  # the clock reaches expire_at
        assert await tracker.poll_once() == 1
        broker = tracker.svc.brokers["default"]
    assert await state_of(redis_client, cid) == "cancelled"
    assert (await event_states(redis_client, cid))[-2:] == [OrderState.ACCEPTED,
                                                             OrderState.CANCELLED]
    assert (await broker.get_order(cid, "BTCUSDT")).status.value == "cancelled"


async def moved_by_a_dead_worker(store: Store, cid: str, state: OrderState) -> Order:
    """Record a move of the order to ``state``, as a worker that died next would have."""
    (order,) = await store.load_orders([cid])
    assert order is not None
    seq = order.seq
    event = transition(order, state, Context(now=order.updated_at, worker="dead",
                                             request_id="1-1"))
    assert await store.finish([Outcome("1-1:moved", None, order, seq, [event])]) == []
    return order


async def test_an_order_left_pending_cancel_past_hands_off_is_cancelled_by_the_tracker(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    settings = make_settings()
    async with running(settings):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.002", price="49000",
                                 time_in_force="gtc")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
    cid = sub.client_order_id or ""
    async with standalone_tracker(redis_client, settings, None) as tracker:
        # A cancel wrote pending_cancel, then its worker died before asking the exchange,
        # and the cancel was dead-lettered: nobody else will send it.
        order = await moved_by_a_dead_worker(tracker.store, cid, OrderState.PENDING_CANCEL)
        assert await tracker.poll_once() == 0  # hands off: its request may still answer
        later = order.updated_at + tracker.hands_off_ms
        tracker.svc.clock = lambda: later
        assert await tracker.poll_once() == 1
        broker = tracker.svc.brokers["default"]
        assert (await broker.get_order(cid, "BTCUSDT")).status.value == "cancelled"
    assert await state_of(redis_client, cid) == "cancelled"
    assert (await event_states(redis_client, cid))[-2:] == [OrderState.PENDING_CANCEL,
                                                             OrderState.CANCELLED]


async def test_a_submitted_order_is_looked_up_every_pass_even_with_a_live_feed(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    # Sent, and filled at the exchange, but its record only says submitted (the answer was
    # lost, or its request dead-lettered): the feed told the fill before anyone followed.
    # (A marketable limit order: a market one would be overdue, and so looked up anyway.)
    sub = await taken_by_a_dead_worker(redis_client, client, type="limit", price="51000",
                                       time_in_force="gtc")
    spec = await persisted_by_the_dead_worker(redis_client, sub)
    cid = sub.client_order_id or ""
    settings = make_settings()
    async with standalone_tracker(redis_client, settings, None) as tracker:
        await tracker.svc.brokers["default"].submit(cid, spec)
        await moved_by_a_dead_worker(tracker.store, cid, OrderState.SUBMITTED)
        tracker.live_feeds.add("default")
        tracker._passes = 1  # not a reconciliation pass
        assert await tracker.poll_once() == 1
    assert await state_of(redis_client, cid) == "filled"


async def test_a_report_filling_more_than_the_order_holds_up_no_other_order(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """Both legs of an oco filled in a fast market: the venue reports more than the order's
    quantity. That order is left as it was, logged and counted; the same pass records the
    other order's fill."""
    r = redis_client
    store = Store(r, K, results_maxlen=1000, order_ttl_ms=60_000)
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.SELL,
                     type=OrderType.LIMIT, quantity=Decimal("1"), price=Decimal("60000"))
    orders = []
    for cid in ("over", "fine"):
        ctx = Context(now=1, worker="w1", request_id=f"1-{len(orders)}")
        order, events = new_order(cid, ctx.request_id, spec, ctx)
        await store.begin([NewOrder(order, events)])
        moved = [transition(order, OrderState.SUBMITTED, ctx),
                 transition(order, OrderState.ACCEPTED, ctx)]
        await store.finish([Outcome(cid, None, order, 2, moved)])
        orders.append(order)

    def filled(cid: str, quantity: str) -> BrokerOrder:
        return BrokerOrder(client_order_id=cid, broker_order_id=f"B-{cid}", symbol="BTCUSDT",
                           status=BrokerStatus.FILLED, quantity=Decimal("1"),
                           filled_quantity=Decimal(quantity),
                           fills=[Fill(fill_id=f"{cid}-1", price=Decimal("60000"),
                                       quantity=Decimal(quantity))])
    async with standalone_tracker(r, settings_for(redis_url), None) as tracker:
        changed = await tracker._record([(orders[0], filled("over", "2")),
                                         (orders[1], filled("fine", "1"))])
        errors = tracker.svc.metrics.registry.get_sample_value(
            "orderstream_internal_errors_total", {"step": "tracker"})
    assert changed == 1 and errors == 1
    assert await state_of(r, "fine") == "filled"
    assert await state_of(r, "over") == "accepted"
