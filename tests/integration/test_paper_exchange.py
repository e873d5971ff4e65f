"""The paper exchange against a real redis-server: what reaches it, once; what it fills;
and that its state is shared by every worker and safe when two of them race."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from devtools.redis_server import free_port
from executor.brokers.base import (
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RetryableError,
    UnknownOutcome,
)
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.brokers.paper.matching import WOULD_TRIGGER
from executor.brokers.paper.records import decode_order
from executor.brokers.paper.store import Change, NewOrder
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, decoder, wire
from producer.keys import Keys

D = Decimal
T = OrderType
MakeBroker = Callable[..., Awaitable[PaperBroker]]
_report = decoder(BrokerOrder)


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def make_broker(redis_url: str) -> AsyncIterator[MakeBroker]:
    """Each broker has its own connection, as each worker process would."""
    made: list[tuple[PaperBroker, aioredis.Redis]] = []

    async def make(config: PaperAccount | None = None, account: str = "default",
                   clock: Callable[[], int] | None = None,
                   background: bool = False) -> PaperBroker:
        # Without the background task, tests drive the matcher with match_once().
        client = aioredis.Redis.from_url(redis_url)
        broker = PaperBroker(account, config or PaperAccount(), client, Keys(), clock=clock)
        await broker.start(background=background)
        made.append((broker, client))
        return broker

    yield make
    for broker, client in made:
        await broker.close()
        await client.aclose()


def spec(type_: OrderType = T.MARKET, side: Side = Side.BUY, quantity: str = "1",
         price: str | None = None, stop_price: str | None = None,
         tif: TimeInForce = TimeInForce.GTC, symbol: str = "BTCUSDT",
         expire_at: int | None = None) -> OrderSpec:
    return OrderSpec(
        account="default", symbol=symbol, side=side, type=type_, quantity=wire(D(quantity)),
        price=None if price is None else wire(D(price)),
        stop_price=None if stop_price is None else wire(D(stop_price)),
        time_in_force=tif, expire_at=expire_at)


async def received_ids(redis_url: str, account: str = "default",
                       stream: str = "received") -> list[str]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: Any = await client.xrange(Keys().paper(account, stream))
    finally:
        await client.aclose()
    return [fields["client_order_id"] for _, fields in entries]


async def executions(redis_url: str, account: str = "default") -> list[BrokerOrder]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries: Any = await client.xrange(Keys().paper(account, "executions"))
    finally:
        await client.aclose()
    return [_report.decode(fields[b"data"]) for _, fields in entries]


# -- submission ------------------------------------------------------------------------------


async def test_market_order_fills_and_is_received_once(make_broker: MakeBroker,
                                                       redis_url: str) -> None:
    broker = await make_broker()
    rep = await broker.submit("m-1", spec(quantity="7"))
    assert rep.status is BrokerStatus.FILLED and rep.filled_quantity == D("7")
    assert [(f.price, f.quantity) for f in rep.fills] == [(D("50000"), D("5")),
                                                          (D("50005"), D("2"))]
    assert await broker.get_order("m-1", "BTCUSDT") == rep
    assert await broker.received_count() == 1
    assert await received_ids(redis_url) == ["m-1"]


async def test_many_orders_are_looked_up_in_one_read_as_each_would_be_alone(
        make_broker: MakeBroker, redis_url: str) -> None:
    """A tracker's reconcile looks thousands of orders up: one HMGET for a batch, each
    answer what ``get_order`` gives, an unknown order (or one under another symbol) not
    found, and Redis down a retryable error for each, in place of the reports."""
    broker = await make_broker()
    await broker.submit("m-1", spec(quantity="7"))
    await broker.submit("l-1", spec(T.LIMIT, quantity="1", price="49000"))
    asked = [("m-1", spec()), ("nope", spec()), ("l-1", spec(T.LIMIT, price="49000")),
             ("m-1", spec(symbol="ETHUSDT"))]
    counter = aioredis.Redis.from_url(redis_url)
    await counter.config_resetstat()
    answers = await broker.get_many(asked)
    stats = await counter.info("commandstats")
    assert (stats["cmdstat_hmget"]["calls"], "cmdstat_hget" in stats) == (1, False)
    assert answers[0] == await broker.get_order("m-1", "BTCUSDT")
    assert answers[2] == await broker.get_order("l-1", "BTCUSDT")
    assert isinstance(answers[1], OrderNotFound) and isinstance(answers[3], OrderNotFound)
    assert "nope" in str(answers[1]) and "ETHUSDT" in str(answers[3])

    nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    down = PaperBroker("default", PaperAccount(), nowhere, Keys())
    failed = await down.get_many(asked[:2])
    assert [type(a) for a in failed] == [RetryableError, RetryableError]
    await nowhere.aclose()
    await counter.aclose()


async def test_limit_orders_by_time_in_force(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    gtc = await broker.submit("l-gtc", spec(T.LIMIT, quantity="12", price="50005"))
    ioc = await broker.submit("l-ioc", spec(T.LIMIT, quantity="12", price="50005",
                                            tif=TimeInForce.IOC))
    fok = await broker.submit("l-fok", spec(T.LIMIT, quantity="12", price="50005",
                                            tif=TimeInForce.FOK))
    fok_ok = await broker.submit("l-fok2", spec(T.LIMIT, quantity="12", price="50010",
                                                tif=TimeInForce.FOK))
    away = await broker.submit("l-away", spec(T.LIMIT, quantity="1", price="49000"))
    assert (gtc.status, gtc.filled_quantity) == (BrokerStatus.PARTIALLY_FILLED, D("10"))
    assert (ioc.status, ioc.filled_quantity) == (BrokerStatus.EXPIRED, D("10"))
    assert (fok.status, fok.filled_quantity, fok.fills) == (BrokerStatus.EXPIRED, D("0"), [])
    assert fok_ok.status is BrokerStatus.FILLED
    assert away.status is BrokerStatus.NEW
    # Oldest first, by the millisecond: these five may all be made within one, so no order.
    assert {o.client_order_id for o in await broker.open_orders()} == {"l-gtc", "l-away"}
    assert await broker.open_orders("ETHUSDT") == []
    assert await broker.received_count() == 5


async def test_stop_rests_and_an_immediate_trigger_is_rejected(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    resting = await broker.submit("s-1", spec(T.STOP, quantity="1", stop_price="50100"))
    assert resting.status is BrokerStatus.NEW
    rejected = await broker.submit("s-2", spec(T.STOP, quantity="1", stop_price="49900"))
    assert rejected.status is BrokerStatus.REJECTED and rejected.reason == WOULD_TRIGGER
    assert (await broker.get_order("s-2", "BTCUSDT")).status is BrokerStatus.REJECTED
    await broker.set_price("BTCUSDT", D("50100"))
    assert await broker.match_once() == 1
    fired = await broker.get_order("s-1", "BTCUSDT")
    assert fired.status is BrokerStatus.FILLED and fired.fills[0].price == D("50100")
    assert await broker.open_orders() == []


async def test_duplicate_client_id_is_refused_and_not_received_again(
        make_broker: MakeBroker, redis_url: str) -> None:
    broker = await make_broker()
    first = await broker.submit("dup-1", spec(T.LIMIT, quantity="1", price="49000"))
    other = await make_broker()  # another worker, same exchange
    with pytest.raises(DuplicateClientId, match="duplicate client order id dup-1"):
        await other.submit("dup-1", spec(quantity="2"))
    with pytest.raises(DuplicateClientId, match="duplicate"):
        await broker.submit("dup-1", spec(T.LIMIT, quantity="1", price="49000"))
    assert await received_ids(redis_url) == ["dup-1"]
    assert await received_ids(redis_url, stream="duplicates") == ["dup-1", "dup-1"]
    assert await broker.get_order("dup-1", "BTCUSDT") == first


async def test_duplicates_within_one_batch_create_one_order(make_broker: MakeBroker,
                                                            redis_url: str) -> None:
    broker = await make_broker()
    results = await asyncio.gather(*(broker.submit("same", spec()) for _ in range(5)),
                                   return_exceptions=True)
    assert sum(isinstance(r, BrokerOrder) for r in results) == 1
    assert sum(isinstance(r, DuplicateClientId) for r in results) == 4
    assert await received_ids(redis_url) == ["same"]
    assert await received_ids(redis_url, stream="duplicates") == ["same"] * 4


async def test_a_replayed_insert_is_the_same_order_not_a_duplicate(
        make_broker: MakeBroker, redis_url: str) -> None:
    # redis-py may resend a script call whose reply was lost: the sender's own order must not
    # come back as "duplicate".
    broker = await make_broker()
    record = (await broker.store.get_many(["x"]))[0]
    assert record is None
    await broker.submit("x", spec())
    stored: Any = await broker.store.redis.hget(broker.store.orders, "x")
    assert await broker.store.insert([NewOrder("x", stored.decode())]) == [True]
    assert await broker.store.insert([NewOrder("x", stored.decode() + " ")]) == [False]
    assert await received_ids(redis_url) == ["x"]
    assert await received_ids(redis_url, stream="duplicates") == ["x"]  # only the real one


async def test_records_keep_any_metadata_exactly(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    metadata = {"note": "é ✓\n\"quoted\"", "n": 12345678901234567890, "nested": [1, {"a": None}]}
    order = msgspec.structs.replace(spec(T.LIMIT, quantity="1", price="49000"),
                                    metadata=metadata, strategy_id="s-ü")
    await broker.submit("meta-1", order)
    stored = await broker.store.get("meta-1")
    assert stored is not None and stored.spec == order


async def test_parameters_the_exchange_refuses_never_reach_it(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    with pytest.raises(PermanentError, match="quantity"):
        await broker.submit("bad", spec(quantity="0.000001"))
    with pytest.raises(OrderNotFound):
        await broker.get_order("bad", "BTCUSDT")
    assert await broker.received_count() == 0


# -- resting orders --------------------------------------------------------------------------


async def test_resting_limit_fills_partially_then_fully_after_the_price_crosses(
        make_broker: MakeBroker, redis_url: str) -> None:
    broker = await make_broker()
    await broker.submit("r-1", spec(T.LIMIT, quantity="12", price="49990"))
    assert await broker.match_once() == 0  # not crossed
    await broker.set_price("BTCUSDT", D("49990"))
    assert await broker.reference_price("BTCUSDT") == D("49990")
    seen = []
    for _ in range(3):
        assert await broker.match_once() == 1
        seen.append(await broker.get_order("r-1", "BTCUSDT"))
    assert [(o.status, o.filled_quantity) for o in seen] == [
        (BrokerStatus.PARTIALLY_FILLED, D("5")),
        (BrokerStatus.PARTIALLY_FILLED, D("10")),
        (BrokerStatus.FILLED, D("12")),
    ]
    assert {(f.price, f.liquidity) for f in seen[-1].fills} == {(D("49990"), "maker")}
    assert await broker.match_once() == 0
    assert await executions(redis_url) == seen  # the push feed has every change, in order
    assert await broker.open_orders() == []


async def test_the_reference_price_is_the_one_fills_see_until_it_is_two_intervals_old(
        make_broker: MakeBroker, redis_url: str) -> None:
    """Risk values a market order at the price it fills at: the overrides as of the last
    refresh, without a Redis read on the order's path; once they were not refreshed for
    two match intervals (a tool without the background task), read from Redis."""
    clock = Clock()
    broker = await make_broker(PaperAccount(match_interval_ms=200), clock=clock)
    other = await make_broker()  # another process: an operator setting a price
    model = await broker.reference_price("BTCUSDT")
    await other.set_price("BTCUSDT", D("41000"))
    clock.now += 400
    assert await broker.reference_price("BTCUSDT") == model  # as fills see it
    assert await broker.trigger_price("BTCUSDT") == model
    await broker.refresh_prices()
    assert await broker.reference_price("BTCUSDT") == D("41000")
    await other.set_price("BTCUSDT", D("42000"))
    clock.now += 401  # no refresh for more than two intervals: Redis is asked
    assert await broker.reference_price("BTCUSDT") == D("42000")
    await other.set_price("BTCUSDT", None)
    assert await broker.reference_price("BTCUSDT") == model


async def test_the_background_matcher_fills_without_being_asked(make_broker: MakeBroker) -> None:
    broker = await make_broker(PaperAccount(match_interval_ms=20), background=True)
    await broker.submit("bg-1", spec(T.LIMIT, side=Side.SELL, quantity="1", price="50100"))
    await broker.set_price("BTCUSDT", D("50200"))
    deadline = time.monotonic() + 5
    while (await broker.get_order("bg-1", "BTCUSDT")).status is not BrokerStatus.FILLED:
        assert time.monotonic() < deadline, "the matcher never filled the order"
        await asyncio.sleep(0.02)
    assert broker.is_matcher


async def test_gtd_order_expires_on_a_match_pass(make_broker: MakeBroker) -> None:
    clock = Clock()
    broker = await make_broker(clock=clock)
    await broker.submit("gtd-1", spec(T.LIMIT, quantity="1", price="49000",
                                      tif=TimeInForce.GTD, expire_at=clock.now + 1_000))
    assert await broker.match_once() == 0
    clock.now += 1_000
    assert await broker.match_once() == 1
    assert (await broker.get_order("gtd-1", "BTCUSDT")).status is BrokerStatus.EXPIRED


async def test_finished_orders_are_forgotten_after_retention_and_open_ones_kept(
        make_broker: MakeBroker, redis_url: str) -> None:
    clock = Clock(int(time.time() * 1000))  # the streams' entry ids are on the real clock
    broker = await make_broker(PaperAccount(retention_ms=60_000), clock=clock)
    filled = await broker.submit("t-filled", spec())
    await broker.submit("t-rest", spec(T.LIMIT, quantity="1", price="49000"))
    await broker.submit("t-cancel", spec(T.LIMIT, quantity="1", price="48000"))
    clock.now += 30_000
    await broker.cancel("t-cancel", "BTCUSDT")  # ends 30 s after the fill
    clock.now += 30_000 - 1
    assert await broker.forget_finished() == 0  # nothing ended 60 s ago yet
    assert await broker.get_order("t-filled", "BTCUSDT") == filled
    clock.now += 1
    assert await broker.forget_finished() == 1  # the fill is 60 s old; the cancel is not
    with pytest.raises(OrderNotFound):
        await broker.get_order("t-filled", "BTCUSDT")
    assert (await broker.get_order("t-cancel", "BTCUSDT")).status is BrokerStatus.CANCELLED
    clock.now += 30_000
    assert await broker.forget_finished() == 1
    with pytest.raises(OrderNotFound):
        await broker.get_order("t-cancel", "BTCUSDT")
    # An open order is kept however old, and so is its place in the book.
    clock.now += 10**9
    assert await broker.forget_finished() == 0
    assert [o.client_order_id for o in await broker.open_orders()] == ["t-rest"]
    r = broker.store.redis
    assert await r.hkeys(broker.store.orders) == [b"t-rest"]
    assert await r.zcard(broker.store.finished) == 0
    # The streams' entries as old went with them.
    assert await received_ids(redis_url) == []
    assert await executions(redis_url) == []
    # A forgotten client id is free again, as at Binance once an order is no longer open.
    again = await broker.submit("t-filled", spec())
    assert again.status is BrokerStatus.FILLED
    assert await received_ids(redis_url) == ["t-filled"]


# -- cancel and lookup -----------------------------------------------------------------------


async def test_cancel_resting_filled_and_unknown(make_broker: MakeBroker,
                                                 redis_url: str) -> None:
    broker = await make_broker()
    await broker.submit("c-rest", spec(T.LIMIT, quantity="1", price="49000"))
    await broker.submit("c-done", spec())
    cancelled = await broker.cancel("c-rest", "BTCUSDT")
    assert cancelled.status is BrokerStatus.CANCELLED
    assert await broker.get_order("c-rest", "BTCUSDT") == cancelled
    assert await executions(redis_url) == [cancelled]
    assert await broker.open_orders() == []
    with pytest.raises(NotCancellable, match="cancelled"):
        await broker.cancel("c-rest", "BTCUSDT")
    with pytest.raises(NotCancellable, match="filled"):
        await broker.cancel("c-done", "BTCUSDT")
    with pytest.raises(OrderNotFound):
        await broker.cancel("c-none", "BTCUSDT")
    with pytest.raises(OrderNotFound):
        await broker.get_order("c-none", "BTCUSDT")
    with pytest.raises(OrderNotFound):  # orders are per symbol, as at a real exchange
        await broker.get_order("c-done", "ETHUSDT")
    # a cancelled order is out of the book: a crossing price does not fill it
    await broker.set_price("BTCUSDT", D("48000"))
    assert await broker.match_once() == 0


async def test_another_worker_sees_the_first_ones_orders(make_broker: MakeBroker) -> None:
    first = await make_broker()
    sent = await first.submit("w-1", spec(T.LIMIT, quantity="1", price="49000"))
    await first.close()  # the first worker is gone; the exchange is not
    second = await make_broker()
    assert await second.get_order("w-1", "BTCUSDT") == sent
    assert [o.client_order_id for o in await second.open_orders()] == ["w-1"]
    assert (await second.cancel("w-1", "BTCUSDT")).status is BrokerStatus.CANCELLED


# -- races -----------------------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def race(*brokers: PaperBroker) -> list[str]:
    """Make the brokers' match passes race for real: each pass reads the orders, then waits
    until every broker has read them before computing and writing its changes. Returns the
    client ids of the changes the compare-and-set refused (filled in as they happen)."""
    barrier = asyncio.Barrier(len(brokers))
    refused: list[str] = []
    for broker in brokers:
        get_many, update = broker.store.get_many, broker.store.update

        async def read(ids: Sequence[str], get_many: Any = get_many) -> Any:
            orders = await get_many(ids)
            await barrier.wait()
            return orders

        async def write(changes: Sequence[Change], now: int,
                        update: Any = update) -> list[bool]:
            applied: list[bool] = await update(changes, now)
            refused.extend(c.client_order_id for c, ok in zip(changes, applied, strict=True)
                           if not ok)
            return applied

        broker.store.get_many = read  # type: ignore[method-assign,assignment]
        broker.store.update = write  # type: ignore[method-assign]
    return refused


async def test_two_matchers_racing_never_double_fill(make_broker: MakeBroker,
                                                     redis_url: str) -> None:
    one, two = await make_broker(), await make_broker()
    ids = [f"race-{i}" for i in range(50)]
    await asyncio.gather(*(one.submit(cid, spec(T.LIMIT, quantity="12", price="49990"))
                           for cid in ids))
    await one.set_price("BTCUSDT", D("49990"))
    await two.refresh_prices()
    refused = race(one, two)
    for _ in range(3):
        applied = await asyncio.gather(one.match_once(), two.match_once())
        assert sorted(applied) == [0, 50]  # both computed every change; one of them won
    assert collections.Counter(refused) == dict.fromkeys(ids, 3)
    assert await one.match_once() == 0
    for cid in ids:
        order = await two.get_order(cid, "BTCUSDT")
        assert order.status is BrokerStatus.FILLED
        assert [f.fill_id for f in order.fills] == [
            f"{order.broker_order_id}-{n}" for n in (1, 2, 3)]
        assert [f.quantity for f in order.fills] == [D("5"), D("5"), D("2")]
    # each of the 3 changes of each order was applied (and published) exactly once
    feed = collections.Counter(r.client_order_id for r in await executions(redis_url))
    assert feed == dict.fromkeys(ids, 3)


async def test_only_one_worker_holds_the_matcher_lease(make_broker: MakeBroker) -> None:
    config = PaperAccount(match_interval_ms=20)
    brokers = [await make_broker(config, background=True) for _ in range(3)]
    await eventually(lambda: sum(b.is_matcher for b in brokers) == 1)
    await asyncio.sleep(0.1)  # a few more passes: still one
    assert sum(b.is_matcher for b in brokers) == 1
    holder = next(b for b in brokers if b.is_matcher)
    await holder.close()  # releases the lease: another worker takes over, without waiting
    lease = await brokers[0].store.redis.get(holder.store.matcher)  # gone, not left to expire
    assert lease != holder.token.encode()
    await eventually(lambda: sum(b.is_matcher for b in brokers if b is not holder) == 1)


async def test_a_cancel_racing_a_fill_never_loses_either(make_broker: MakeBroker,
                                                         redis_url: str) -> None:
    one, two = await make_broker(), await make_broker()
    ids = [f"cr-{i}" for i in range(40)]
    await asyncio.gather(*(one.submit(cid, spec(T.LIMIT, quantity="3", price="49990"))
                           for cid in ids))
    await one.set_price("BTCUSDT", D("49990"))

    async def cancel(cid: str) -> BrokerOrder | None:
        try:
            return await two.cancel(cid, "BTCUSDT")
        except NotCancellable:
            return None

    outcomes = await asyncio.gather(one.match_once(), *(cancel(cid) for cid in ids))
    for cid, outcome in zip(ids, outcomes[1:], strict=True):
        final = await one.get_order(cid, "BTCUSDT")
        if outcome is None:  # the fill won: the cancel was refused
            assert final.status is BrokerStatus.FILLED
        else:  # the cancel won: the fill never happened
            assert final == outcome and final.fills == []
    assert await one.match_once() == 0
    feed = collections.Counter(r.client_order_id for r in await executions(redis_url))
    assert feed == dict.fromkeys(ids, 1)


# -- faults ----------------------------------------------------------------------------------


async def test_timeout_stores_the_order_and_reports_unknown_outcome(
        make_broker: MakeBroker, redis_url: str) -> None:
    broker = await make_broker(PaperAccount(timeout_rate=1.0))
    with pytest.raises(UnknownOutcome):
        await broker.submit("t-1", spec())
    found = await broker.get_order("t-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED
    assert await received_ids(redis_url) == ["t-1"]
    with pytest.raises(DuplicateClientId, match="duplicate"):  # a blind resend is refused
        await broker.submit("t-1", spec())


async def test_failure_stores_nothing(make_broker: MakeBroker) -> None:
    broker = await make_broker(PaperAccount(failure_rate=1.0))
    with pytest.raises(RetryableError):
        await broker.submit("f-1", spec())
    with pytest.raises(OrderNotFound):
        await broker.get_order("f-1", "BTCUSDT")
    assert await broker.received_count() == 0


async def test_latency_delays_each_call(make_broker: MakeBroker) -> None:
    broker = await make_broker(PaperAccount(latency_ms=50))
    started = time.perf_counter()
    await asyncio.gather(*(broker.submit(f"lat-{i}", spec()) for i in range(20)))
    elapsed = time.perf_counter() - started
    assert 0.05 <= elapsed < 1.0  # concurrent calls wait together, not one after another


async def test_same_seed_same_outcomes(make_broker: MakeBroker, redis_url: str) -> None:
    config = PaperAccount(prices="walk", seed=11, failure_rate=0.3, timeout_rate=0.2,
                          )

    async def run() -> list[Any]:
        clock = Clock()
        broker = await make_broker(config, clock=clock)
        out: list[Any] = []
        for i in range(40):
            clock.now += 1_500  # the walk moves on between orders
            try:
                out.append(await broker.submit(f"d-{i}", spec(quantity=str(i + 1))))
            except (RetryableError, UnknownOutcome) as exc:
                out.append(type(exc).__name__)
        return out

    a = await run()
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()  # a new exchange, with the same seed
    await client.aclose()
    b = await run()
    assert a == b
    kinds = collections.Counter(x if isinstance(x, str) else "ok" for x in a)
    assert set(kinds) == {"ok", "RetryableError", "UnknownOutcome"}
    prices = {f.price for x in a if isinstance(x, BrokerOrder) for f in x.fills}
    assert len(prices) > 10  # the walk moved


async def test_workers_share_the_walk_origin(make_broker: MakeBroker) -> None:
    config = PaperAccount(prices="walk")
    early = Clock()
    one = await make_broker(config, clock=early)
    two = await make_broker(config, clock=Clock(early.now + 12_345))
    assert one.prices.origin_ms == two.prices.origin_ms == early.now


# -- throughput ------------------------------------------------------------------------------


async def test_concurrent_submits_are_coalesced_into_few_script_calls(
        make_broker: MakeBroker, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = await make_broker()
    client = broker.store.redis
    calls: list[int] = []
    evalsha = client.evalsha

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args))
        return evalsha(*args, **kwargs)

    monkeypatch.setattr(client, "evalsha", counting)
    specs = [spec(quantity="0.001"), spec(T.LIMIT, side=Side.SELL, quantity="1", price="51000")]
    results = await asyncio.gather(*(broker.submit(f"co-{i}", specs[i % 2])
                                     for i in range(1_000)))
    assert 1 <= len(calls) <= 5
    assert collections.Counter(r.status for r in results) == {
        BrokerStatus.FILLED: 500, BrokerStatus.NEW: 500}
    received = collections.Counter(await received_ids(redis_url))
    assert received == {f"co-{i}": 1 for i in range(1_000)}
    assert len(await broker.open_orders()) == 500


async def test_submit_many_answers_each_order_as_submit_would_in_one_script_call(
        make_broker: MakeBroker, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = await make_broker(PaperAccount(failure_rate=0.2, timeout_rate=0.1, seed=3))
    twin = await make_broker(PaperAccount(failure_rate=0.2, timeout_rate=0.1, seed=3),
                             account="twin")
    calls: list[int] = []
    evalsha = broker.store.redis.evalsha

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args))
        return evalsha(*args, **kwargs)

    monkeypatch.setattr(broker.store.redis, "evalsha", counting)
    orders = [(f"m-{i}", spec(quantity="0.001")) for i in range(300)]
    orders.append(("m-7", spec(quantity="0.002")))  # a duplicate inside the batch
    orders.append(("bad id!", spec()))  # refused before anything is stored
    many = await broker.submit_many(orders)
    assert len(calls) == 1
    one_by_one: list[BrokerOrder | BaseException] = []
    for cid, order in orders:
        try:
            one_by_one.append(await twin.submit(cid, order))
        except Exception as exc:  # the same seed draws the same failures
            one_by_one.append(exc)
    assert [type(x) for x in many] == [type(x) for x in one_by_one]
    kinds = collections.Counter(type(x).__name__ for x in many)
    assert kinds["RetryableError"] > 20 and kinds["UnknownOutcome"] > 10
    assert isinstance(many[-2], DuplicateClientId) and "duplicate" in str(many[-2])
    assert isinstance(many[-1], PermanentError) and "client order id" in str(many[-1])
    stored = {cid for cid, _ in orders[:300]} - {
        cid for (cid, _), x in zip(orders, many, strict=False)
        if isinstance(x, RetryableError)}
    assert collections.Counter(await received_ids(redis_url)) == {cid: 1 for cid in stored}


async def test_exchange_keys_live_under_the_account(make_broker: MakeBroker,
                                                    redis_url: str) -> None:
    broker = await make_broker(account="acct-7")
    await broker.submit("k-1", spec(T.LIMIT, quantity="1", price="49000"))
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = set(await client.keys("*"))
        record = await client.hget("orders:paper:acct-7:orders", "k-1")
    finally:
        await client.aclose()
    assert keys == {
        "orders:paper:acct-7:orders",
        "orders:paper:acct-7:received",
        "orders:paper:acct-7:book",
        "orders:paper:acct-7:watch:BTCUSDT:down",
        "orders:paper:acct-7:origin",
    }
    store = broker.store
    assert [store.prices, store.executions, store.expiry, store.matcher, store.finished] == [
        f"orders:paper:acct-7:{name}"
        for name in ("prices", "executions", "expiry", "matcher", "finished")]
    assert record is not None and decode_order(record).client_order_id == "k-1"


async def test_scripts_are_reloaded_after_a_script_flush(make_broker: MakeBroker) -> None:
    broker = await make_broker()
    await broker.store.redis.script_flush()
    assert (await broker.submit("sf-1", spec())).status is BrokerStatus.FILLED
    await broker.store.redis.script_flush()
    await broker.submit("sf-2", spec(T.LIMIT, quantity="1", price="49000"))
    await broker.store.redis.script_flush()
    assert (await broker.cancel("sf-2", "BTCUSDT")).status is BrokerStatus.CANCELLED

