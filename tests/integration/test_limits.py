"""Rate limits shared by every worker (executor/safety/limits/, executor/brokers/limited.py), on
the real redis-server: limiter instances with their own connections stand for workers."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from executor.background import probes
from executor.background.tracker import PushFeed
from executor.brokers.base import Banned, BrokerOrder, BrokerStatus, RateLimited, Throttled
from executor.brokers.limited import LimitedBroker, limited
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.infra.metrics import Metrics
from executor.safety.limits import BAN, PAUSE, Limiter, Plan, Rate, Window, plan_for
from executor.safety.limits.windows import State, take
from producer.client import OrderClient
from producer.contract import OrderSpec, OrderState, OrderType, ReasonCode, ResultStatus, Side
from producer.keys import Keys

from .conftest import running

K = Keys()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def spec(deadline: int | None = None) -> OrderSpec:
    return OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                     quantity=Decimal("0.001"), deadline=deadline)


class FakeBroker:
    """An adapter that records when each call reaches it and fails on demand."""

    def __init__(self, account: str = "default") -> None:
        self.account = account
        self.arrivals: list[int] = []  # epoch ms of every order received
        self.lookups = 0
        self.fail_next: list[Exception] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def check(self, order: OrderSpec) -> None: ...

    def quote_asset(self, symbol: str) -> str | None:
        return "USDT"

    def base_asset(self, symbol: str) -> str | None:
        return "BTC"

    async def reference_price(self, symbol: str) -> Decimal | None:
        return Decimal(50_000)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.arrivals.append(now_ms())
        return BrokerOrder(client_order_id=client_order_id, broker_order_id=client_order_id,
                           symbol=order.symbol, status=BrokerStatus.NEW,
                           quantity=order.quantity)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        raise AssertionError("not used")

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.lookups += 1
        return BrokerOrder(client_order_id=client_order_id, broker_order_id=client_order_id,
                           symbol=symbol, status=BrokerStatus.NEW, quantity=Decimal(1))


class ReportingBroker(FakeBroker):
    """An adapter that reports the broker's own usage counters, as Binance's headers do."""

    def __init__(self, usage: Mapping[str, int]) -> None:
        super().__init__()
        self.counters = dict(usage)

    def usage(self) -> Mapping[str, int]:
        return self.counters


Make = Callable[..., LimitedBroker]


@pytest.fixture
async def make(redis_url: str) -> AsyncIterator[Make]:
    """Each limited broker with its own connection, as each worker process has."""
    clients: list[aioredis.Redis] = []

    def build(inner: FakeBroker | PaperBroker, plan: Plan,
              metrics: Metrics | None = None) -> LimitedBroker:
        client = aioredis.Redis.from_url(redis_url)
        clients.append(client)
        return limited(inner, Limiter(client, K, "default", plan), metrics=metrics)

    yield build
    for client in clients:
        await client.aclose()


async def at_window_start(size_ms: int) -> None:
    """Sleep until just after a window opens, so a test's bursts sit well inside windows."""
    await asyncio.sleep((size_ms - now_ms() % size_ms + 20) / 1000)


async def test_the_script_does_the_arithmetic_of_windows_py(redis_client: aioredis.Redis
                                                            ) -> None:
    """Step by step on a random walk of the clock, the Lua script grants, waits and counts
    exactly as the specification (windows.take) does."""
    plan = Plan((Window("weight_1m", 60_000, 50, True), Window("orders_10s", 10_000, 20, False),
                 Window("orders_1d", 86_400_000, 300, False)), Rate(200_000, 3))
    limiter = Limiter(redis_client, K, "default", plan)
    model = State()
    rng = random.Random(5)
    t_us = 1_763_769_599_000_000  # 1 s before a UTC midnight
    for step in range(400):
        t_us += rng.choice([0, 0, 1, 999, 1_000, rng.randrange(3_000_000)])
        units, weight, orders = rng.randint(1, 8), rng.randint(1, 5), rng.choice([0, 1, 1])
        got = await limiter.acquire(units, weight, orders, now_us=t_us)
        want = take(model, plan, units, weight, orders, t_us)
        assert (got.granted, got.wait_ms, got.blocked_by, dict(got.used)) == (
            want.granted, want.wait_ms, want.blocked_by, dict(want.used)), step
        assert got.now_ms == t_us // 1000


