"""The tracker's attention index: open orders by when they next need attention, written with
their records, so that a pass loads the orders that are due and not every resting one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from executor.brokers.paper import PaperBroker
from executor.config import Settings
from executor.infra.attention import RECONCILE_EVERY
from executor.infra.store import decode_order
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys

from .conftest import other_task_turns, running
from .test_tracker import standalone_tracker, state_of

K = Keys()
DUE = K.due("default")


def spy(obj: Any, name: str) -> list[Any]:
    """Record the first argument of every call of ``obj.name`` (an async method)."""
    calls: list[Any] = []
    real = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return await real(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


def looked_up(broker: Any, batches: list[int] | None = None) -> list[str]:
    """Record the client id of every order ``broker`` is asked to look up, alone
    (``get_order``) or with others (``get_many``, brokers/base.py ``get_all``), and in
    ``batches`` the size of each call (1 for one alone)."""
    calls: list[str] = []
    sizes = [] if batches is None else batches
    one, many = broker.get_order, broker.get_many

    async def get_order(cid: str, symbol: str) -> Any:
        calls.append(cid)
        sizes.append(1)
        return await one(cid, symbol)

    async def get_many(orders: Any) -> Any:
        calls.extend(cid for cid, _ in orders)
        sizes.append(len(orders))
        return await many(orders)

    broker.get_order, broker.get_many = get_order, get_many
    return calls


async def resting(settings: Settings, client: OrderClient, *quantities: str) -> list[str]:
    """Have a worker place resting buys of these quantities; their client ids."""
    async with running(settings):
        subs = [await client.place("BTCUSDT", "buy", "limit", quantity, price="49000",
                                   time_in_force="gtc") for quantity in quantities]
        results = await client.wait_results([s.request_id for s in subs], 15)
    assert {r.status for r in results.values()} == {ResultStatus.ACCEPTED}
    return [s.client_order_id or "" for s in subs]


async def due_at(r: aioredis.Redis, cid: str) -> int | None:
    score = await r.zscore(DUE, cid)
    return None if score is None else int(score)


async def test_a_pass_loads_the_orders_due_and_not_the_ones_resting(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    r, settings = redis_client, make_settings()
    *cids, big = await resting(settings, client, *["0.002"] * 5, "6")  # big: two fills
    reconcile_ms = RECONCILE_EVERY * settings.worker.track_interval_ms
    # A new order is indexed with its record: due one reconcile period after it was written
    # (or after the worker's tracker first looked at it, a moment later: its first pass
    # looks at every order of the account; CI once saw 1 ms).
    for cid in [*cids, big]:
        record = decode_order(await r.hget(K.order(cid), "record") or b"")
        late = await due_at(r, cid) - (record.updated_at + reconcile_ms)
        assert 0 <= late <= 1_000, late
    assert set(await r.zrange(DUE, 0, -1)) == await r.smembers(K.open)

    async with standalone_tracker(r, settings, None) as tracker:
        broker = tracker.svc.brokers["default"]
        assert isinstance(broker, PaperBroker)
        tracker.live_feeds.add("default")  # as if its push feed were connected
        loaded = spy(tracker.store, "load_orders")
        looked = looked_up(broker)
        t0 = tracker.svc.clock()
        tracker.svc.clock = lambda: t0
        assert await tracker.poll_once() == 0  # the first pass looks every order up
        assert sorted(looked) == sorted([*cids, big])
        assert {await due_at(r, c) for c in [*cids, big]} == {t0 + reconcile_ms}
        loaded.clear()
        looked.clear()
        for _ in range(3):  # nothing is due: nothing is loaded, nothing looked up
            assert await tracker.poll_once() == 0
        assert [cid for ids in loaded for cid in ids] == [] and looked == []

        # The exchange fills part of one order; its feed pushes the change, which moves it.
        await broker.set_price("BTCUSDT", Decimal("48900"))
        assert await broker.match_once() == 6
        tracker.svc.clock = lambda: t0 + 10_000
        report = await broker.get_order(big, "BTCUSDT")
        looked.clear()
        assert report.status.value == "partially_filled"
        assert await tracker.on_report(report) == 1
        assert await state_of(r, big) == "partially_filled"
        assert await due_at(r, big) == t0 + 10_000 + reconcile_ms
        # At the reconcile time the others are due, looked up, and found filled; the one
        # whose change was pushed is not due yet, so not loaded.
        loaded.clear()
        tracker.svc.clock = lambda: t0 + reconcile_ms
        assert await tracker.poll_once() == 5
        assert sorted(looked) == sorted(cids)
        assert sorted(c for ids in loaded for c in ids) == sorted(cids)
        assert {await state_of(r, c) for c in cids} == {"filled"}
        assert [m.decode() for m in await r.zrange(DUE, 0, -1)] == [big]  # final ones left


async def test_a_failed_lookup_is_retried_the_next_pass_and_a_gone_record_leaves(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    r, settings = redis_client, make_settings()
    first, second = await resting(settings, client, "0.002", "0.002")
    async with standalone_tracker(r, settings, None) as tracker:
        broker = tracker.svc.brokers["default"]
        tracker.live_feeds.add("default")
        t0 = tracker.svc.clock()
        tracker.svc.clock = lambda: t0

        async def unavailable(cids: Any) -> Any:
            raise RedisError("connection refused")  # the exchange lives in Redis

        real = broker.store.get_many
        broker.store.get_many = unavailable  # type: ignore[method-assign]
        assert await tracker.poll_once() == 0
        retry = t0 + int(tracker.interval_s * 1000)
        assert await due_at(r, first) == await due_at(r, second) == retry
        broker.store.get_many = real  # type: ignore[method-assign]
        await r.delete(K.order(second))  # an operator removed a record
        looked = looked_up(broker)
        tracker.svc.clock = lambda: retry
        assert await tracker.poll_once() == 0
        assert looked == [first]
        assert await due_at(r, first) == retry + RECONCILE_EVERY * settings.worker.track_interval_ms
        assert await due_at(r, second) is None


async def test_open_orders_written_before_the_index_are_added_at_start(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    r, settings = redis_client, make_settings()
    cids = await resting(settings, client, "0.002", "0.002", "0.002")
    await r.zrem(DUE, cids[0], cids[1])  # as an older version left them: not indexed
    async with standalone_tracker(r, settings, None) as tracker:
        tracker.live_feeds.add("default")
        looked = looked_up(tracker.svc.brokers["default"])
        assert await tracker.poll_once() == 0
        assert sorted(looked) == sorted(cids)  # followed, all three
        assert await tracker.index_open_orders() == 0  # indexed now: nothing to add
    assert set(await r.zrange(DUE, 0, -1)) == {c.encode() for c in cids}


async def test_a_pass_over_many_due_orders_hands_the_event_loop_back_between_chunks(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """The request lanes share the tracker's event loop: a pass over thousands of due
    orders (a reconcile of orders placed together) must not decode and check them all in
    one turn of it. Here 250 are due: at most 100 are handled per turn, and every one is
    looked up and reindexed all the same."""
    r, settings = redis_client, make_settings()
    cids = await resting(settings, client, *["0.002"] * 250)
    async with standalone_tracker(r, settings, None) as tracker, \
            other_task_turns() as turns:
        seen: list[int] = []  # the other task's turns when each loaded order was checked
        real = tracker.followed

        def followed(order: Any, now: int) -> bool:
            seen.append(turns.count)
            return real(order, now)

        tracker.followed = followed  # type: ignore[method-assign]
        batches: list[int] = []
        looked = looked_up(tracker.svc.brokers["default"], batches)
        t0 = tracker.svc.clock()
        tracker.svc.clock = lambda: t0
        assert await tracker.poll_once() == 0  # the first pass looks every order up
        assert len(seen) == 250 and sorted(looked) == sorted(cids)
        # The paper exchange's lookups go together: one read per 50 (the lookups a pass
        # has in flight at once), not one per order.
        assert batches == [50] * 5
        per_turn = Counter(seen)
        assert len(per_turn) >= 3 and max(per_turn.values()) <= 100, per_turn
        reconcile_ms = RECONCILE_EVERY * settings.worker.track_interval_ms
        assert {await due_at(r, c) for c in cids} == {t0 + reconcile_ms}
