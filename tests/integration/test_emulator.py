"""The emulator through real workers on the paper exchange. An account with
``emulate_conditional`` leaves its conditional orders to the emulator, so the same orders on
the same price path can be compared with the exchange's native ones: they fire at the same
prices and fill alike. A held order is never at the exchange before it fires; a cancel of
a held order sends nothing; a SIGKILL of the worker emulating the account, with the price
past the trigger while nobody holds the lease, fires the order once, from the next one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.brokers.base import BrokerOrder, BrokerStatus, OrderNotFound, RetryableError
from executor.brokers.emulating import EmulatingBroker
from executor.config import Settings, load_settings
from executor.model.emulation import Held, release_of
from executor.operations.risk_commands import set_limits
from producer.client import OrderClient, Submitted
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderStatus,
    OrderType,
    ResultStatus,
    Side,
    decoder,
    encode,
    wire,
    zero,
)
from producer.keys import Keys

from .conftest import events_in, running, until

K = Keys()
D = Decimal
ACCOUNTS = ("native", "emulated")


def two_accounts(tmp_path: Path, redis_url: str) -> Path:
    config = tmp_path / "orderstream.toml"
    config.write_text('[accounts.native]\nbroker = "paper"\n'
                      '[accounts.emulated]\nbroker = "paper"\nemulate_conditional = true\n')
    return config


def settings(config: Path, redis_url: str, consumer: str = "w1") -> Settings:
    return load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": consumer,
        "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": "100", "ORDERSTREAM_EMULATOR_LEASE_MS": "1000"})


async def set_price(r: aioredis.Redis, price: str, accounts: tuple[str, ...] = ACCOUNTS) -> None:
    for account in accounts:
        await r.hset(K.paper(account, "prices"), "BTCUSDT", price)  # the operator override
    await asyncio.sleep(0.6)  # a few match passes (200 ms) and emulator passes (100 ms)


async def received(r: aioredis.Redis, account: str, cid: str) -> int:
    """How many orders under ``cid`` reached the paper exchange of ``account``."""
    entries = await r.xrange(K.paper(account, "received"))
    return sum(1 for _, fields in entries if fields[b"client_order_id"] == cid.encode())


async def held(r: aioredis.Redis, cid: str) -> Held | None:
    data = await r.hget(K.order(cid), "held")
    return None if data is None else decoder(Held).decode(data)


async def final(client: OrderClient, cid: str, *also: OrderState) -> OrderStatus:
    async def done() -> bool:
        s = await client.order(cid)
        return s is not None and s.state in (OrderState.FILLED, OrderState.CANCELLED, *also)
    await until(done, 15)
    status = await client.order(cid)
    assert status is not None
    return status


async def held_buy(client: OrderClient) -> Submitted:
    """A market-if-touched buy at 49900 on the emulated account (the price at 50000)."""
    sub = await client.place(symbol="BTCUSDT", account="emulated", side="buy",
                             type="market_if_touched", quantity="0.2", stop_price="49900")
    result = await client.wait_result(sub)
    assert result.status is ResultStatus.ACCEPTED and result.emulated, result
    return sub


async def _zero(gauge: Any) -> bool:
    return bool(gauge._value.get() == 0)


ORDERS: list[dict[str, Any]] = [
    {"side": "sell", "type": "trailing_stop", "quantity": "0.5", "trailing_offset": "100"},
    {"side": "sell", "type": "trailing_stop_limit", "quantity": "0.3", "trailing_offset": "1",
     "trailing_offset_type": "percent", "limit_offset": "600"},
    {"side": "buy", "type": "market_if_touched", "quantity": "0.2", "stop_price": "49900"},
    {"side": "sell", "type": "limit_if_touched", "quantity": "0.1", "stop_price": "50300",
     "price": "50300"},
]


async def test_emulated_orders_fire_and_fill_as_the_paper_exchanges_native_ones(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    r = redis_client
    config = two_accounts(tmp_path, redis_url)
    await set_price(r, "50000")
    async with running(settings(config, redis_url)) as worker:
        placed = {(a, i): await client.place(symbol="BTCUSDT", account=a, **o)
                  for a in ACCOUNTS for i, o in enumerate(ORDERS)}
        results = {k: await client.wait_result(s) for k, s in placed.items()}
        for (account, _), result in results.items():
            assert result.status is ResultStatus.ACCEPTED, result
            assert result.emulated is (account == "emulated"), result
        emulated = [s.client_order_id for (a, _), s in placed.items() if a == "emulated"]
        for cid in emulated:  # held by the worker: nothing at the exchange
            assert await received(r, "emulated", cid) == 0
        trail = await held(r, emulated[0])
        assert trail is not None and trail.trail is not None
        assert (trail.trail.water, trail.trail.trigger) == (D("50000"), D("49900"))
        held_gauge = worker.metrics.emulated_orders.labels("emulated")

        async def counted() -> bool:
            return bool(held_gauge._value.get() == len(ORDERS))
        await until(counted, 5)

        # The path: up to 50500 (the trails follow; the limit-if-touched sell fires), a dip
        # that fires nothing, 50400 (the trailing stop's trigger, exactly), then 49900 (the
        # touched buy's stop and below the trailing limit's trigger, 49995).
        for price in ("50500", "50450", "50400", "49990", "49900"):
            await set_price(r, price)
        statuses = {k: await final(client, s.client_order_id) for k, s in placed.items()}
        await until(lambda: _zero(held_gauge), 5)  # nothing held any more

    for i, order in enumerate(ORDERS):
        native, emul = statuses[("native", i)], statuses[("emulated", i)]
        assert emul.state is native.state is OrderState.FILLED, (order, native, emul)
        assert [(f.price, f.quantity) for f in emul.fills] == \
            [(f.price, f.quantity) for f in native.fills], order
        assert emul.emulated and not native.emulated
    fills = {i: statuses[("native", i)].fills[0].price for i in range(len(ORDERS))}
    assert fills[0] == D("50400")  # fired exactly at its trigger
    assert fills[2] == D("49900")
    for cid in emulated:  # released once, as a plain order
        assert await received(r, "emulated", cid) == 1
        assert await r.hget(K.order(cid), "emulation") == b"released"
    assert await r.scard(K.emulated("emulated")) == 0


@pytest.fixture
def two(tmp_path: Path, redis_url: str) -> Settings:
    """A worker's settings with both accounts."""
    return settings(two_accounts(tmp_path, redis_url), redis_url)