@pytest.mark.parametrize("group", ["host-1", None])
async def test_accounts_of_one_ip_group_share_weight_pause_and_ban_not_order_counts(
        redis_client: aioredis.Redis, group: str | None) -> None:
    """Binance counts request weight, 429s and 418s per IP, orders per account: two
    accounts of one IP group draw on one weight window and stop on one ban, each keeping
    its own order counts; without a group, each account is alone."""
    plan = Plan((Window("weight_1m", 60_000, 10, True), Window("orders_10s", 10_000, 5, False)),
                ip_group=group)
    a = Limiter(redis_client, K, "a", plan)
    b = Limiter(redis_client, K, "b", plan)
    t = 1_763_769_600_000_000  # a UTC midnight: every window starts here
    got = await a.acquire(4, 2, 1, now_us=t)
    assert (got.granted, got.used) == (4, {"weight_1m": 8, "orders_10s": 4})
    got = await b.acquire(4, 2, 1, now_us=t)
    if group is None:
        assert (got.granted, got.used) == (4, {"weight_1m": 8, "orders_10s": 4})
    else:  # 2 weight left of the group's 10; b's own orders window was untouched
        assert (got.granted, got.blocked_by, got.used) == (
            1, "weight_1m", {"weight_1m": 10, "orders_10s": 1})
    # Each hash lives as long as its longest window may still count (twice that).
    if group is not None:
        assert 0 < await redis_client.pttl(K.limits_ip(group, "windows")) <= 120_000
        assert 0 < await redis_client.pttl(K.limits("a", "windows")) <= 20_000
    else:
        assert 20_000 < await redis_client.pttl(K.limits("a", "windows")) <= 120_000
    # Orders stay per account: b places up to its own 5, whatever a placed (calls of no
    # weight, so only the orders window counts).
    got = await b.acquire(5, 0, 1, now_us=t)
    assert (got.granted, got.used["orders_10s"]) == ((1, 5) if group is None else (4, 5))
    # The broker's own weight count, as reported to one account, holds back the other.
    await a.report({"weight_1m": 10}, now_us=t + 1_000)
    got = await b.acquire(1, 1, 0, now_us=t + 2_000)
    assert got.granted == (1 if group is None else 0)
    # A ban met by one account stops the group's others.
    await a.hold("ban", 60_000)
    got = await b.acquire(1, 1, 0, now_us=0)
    assert (got.blocked_by == "ban") is (group is not None)