async def test_a_held_order_cancelled_never_reaches_the_exchange(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        sub = await held_buy(client)
        cancel = await client.cancel(sub.client_order_id or "", account="emulated")
        result = await client.wait_result(cancel)
        assert result.ok, result
        await set_price(r, "49800", ("emulated",))
        status = await final(client, sub.client_order_id or "")
    assert status.state is OrderState.CANCELLED and status.fills == []
    assert await received(r, "emulated", sub.client_order_id or "") == 0
    assert await r.hget(K.order(sub.client_order_id or ""), "emulation") == b"cancelled"


async def test_an_if_touched_order_already_touched_is_refused_as_natively(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    config = two_accounts(tmp_path, redis_url)
    await set_price(redis_client, "50000")
    async with running(settings(config, redis_url)):
        subs = [await client.place(symbol="BTCUSDT", account=a, side="buy",
                                   type="market_if_touched", quantity="0.2",
                                   stop_price="50000") for a in ACCOUNTS]
        native, emul = [await client.wait_result(s) for s in subs]
    assert native.status is emul.status is ResultStatus.REJECTED
    assert emul.reason == native.reason == "order would trigger immediately"
    assert await redis_client.scard(K.emulated("emulated")) == 0


async def test_halted_trading_cancels_a_triggered_order_instead_of_sending_it(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        sub = await held_buy(client)
        await r.hset(K.trading, "emulated", "halted")
        await set_price(r, "49900", ("emulated",))
        status = await final(client, sub.client_order_id or "")
    assert status.state is OrderState.CANCELLED
    assert status.reason is not None and "halted" in status.reason
    assert await received(r, "emulated", sub.client_order_id or "") == 0


async def test_a_release_passes_the_risk_checks_again_at_the_price_then(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """max_notional 25,500: a market-if-touched sell of 0.5 at 50100 fits when placed
    (25,050), but the price gaps to 52000 when it triggers (26,000): its release is denied
    by the same check, the order ends cancelled with the check's reason, and nothing
    reaches the exchange. One that still fits is sent as before."""
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    await set_limits(r, K, "emulated", {"max_notional": "25500"}, by="test")
    async with running(two):
        big = await client.place(symbol="BTCUSDT", account="emulated", side="sell",
                                 type="market_if_touched", quantity="0.5", stop_price="50100")
        small = await client.place(symbol="BTCUSDT", account="emulated", side="sell",
                                   type="market_if_touched", quantity="0.4",
                                   stop_price="50100")
        for sub in (big, small):
            result = await client.wait_result(sub)
            assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        await set_price(r, "52000", ("emulated",))
        denied = await final(client, big.client_order_id or "")
        sent = await final(client, small.client_order_id or "")
    assert denied.state is OrderState.CANCELLED
    assert denied.reason is not None and "risk checks at release" in denied.reason
    assert "notional" in denied.reason and "52000" in denied.reason
    assert await received(r, "emulated", big.client_order_id or "") == 0
    assert sent.state is OrderState.FILLED and sent.filled_quantity == D("0.4")


async def test_a_release_whose_risk_checks_cannot_decide_waits_and_goes_later(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """The account's run-time limits unreadable when the order triggers: its checks cannot
    decide, so the release is neither sent unchecked nor cancelled; it goes once they can."""
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        sub = await held_buy(client)
        cid = sub.client_order_id or ""
        await r.hset(K.risk_limits, "emulated", b"{not json")
        await set_price(r, "49900", ("emulated",))
        await asyncio.sleep(0.5)  # passes that found it triggered
        status = await client.order(cid)
        assert status is not None and status.state is OrderState.ACCEPTED
        assert await r.hget(K.order(cid), "emulation") == b"triggered"
        assert await received(r, "emulated", cid) == 0
        await r.hdel(K.risk_limits, "emulated")
        done = await final(client, cid)
    assert done.state is OrderState.FILLED and done.filled_quantity == D("0.2")
    assert await received(r, "emulated", cid) == 1


@pytest.mark.timeout(120)
async def test_the_emulating_worker_killed_its_successor_fires_the_order_once(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    """The worker holding the account's lease is SIGKILLed; the price crosses the trigger
    while nobody emulates; the other worker takes the lease once it expires and fires the
    order, once, from the trail stored in Redis (the water mark the first one reached)."""
    r = redis_client
    client = OrderClient(r)
    config = two_accounts(tmp_path, redis_url)
    env = {"ORDERSTREAM_CONFIG": str(config), "ORDERSTREAM_EMULATOR_INTERVAL_MS": "100",
           "ORDERSTREAM_EMULATOR_LEASE_MS": "1500"}
    await set_price(r, "50000", ("emulated",))
    first = WorkerProcess(redis_url, "first", tmp_path / "first.log", **env)
    second: WorkerProcess | None = None
    try:
        await until(lambda: r.exists(K.worker("first")), 30)
        sub = await client.place(symbol="BTCUSDT", account="emulated", side="sell",
                                 type="trailing_stop", quantity="0.5", trailing_offset="100")
        assert (await client.wait_result(sub.request_id, 20)).status is ResultStatus.ACCEPTED
        cid = sub.client_order_id or ""
        await set_price(r, "50600", ("emulated",))

        async def trailed() -> bool:
            h = await held(r, cid)
            return h is not None and h.trail is not None and h.trail.trigger == D("50500")
        await until(trailed, 10)
        assert await r.get(K.emulator_lease("emulated")) == b"first:emulator"
        first.kill()
        await r.hset(K.paper("emulated", "prices"), "BTCUSDT", "50450")  # past 50500
        second = WorkerProcess(redis_url, "second", tmp_path / "second.log", **env)

        async def filled() -> bool:
            s = await client.order(cid)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 30)
        # Sent by the second (the release token is the sender's), once.
        assert await r.hget(K.order(cid), "release_sender") == b"second:emulator"
        status = await client.order(cid)
        assert status is not None and status.filled_quantity == D("0.5")
        await asyncio.sleep(1)
        assert await received(r, "emulated", cid) == 1
        events = await events_in(r)
        assert sum(1 for e in events if e.client_order_id == cid and e.fill) == 1
    finally:
        first.kill()
        if second is not None:
            second.stop()


class _NotThere:
    """An adapter with no orders at all: every cancel is OrderNotFound."""

    account = "emulated"

    async def cancel(self, client_order_id: str, symbol: str) -> None:
        raise OrderNotFound(f"no order {client_order_id}")


async def test_a_cancel_racing_a_release_is_asked_again_not_reported_not_found(
        redis_client: aioredis.Redis) -> None:
    """Triggered, its release not at the broker yet: the cancel is a retryable error (the
    cancel step asks again); held: cancelled without a broker call; neither: the broker's
    own answer."""
    r = redis_client
    broker = EmulatingBroker(_NotThere(), r, K)  # type: ignore[arg-type]
    await r.hset(K.order("t1"), mapping={"state": "accepted", "emulation": "triggered"})
    with pytest.raises(RetryableError, match="being sent by the emulator"):
        await broker.cancel("t1", "BTCUSDT")
    await r.hset(K.order("h1"), mapping={"state": "accepted", "emulation": "held"})
    await r.sadd(K.emulated("emulated"), "h1")
    cancelled = await broker.cancel("h1", "BTCUSDT")
    assert cancelled.status is BrokerStatus.CANCELLED and cancelled.emulated
    assert await r.hget(K.order("h1"), "emulation") == b"cancelled"
    assert await r.scard(K.emulated("emulated")) == 0
    with pytest.raises(OrderNotFound):
        await broker.cancel("plain", "BTCUSDT")


class _Batched:
    """An adapter that can look many orders up at once, and notes how it was asked."""

    account = "emulated"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.calls.append(("get_order", [client_order_id]))
        raise OrderNotFound(f"no order {client_order_id}")

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]) -> list[Any]:
        self.calls.append(("get_many", [cid for cid, _ in orders]))
        return [BrokerOrder(client_order_id=cid, broker_order_id="B", symbol=spec.symbol,
                            status=BrokerStatus.NEW, quantity=spec.quantity or zero())
                for cid, spec in orders]


async def test_lookups_of_orders_never_emulated_go_together_the_others_read_their_state(
        redis_client: aioredis.Redis) -> None:
    """An order of a type the emulator never takes has no emulation to read: looked up
    with the others in the adapter's one call. An emulable one is looked up as alone: a
    held one answers from its record, without the adapter."""
    r = redis_client
    adapter = _Batched()
    broker = EmulatingBroker(adapter, r, K)  # type: ignore[arg-type]
    limit = OrderSpec(account="emulated", symbol="BTCUSDT", side=Side.BUY,
                      type=OrderType.LIMIT, quantity=wire(Decimal("1")),
                      price=wire(Decimal("40000")))
    touched = msgspec.structs.replace(limit, type=OrderType.LIMIT_IF_TOUCHED,
                                      stop_price=wire(Decimal("39000")))
    await r.hset(K.order("h1"), mapping={"state": "accepted", "emulation": "held"})
    answers = await broker.get_many([("l1", limit), ("h1", touched), ("l2", limit)])
    assert [(a.client_order_id, a.status, a.emulated) for a in answers
            if isinstance(a, BrokerOrder)] == [
        ("l1", BrokerStatus.NEW, False), ("h1", BrokerStatus.NEW, True),
        ("l2", BrokerStatus.NEW, False)]
    assert adapter.calls == [("get_many", ["l1", "l2"])]


async def test_a_good_till_date_order_expires_while_held_and_day_is_refused(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        soon = int(time.time() * 1000) + 1_500
        gtd = await client.place(symbol="BTCUSDT", account="emulated", side="buy",
                                 type="market_if_touched", quantity="0.2", stop_price="49900",
                                 time_in_force="gtd", expire_at=soon)
        assert (await client.wait_result(gtd)).status is ResultStatus.ACCEPTED
        day = await client.place(symbol="BTCUSDT", account="emulated", side="buy",
                                 type="market_if_touched", quantity="0.2", stop_price="49900",
                                 time_in_force="day")
        refused = await client.wait_result(day)
        assert refused.reason_code == "invalid" and refused.reason is not None
        assert "time_in_force" in refused.reason, refused
        status = await final(client, gtd.client_order_id or "", OrderState.EXPIRED)
        await set_price(r, "49800", ("emulated",))  # past its stop, after it expired
    assert status.reason == "good-till-date: expire_at reached"
    assert status.updated_at >= soon
    assert await received(r, "emulated", gtd.client_order_id or "") == 0


async def test_an_unreadable_held_record_holds_up_no_other_order(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await r.hset(K.order("garbled"), mapping={"state": "accepted", "emulation": "held",
                                              "record": "{not json"})
    await r.sadd(K.emulated("emulated"), "garbled")
    await set_price(r, "50000", ("emulated",))
    async with running(two) as worker:
        sub = await held_buy(client)
        await set_price(r, "49900", ("emulated",))
        status = await final(client, sub.client_order_id or "")
        errors = worker.metrics.background_errors.labels("emulator")._value.get()
    assert status.state is OrderState.FILLED
    assert errors >= 1  # the garbled one: logged and counted, every pass
    assert await r.sismember(K.emulated("emulated"), "garbled")


async def test_an_amend_of_a_held_order_holds_its_replacement_and_sends_neither(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Cancel-replace of a held order: the old one is cancelled in the emulator (no broker
    call), the new one held at the new stop; it fires there, the old one never."""
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        old = await held_buy(client)  # stop 49900
        amend = await client.amend(old.client_order_id or "", stop_price="49950",
                                   account="emulated")
        result = await client.wait_result(amend)
        assert result.ok and result.emulated, result
        assert result.cancelled == [old.client_order_id]
        new = result.client_order_id or ""
        await set_price(r, "49950", ("emulated",))
        status = await final(client, new)
        gone = await client.order(old.client_order_id or "")
    assert status.state is OrderState.FILLED and status.spec.stop_price == D("49950")
    assert gone is not None and gone.state is OrderState.CANCELLED
    assert await received(r, "emulated", old.client_order_id or "") == 0
    assert await received(r, "emulated", new) == 1


async def test_an_oco_sends_only_the_leg_the_price_reaches(
        two: Settings, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Two sell ocos (take profit 50300, stop 49800): the price rises to the first's limit
    (its limit leg goes and fills at 50300); the second, placed then with its stop below,
    stops out at market when the price falls through it. Each sends one order, once."""
    r = redis_client
    await set_price(r, "50000", ("emulated",))
    async with running(two):
        first = await client.place(symbol="BTCUSDT", account="emulated", side="sell",
                                   type="oco", quantity="0.1", price="50300",
                                   stop_price="49800")
        assert (await client.wait_result(first)).emulated
        await set_price(r, "50300", ("emulated",))
        took_profit = await final(client, first.client_order_id or "")
        second = await client.place(symbol="BTCUSDT", account="emulated", side="sell",
                                    type="oco", quantity="0.1", price="50600",
                                    stop_price="50100")
        assert (await client.wait_result(second)).emulated
        await set_price(r, "50100", ("emulated",))
        stopped = await final(client, second.client_order_id or "")
    assert took_profit.state is stopped.state is OrderState.FILLED
    assert [f.price for f in took_profit.fills] == [D("50300")]
    assert [f.price for f in stopped.fills] == [D("50100")]
    for sub in (first, second):
        assert await received(r, "emulated", sub.client_order_id or "") == 1


async def test_a_worker_stopped_holding_a_release_token_is_never_doubled(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    """The emulating worker stops (SIGSTOP) right after taking the release's send token,
    before sending. Another takes the account over once the lease expires: it never sends
    (the token is the first one's), it looks the order up. The first resumes and sends;
    the second finds the order at the exchange and leaves it to the tracker: one order."""
    r = redis_client
    client = OrderClient(r)
    config = two_accounts(tmp_path, redis_url)
    env = {"ORDERSTREAM_CONFIG": str(config), "ORDERSTREAM_EMULATOR_INTERVAL_MS": "100",
           "ORDERSTREAM_EMULATOR_LEASE_MS": "1000", "ORDERSTREAM_TRACK_INTERVAL_MS": "200"}
    await set_price(r, "50000", ("emulated",))
    first = WorkerProcess(redis_url, "first", tmp_path / "first.log",
                          ORDERSTREAM_FAILPOINT="before_send:stop", **env)
    second: WorkerProcess | None = None
    try:
        await until(lambda: r.exists(K.worker("first")), 30)
        sub = await client.place(symbol="BTCUSDT", account="emulated", side="buy",
                                 type="market_if_touched", quantity="0.2", stop_price="49900")
        assert (await client.wait_result(sub.request_id, 20)).emulated
        cid = sub.client_order_id or ""
        await r.hset(K.paper("emulated", "prices"), "BTCUSDT", "49900")

        async def token_taken() -> bool:
            return await r.hget(K.order(cid), "release_sender") == b"first:emulator"
        await until(token_taken, 15)
        second = WorkerProcess(redis_url, "second", tmp_path / "second.log", **env)

        async def taken_over() -> bool:
            return await r.get(K.emulator_lease("emulated")) == b"second:emulator"
        await until(taken_over, 20)
        await asyncio.sleep(1.5)  # the second's lookups find nothing; it sends nothing
        assert await received(r, "emulated", cid) == 0
        assert await r.hget(K.order(cid), "emulation") == b"triggered"
        os.kill(first.proc.pid, signal.SIGCONT)

        async def filled() -> bool:
            s = await client.order(cid)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 30)
        assert await r.hget(K.order(cid), "emulation") == b"released"
        assert await received(r, "emulated", cid) == 1
    finally:
        first.kill()
        if second is not None:
            second.stop()


async def test_a_release_whose_token_holder_never_sent_it_ends_cancelled_never_sent(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    """A triggered order whose release token a worker took and never used (it died right
    there): not at the exchange unknown_resolve_ms after the trigger, it ends cancelled
    with the reason; nobody sends it."""
    r = redis_client
    config = two_accounts(tmp_path, redis_url)
    fast = msgspec.structs.replace(
        settings(config, redis_url),
        worker=msgspec.structs.replace(settings(config, redis_url).worker,
                                       unknown_resolve_ms=1_500, track_interval_ms=200))
    await set_price(r, "50000", ("emulated",))
    async with running(fast):
        sub = await held_buy(client)
        cid = sub.client_order_id or ""
        spec = (await client.order(cid)).spec  # type: ignore[union-attr]
        fired = Held(trigger_price=D("49900"), triggered_at=int(time.time() * 1000),
                     release=release_of(spec, None))
        await r.hset(K.order(cid), mapping={"emulation": "triggered", "held": encode(fired),
                                            "release_sender": "dead:emulator"})
        status = await final(client, cid)
    assert status.state is OrderState.CANCELLED
    assert status.reason is not None and "dead:emulator" in status.reason
    assert await received(r, "emulated", cid) == 0


async def test_a_release_whose_answer_was_lost_is_looked_up_never_sent_again(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    """Every submit at this paper exchange is stored and answered with a timeout
    (UnknownOutcome): the release is never sent a second time; it is looked up, found, and
    followed to its fill."""
    r = redis_client
    config = tmp_path / "orderstream.toml"
    config.write_text('[accounts.emulated]\nbroker = "paper"\nemulate_conditional = true\n'
                      'timeout_rate = 1.0\n')
    await set_price(r, "50000", ("emulated",))
    async with running(settings(config, redis_url)):
        sub = await held_buy(client)
        cid = sub.client_order_id or ""
        await set_price(r, "49900", ("emulated",))
        status = await final(client, cid)
    assert status.state is OrderState.FILLED
    assert await received(r, "emulated", cid) == 1
    assert await r.xlen(K.paper("emulated", "duplicates")) == 0  # never sent a second time
    assert await r.hget(K.order(cid), "release_sender") == b"w1:emulator:unknown"
    assert await r.hget(K.order(cid), "emulation") == b"released"