async def test_two_workers_never_exceed_a_window_together(make: Make) -> None:
    """60 submits at once from two instances (single calls and a batch), 20 per window:
    the broker never sees more than 20 in a window, and all 60 arrive."""
    plan = Plan((Window("orders_1s", 1_000, 20, False),))
    first, second = FakeBroker(), FakeBroker()
    a, b = make(first, plan), make(second, plan)
    await at_window_start(1_000)
    singles = [a.submit(f"a{i}", spec()) for i in range(30)]
    outcomes = await asyncio.gather(*singles, b.submit_many([(f"b{i}", spec())
                                                             for i in range(30)]))
    batch = outcomes[-1]
    assert isinstance(batch, list) and all(isinstance(x, BrokerOrder) for x in batch)
    arrivals = first.arrivals + second.arrivals
    assert len(arrivals) == 60
    per_window: dict[int, int] = {}
    for t in arrivals:
        per_window[t // 1_000] = per_window.get(t // 1_000, 0) + 1
    assert max(per_window.values()) == 20 and len(per_window) == 3, per_window


async def test_a_batch_sends_what_fits_and_throttles_what_its_deadline_cannot_wait_for(
        make: Make) -> None:
    plan = Plan((Window("orders_1s", 1_000, 3, False),))
    inner = FakeBroker()
    broker = make(inner, plan)
    await at_window_start(1_000)
    hurry = now_ms() + 100  # the next window opens ~980 ms from now
    out = await broker.submit_many([("o0", spec()), ("o1", spec(hurry)), ("o2", spec()),
                                    ("o3", spec(hurry)), ("o4", spec())])
    assert [type(x).__name__ for x in out] == ["BrokerOrder"] * 3 + ["Throttled",
                                                                     "BrokerOrder"]
    assert "orders_1s (3 per 1000 ms)" in str(out[3]) and "never sent" in str(out[3])
    assert len(inner.arrivals) == 4
    assert inner.arrivals[3] // 1_000 == inner.arrivals[0] // 1_000 + 1  # the next window


async def test_a_call_that_waited_then_ran_out_of_time_says_how_long_it_waited(
        make: Make) -> None:
    """Three orders into a window of one, max_wait_ms 1500: the second waits a window and
    goes; the third, after that window, would need another that ends past its bound. Its
    reason says what it had already waited, since the capacity alone (under the bound)
    would not explain the refusal."""
    plan = Plan((Window("orders_1s", 1_000, 1, False),), max_wait_ms=1_500)
    inner = FakeBroker()
    broker = make(inner, plan)
    await at_window_start(1_000)
    out = await asyncio.gather(*(broker.submit(f"o{i}", spec()) for i in range(3)),
                               return_exceptions=True)
    refused = [x for x in out if isinstance(x, Throttled)]
    assert len(inner.arrivals) == 2 and len(refused) == 1, out
    why = str(refused[0])
    waited = re.search(r"max_wait_ms \(1500 ms, (\d+) ms of it already waited\)", why)
    capacity = re.search(r"capacity in (\d+) ms", why)
    assert waited is not None and capacity is not None, why
    # It waited (how long depends on where in the window the test began: CI under load
    # once saw 747 ms), and what it waited explains the refusal the capacity alone would
    # not: together they pass the bound.
    assert 0 < int(waited[1]) <= 1_500 and int(capacity[1]) <= 1_500, why
    assert int(waited[1]) + int(capacity[1]) > 1_500, why


async def test_a_429_pauses_every_worker_until_its_retry_after(make: Make) -> None:
    first, second = FakeBroker(), FakeBroker()
    a, b = make(first, Plan()), make(second, Plan())
    first.fail_next.append(RateLimited("HTTP 429 -1003 too much request weight",
                                       retry_after=0.6))
    # Taken before the call: the pause starts later, so it cannot end earlier than 0.6 s
    # from here, however slow the machine is between the call and this line.
    paused_at = time.monotonic()
    with pytest.raises(RateLimited):
        await a.submit("c1", spec())
    with pytest.raises(Throttled, match=r"HTTP 429.*deadline"):
        await b.submit("c2", spec(deadline=now_ms() + 100))
    assert second.arrivals == []  # never sent
    await b.submit("c3", spec())  # no deadline: waits the pause out
    assert time.monotonic() - paused_at >= 0.55  # Redis TIME and ours round apart by ms
    assert len(second.arrivals) == 1


class CrowdedBroker(FakeBroker):
    """An adapter whose broker has room for nothing: every call is refused 429 after a
    short time on the wire, and the most calls ever on the wire at once are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.on_wire = 0
        self.most_on_wire = 0
        self.refused = 0

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        self.on_wire += 1
        self.most_on_wire = max(self.most_on_wire, self.on_wire)
        try:
            await asyncio.sleep(0.02)
            self.refused += 1
            raise RateLimited("HTTP 429 -1003 too much request weight", retry_after=0.3)
        finally:
            self.on_wire -= 1


async def test_after_a_429_no_more_calls_arrive_than_the_workers_gates_hold(
        make: Make) -> None:
    """Two workers with 30 orders each (single calls and a batch) at a broker that refuses
    everything: all 60 start together, yet at most both gates' slots reach it before the
    shared pause stops them, and none after it until it ends."""
    plan = Plan(max_in_flight=3)
    first, second = CrowdedBroker(), CrowdedBroker()
    a, b = make(first, plan), make(second, plan)
    short = now_ms() + 200  # past it the orders end Throttled instead of waiting the pause

    async def single(i: int) -> BrokerOrder | Exception:
        try:
            return await a.submit(f"a{i}", spec(short))
        except (RateLimited, Throttled) as exc:
            return exc

    outcomes = await asyncio.gather(*(single(i) for i in range(30)),
                                    b.submit_many([(f"b{i}", spec(short)) for i in range(30)]))
    assert first.most_on_wire <= 3 and second.most_on_wire <= 3
    assert 2 <= first.refused + second.refused <= 6, (first.refused, second.refused)
    batch = outcomes[-1]
    assert isinstance(batch, list) and len(batch) == 30
    assert all(isinstance(x, RateLimited | Throttled) for x in [*outcomes[:-1], *batch])
    assert sum(isinstance(x, Throttled) for x in [*outcomes[:-1], *batch]) >= 54


class PingedBroker(FakeBroker):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1


async def test_the_probes_ping_is_never_sent_into_a_pause_or_ban(make: Make) -> None:
    """A ping during a 429 pause would be one more call ignoring it: it is not sent, and the
    broker counts as up (it just answered); during a ban it counts as down."""
    inner = PingedBroker()
    broker = make(inner, Plan())
    assert await probes.ping(broker) is None and inner.pings == 1
    assert make(FakeBroker(), Plan()).ping is None  # an adapter without one has none
    await broker.limiter.hold(PAUSE, 5_000)
    assert await probes.ping(broker) is None and inner.pings == 1  # up, and not sent
    await broker.limiter.hold(BAN, 5_000)
    why = await probes.ping(broker)
    assert why is not None and "Throttled" in why and inner.pings == 1


async def test_a_418_ban_stops_every_worker_until_it_ends(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    first, second = FakeBroker(), FakeBroker()
    plan = Plan(max_wait_ms=300)
    a, b = make(first, plan), make(second, plan)
    first.fail_next.append(Banned("HTTP 418 IP banned", retry_after=1.5))
    with caplog.at_level(logging.ERROR, logger="executor.brokers.limited"):
        with pytest.raises(Banned):
            await a.submit("c1", spec())
        ends = (await a.limiter.until())["ban"]
        assert abs(ends - (now_ms() + 1_500)) < 300
        for broker in (a, b):
            with pytest.raises(Throttled, match=r"HTTP 418.*max_wait_ms"):
                await broker.submit("c2", spec())
            with pytest.raises(Throttled, match=r"max_wait_ms \(300 ms\)"):
                await broker.submit("c2", spec(deadline=now_ms() + 60_000))  # far off
            with pytest.raises(Throttled, match="HTTP 418"):
                await broker.get_order("c1", "BTCUSDT")
    assert first.arrivals == second.arrivals == [] and first.lookups == second.lookups == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("banned by its broker (HTTP 418)" in e for e in errors)
    assert any("banned by its broker for" in e for e in errors)  # the other worker saw it
    await asyncio.sleep(max(ends - now_ms(), 0) / 1000 + 0.05)
    await b.submit("c3", spec())
    await a.get_order("c3", "BTCUSDT")
    assert len(second.arrivals) == 1 and first.lookups == 1


async def test_the_brokers_usage_counters_raise_the_shared_ones(make: Make) -> None:
    reporting = ReportingBroker({"weight_1m": 5_000, "orders_10s": 7, "raw_5m": 9})
    metrics = Metrics()
    plan = plan_for(None, "binance")
    a = make(reporting, plan)
    b = make(FakeBroker(), plan, metrics)
    await a.submit("c1", spec())  # charged 1 weight, 1 order; the broker says more
    await b.submit("c2", spec())
    labels = {"account": "default", "limit": "weight_1m"}
    assert metrics.registry.get_sample_value("orderstream_rate_limit_used", labels) == 5_001
    assert metrics.registry.get_sample_value("orderstream_rate_limit_cap", labels) == 6_000
    assert metrics.registry.get_sample_value(
        "orderstream_rate_limit_used", {"account": "default", "limit": "orders_10s"}) == 8
    reporting.counters = {"weight_1m": 10, "orders_10s": 1}  # lower: never lowers ours
    await a.get_order("c1", "BTCUSDT")
    grant = await b.limiter.acquire(1, 1, 0)
    assert grant.used["weight_1m"] >= 5_003 and grant.used["orders_10s"] >= 8


async def test_the_wrapper_passes_the_adapters_own_api_through(make: Make,
                                                               redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        paper = PaperBroker("default", PaperAccount(), client, K)
        wrapped = make(paper, Plan())
        assert isinstance(wrapped, PushFeed) and not isinstance(make(FakeBroker(), Plan()),
                                                                PushFeed)
        assert unwrap(wrapped) is paper and wrapped.account == "default"
        assert await wrapped.received_count() == 0  # paper's own method, via __getattr__
    finally:
        await client.aclose()


async def test_a_worker_answers_rate_limited_and_never_sends_past_the_cap(
        make_settings: Callable[..., Settings], client: OrderClient) -> None:
    """One order per day: the first is filled; the next, with a deadline or without,
    ends ``rate_limited`` without reaching the exchange."""
    # ORDERSTREAM_LIMITS_DEFAULT_ORDERS_PER_DAY=1, ORDERSTREAM_LIMITS_DEFAULT_MAX_WAIT_MS=300
    settings = make_settings(limits_default_orders_per_day=1,
                             limits_default_max_wait_ms=300)
    async with running(settings) as worker:
        broker = worker.brokers["default"]
        assert isinstance(broker, LimitedBroker)
        paper = unwrap(broker)
        assert isinstance(paper, PaperBroker)
        first = await client.place("BTCUSDT", "buy", "market", "0.001")
        assert (await client.wait_result(first.request_id, 10)).status is ResultStatus.FILLED
        late = await client.place("BTCUSDT", "buy", "market", "0.001",
                                  deadline=now_ms() + 2_000)
        patient = await client.place("BTCUSDT", "buy", "market", "0.001")
        results = await client.wait_results([late.request_id, patient.request_id], 10)
        assert await paper.received_count() == 1
        assert worker.metrics.registry.get_sample_value(
            "orderstream_rate_limit_used", {"account": "default", "limit": "orders_1d"}) == 1
    expired, rejected = results[late.request_id], results[patient.request_id]
    assert expired.status is ResultStatus.EXPIRED and expired.order_state is OrderState.EXPIRED
    assert rejected.status is ResultStatus.REJECTED
    for result in (expired, rejected):
        assert result.reason_code == ReasonCode.RATE_LIMITED
        assert result.reason and "orders_1d (1 per 86400000 ms)" in result.reason
        assert "never sent" in result.reason


async def test_a_paper_account_without_limits_asks_no_limiter(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    """Nothing to count and no 429 to share: its calls go straight to the paper exchange,
    even past a pause someone wrote for it (which only a real broker's 429 would)."""
    async with running(make_settings()) as worker:
        broker = worker.brokers["default"]
        assert not isinstance(broker, LimitedBroker)
        await Limiter(redis_client, Keys(), "default", Plan()).hold(PAUSE, 60_000)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.001")).request_id, 10)
        assert result.status is ResultStatus.FILLED
    # One limit configured puts the limiter back, pause and all.
    async with running(make_settings(limits_default_orders_per_day=5,
                                     limits_default_max_wait_ms=300)) as worker:
        assert isinstance(worker.brokers["default"], LimitedBroker)
        result = await client.wait_result(
            (await client.place("BTCUSDT", "buy", "market", "0.001")).request_id, 10)
        assert result.reason_code == ReasonCode.RATE_LIMITED
        assert result.reason is not None and "pause" in result.reason


async def test_a_429_ends_an_order_rate_limited_within_its_deadline(
        make_settings: Callable[..., Settings], client: OrderClient, make: Make) -> None:
    """The broker's Retry-After outlasts the request's deadline: the retry does not sleep
    past it; the shared pause holds the order back and it ends ``rate_limited``, unsent."""
    fake = FakeBroker()
    fake.fail_next.append(RateLimited("HTTP 429 -1015 too many new orders", retry_after=5))
    broker = make(fake, Plan())
    async with running(make_settings(), brokers={"default": broker}):
        started = time.monotonic()
        sub = await client.place("BTCUSDT", "buy", "market", "0.001",
                                 deadline=now_ms() + 1_000)
        result = await client.wait_result(sub.request_id, 10)
        assert time.monotonic() - started < 2
        assert (await broker.limiter.until())["pause"] > now_ms() + 2_000
    assert result.reason_code == ReasonCode.RATE_LIMITED
    assert result.status is ResultStatus.EXPIRED
    assert result.reason and "HTTP 429" in result.reason and "deadline" in result.reason
    assert fake.arrivals == []
