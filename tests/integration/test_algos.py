"""Execution algorithms (TWAP, VWAP) through real workers on the paper exchange: the
parent is accepted at no broker, its children go one per slice at their times, add up to
exactly its quantity, and the parent's record follows their fills (the positions count the
children alone); a cancel stops the schedule; a worker SIGKILLed mid-schedule leaves it to
the next, with no slice sent twice or lost."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.config import Settings, load_settings
from producer.client import OrderClient
from producer.contract import (
    Algo,
    AlgoStrategy,
    OrderState,
    OrderStatus,
    OrderType,
    ReasonCode,
    ResultStatus,
    Side,
)
from producer.keys import Keys

from .conftest import events_in, running, settings_for, until
from .test_lists import order_in, position, set_price
from .test_operator_commands import cli_json

K = Keys()
D = Decimal


def fast(redis_url: str, consumer: str = "w1") -> Settings:
    return settings_for(redis_url, consumer, emulator_interval_ms=50,
                        emulator_lease_ms=1000)


async def answers(r: aioredis.Redis, request_id: str) -> list[bytes]:
    """The result entries of a request, in both result streams."""
    return [f[b"data"] for stream in (K.completed, K.failed) for _, f in await r.xrange(stream)
            if f[b"request_id"] == request_id.encode()]


async def children(client: OrderClient, cid: str) -> list[OrderStatus]:
    out = []
    for n in range(1, 30):
        status = await client.order(f"{cid}-E{n}")
        if status is not None:
            out.append(status)
    return out


def twap(slices: int, horizon_ms: int, **kw: object) -> Algo:
    return Algo(strategy=AlgoStrategy.TWAP, horizon_ms=horizon_ms, slices=slices, **kw)


async def test_a_twap_sends_a_child_per_slice_and_fills_its_parent_exactly(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)) as worker:
        sub = await client.place("BTCUSDT", "buy", "market", "1.00003", client_order_id="T1",
                                 strategy_id="s1", algo=twap(4, 4_000))
        await order_in(client, "T1", OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
        # Working: acked, and no result yet; it comes when the schedule ends.
        assert await r.xrange(K.pending, sub.request_id, sub.request_id) == []  # acked
        assert await answers(r, sub.request_id) == []
        parent = await order_in(client, "T1", OrderState.FILLED, timeout=15)
        result = await client.wait_result(sub)
        kids = await children(client, "T1")
        assert worker.metrics.registry.get_sample_value(
            "orderstream_algo_slices_total", {"account": "default"}) == 4

        async def folded() -> bool:
            return await position(r) == D("1.00003")  # the children's fills, once
        await until(folded, 10)

        async def over() -> bool:
            return not await r.exists(K.algos("default"))
        await until(over, 10)
        account = {"account": "default"}
        sample = worker.metrics.registry.get_sample_value
        assert sample("orderstream_algo_fill_ratio_count", account) == 1
        assert sample("orderstream_algo_fill_ratio_sum", account) == 1.0
        # Its buckets go below 0, so it has no _sum: the one slippage is 0.
        assert sample("orderstream_algo_slippage_bps_count", account) == 1
        assert sample("orderstream_algo_slippage_bps_bucket", {**account, "le": "0.0"}) == 1
    # Cumulative targets on the step: 0.25000, 0.50001, 0.75002, all.
    assert [k.spec.quantity for k in kids] == [D("0.25000"), D("0.25001"), D("0.25001"),
                                               D("0.25001")]
    assert sum(k.filled_quantity for k in kids) == D("1.00003")
    assert all(k.state is OrderState.FILLED and k.spec.side is Side.BUY for k in kids)
    assert all(k.spec.metadata == {"algo_id": "T1", "slice": i} for i, k in enumerate(kids))
    assert all(k.spec.strategy_id == "s1" for k in kids)
    # One slice a second from the parent's creation, the first at once: never early.
    times = [k.created_at - parent.created_at for k in kids]
    assert all(i * 1_000 <= t < i * 1_000 + 900 for i, t in enumerate(times)), times
    assert parent.filled_quantity == D("1.00003") and parent.average_price == D("50000")
    # Its one result: the schedule's end, with the totals.
    assert (result.status, result.order_state, result.filled_quantity,
            result.average_price) == (ResultStatus.FILLED, OrderState.FILLED, D("1.00003"),
                                      D("50000"))
    assert result.reason is not None and "4 child orders" in result.reason
    # The fees its children paid (the paper exchange's taker fee, in USDT).
    fees = sum((k.commission or D(0) for k in kids), D(0))
    assert fees > 0 and result.commissions == {"USDT": fees}
    assert (result.commission, result.commission_asset) == (fees, "USDT")
    assert result.strategy_id == "s1" and result.completed_at >= kids[-1].created_at
    assert result.enqueued_at == int(sub.request_id.split("-")[0])
    assert len(await answers(r, sub.request_id)) == 1
    events = await events_in(r, "T1")
    assert [e.state for e in events][-1] is OrderState.FILLED
    assert all(e.fill is None for e in events)
    assert ("algo T1 is over: twap: filled 1.00003 of 1.00003 in 4 child orders, average "
            "50000 against 50000 on arrival (0.00 bps)") in caplog.text
    # The parent's record is what replay makes of its events (totals without fills).
    code, replayed = await cli_json(redis_url, "replay")
    assert (code, replayed["differences"]) == (0, [])


async def test_a_vwap_follows_its_weights(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    await set_price(redis_client, "50000")
    algo = Algo(strategy=AlgoStrategy.VWAP, horizon_ms=3_000, interval_ms=1_000,
                weights=[D("1"), D("2"), D("1")])
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "sell", "market", "0.4", client_order_id="V1",
                                 algo=algo)
        parent = await order_in(client, "V1", OrderState.FILLED, timeout=15)
        assert (await client.wait_result(sub)).filled_quantity == D("0.4")
        kids = await children(client, "V1")
    assert [k.spec.quantity for k in kids] == [D("0.1"), D("0.2"), D("0.1")]
    assert all(k.spec.side is Side.SELL for k in kids)
    assert parent.filled_quantity == D("0.4")


async def test_cancelling_the_parent_stops_its_schedule_and_counts_its_working_child(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient, caplog: pytest.LogCaptureFixture) -> None:
    """The exchange takes 1.5 s per call: the cancel comes while the second child is
    being sent. The schedule publishes no more children, cancels the working one (too
    late: a market order fills) and ends the parent cancelled with both children's fills."""
    r = redis_client
    await set_price(r, "50000")
    config = tmp_path / "orderstream.toml"
    config.write_text('[accounts.default]\nbroker = "paper"\nlatency_ms = 1500\n')
    settings = load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
        "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": "50", "ORDERSTREAM_EMULATOR_LEASE_MS": "1000"})
    async with running(settings):
        sub = await client.place("BTCUSDT", "buy", "market", "0.4", client_order_id="C1",
                                 algo=twap(4, 8_000))
        await order_in(client, "C1-E1", OrderState.FILLED)
        await order_in(client, "C1-E2", OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
                       timeout=5)
        answer = await client.wait_result(await client.cancel("C1"))
        assert answer.status is ResultStatus.ACCEPTED
        assert answer.order_state is OrderState.PENDING_CANCEL
        parent = await order_in(client, "C1", OrderState.CANCELLED, timeout=15)
        final = await client.wait_result(sub)
        await asyncio.sleep(2.5)  # past the next slice: nothing more is sent
        kids = await children(client, "C1")
    assert [k.client_order_id for k in kids] == ["C1-E1", "C1-E2"]
    assert parent.filled_quantity == sum(k.filled_quantity for k in kids) == D("0.2")
    assert (final.status, final.filled_quantity) == (ResultStatus.CANCELLED, D("0.2"))
    assert "cancelled with 0.2 left" in (parent.reason or "")
    assert not await r.exists(K.algos("default"))
    assert not await r.hexists(K.algos_cancel, "C1")
    assert "algo C1 stopped: its working children C1-E2 cancelled" in caplog.text


async def test_a_refused_child_is_sent_again_and_a_halt_leaves_the_rest_unfilled(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Trading halted after the first slice: each later child is refused without an
    order (and sent again 5 s later, not at every pass); the schedule ends at its end
    time, expired with what was filled."""
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.3", client_order_id="H1",
                                 algo=twap(3, 6_000))
        await order_in(client, "H1-E1", OrderState.FILLED)
        await r.hset(K.trading, "default", "halted")
        parent = await order_in(client, "H1", OrderState.EXPIRED, timeout=15)
        final = await client.wait_result(sub)
    refused = [f for _, f in await r.xrange(K.failed) if f[b"client_order_id"].startswith(
        b"H1-E")]
    # Slices at 2 s and 4 s, each refused once and again 5 s later only if still due.
    assert 2 <= len(refused) <= 3, refused
    assert parent.filled_quantity == D("0.1") and parent.reason_code == ReasonCode.EXPIRED
    assert (final.status, final.reason_code, final.filled_quantity) == (
        ResultStatus.EXPIRED, ReasonCode.EXPIRED, D("0.1"))
    assert "its end time passed with 0.2 left" in (parent.reason or "")


@pytest.mark.timeout(120)
async def test_a_schedule_whose_owner_dies_goes_on_elsewhere_with_no_slice_twice(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    """The worker holding the account's lease is SIGKILLed after the first slices; the
    next one takes the lease over and goes on: every slice's child once (a slice missed
    meanwhile is caught up in one child), adding up to exactly the parent's quantity."""
    r = redis_client
    await set_price(r, "50000")
    first = WorkerProcess(redis_url, "first", tmp_path / "first.log",
                          ORDERSTREAM_EMULATOR_INTERVAL_MS="50",
                          ORDERSTREAM_EMULATOR_LEASE_MS="1000")
    try:
        await until(lambda: r.exists(K.worker("first")), 30)
        sub = await client.place("BTCUSDT", "buy", "market", "0.6", client_order_id="K1",
                                 algo=twap(6, 6_000))
        await order_in(client, "K1-E2", OrderState.FILLED, timeout=10)
        assert await r.get(K.emulator_lease("default")) == b"first:emulator"
        first.kill()
        async with running(settings_for(redis_url, "heir", emulator_interval_ms=50,
                                        emulator_lease_ms=1000, track_interval_ms=200)):
            parent = await order_in(client, "K1", OrderState.FILLED, timeout=30)
            # Its one result, from the heir: written once, with the parent's end.
            assert (await client.wait_result(sub)).status is ResultStatus.FILLED
            assert len(await answers(r, sub.request_id)) == 1
            kids = await children(client, "K1")
            assert await r.get(K.emulator_lease("default")) == b"heir:emulator"
    finally:
        first.kill()
    slices = [k.spec.metadata["slice"] for k in kids if k.spec.metadata]
    assert len(slices) == len(set(slices)) == len(kids) and slices == sorted(slices)
    assert sum(k.filled_quantity for k in kids) == parent.filled_quantity == D("0.6")
    assert all(k.state is OrderState.FILLED for k in kids)


async def test_a_limit_twap_prices_its_children_passively_and_re_prices_them(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """A limit buy at 49940, 10 bps under the price: its first child rests at the cap,
    is cancelled after reprice_ms unfilled and sent again; that one fills when the price
    falls to it; the second slice's child goes 10 bps under the price then."""
    r = redis_client
    await set_price(r, "50000")
    algo = Algo(strategy=AlgoStrategy.TWAP, horizon_ms=6_000, slices=2,
                limit_offset_bps=D("10"), reprice_ms=1_000)
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49940",
                                 client_order_id="L1", algo=algo)
        first = await order_in(client, "L1-E1", OrderState.CANCELLED, timeout=5)
        await order_in(client, "L1-E2", OrderState.ACCEPTED, timeout=5)
        await set_price(r, "49900")
        second = await order_in(client, "L1-E2", OrderState.FILLED, timeout=5)
        await order_in(client, "L1-E3", OrderState.ACCEPTED, timeout=10)
        await set_price(r, "49850")
        third = await order_in(client, "L1-E3", OrderState.FILLED, timeout=5)
        parent = await order_in(client, "L1", OrderState.FILLED, timeout=5)
        final = await client.wait_result(sub)
    assert (first.spec.type, first.spec.price, first.filled_quantity) == (
        OrderType.LIMIT, D("49940"), D(0))
    assert (second.spec.price, second.filled_quantity) == (D("49940"), D("0.1"))
    assert (third.spec.price, third.filled_quantity) == (D("49850.1"), D("0.1"))
    assert parent.filled_quantity == D("0.2") and parent.average_price == D("49895.05")
    assert (final.status, final.average_price) == (ResultStatus.FILLED, D("49895.05"))


async def test_a_limit_child_still_resting_at_the_end_is_cancelled_and_the_parent_expires(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    await set_price(redis_client, "50000")
    algo = Algo(strategy=AlgoStrategy.TWAP, horizon_ms=2_000, slices=1, reprice_ms=1_000)
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.1", price="40000",
                                 client_order_id="X1", algo=algo)
        parent = await order_in(client, "X1", OrderState.EXPIRED, timeout=10)
        assert (await client.wait_result(sub)).status is ResultStatus.EXPIRED
        kids = await children(client, "X1")
    assert [k.state for k in kids] == [OrderState.CANCELLED, OrderState.CANCELLED]
    assert all(k.spec.price == D("40000") for k in kids)
    assert parent.filled_quantity == 0 and "its end time passed with 0.1 left" in (
        parent.reason or "")


async def test_a_halted_account_takes_no_schedule_and_a_reducing_one_only_a_reducing_one(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        await r.hset(K.trading, "default", "halted")
        halted = await client.wait_result(await client.place(
            "BTCUSDT", "buy", "market", "0.1", client_order_id="N1", algo=twap(2, 2_000)))
        await r.hset(K.trading, "default", "reducing")
        growing = await client.wait_result(await client.place(
            "BTCUSDT", "buy", "market", "0.1", client_order_id="N2", algo=twap(2, 2_000)))
        await client.place("BTCUSDT", "sell", "market", "0.1", client_order_id="N3",
                           reduce_only=True, algo=twap(2, 2_000))
        reducing = await order_in(client, "N3", OrderState.ACCEPTED, OrderState.EXPIRED)
    assert (halted.status, halted.reason_code) == (ResultStatus.DENIED, ReasonCode.HALTED)
    assert "halted" in (halted.reason or "")
    assert (growing.status, growing.reason_code) == (ResultStatus.DENIED, ReasonCode.HALTED)
    assert "only a reduce_only algorithm" in (growing.reason or "")
    assert reducing.spec.algo is not None  # taken: its schedule runs
    assert await client.order("N1") is None and await client.order("N2") is None
    assert not await r.hexists(K.algos("default"), "N1")


def with_flow(settings: Settings, per_minute: str) -> Settings:
    """``settings`` with the paper market's volume of BTCUSDT set to ``per_minute``."""
    settings.accounts["default"].symbols["BTCUSDT"].volume_per_minute = D(per_minute)
    return settings


async def test_a_participation_cap_holds_the_children_to_a_share_of_the_volume(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """The market trades 0.001 BTC a second; at most half of it: 0.0005 a second, where
    the schedule alone would send 0.001. Each child, sent, keeps the children's total
    within the cap of the volume traded since the start; what the cap held back at the
    end is left, and the parent expires with it."""
    caplog.set_level(logging.INFO, "executor.background.algos")
    await set_price(redis_client, "50000")
    cap = D("0.5")
    async with running(with_flow(fast(redis_url), "0.06")):
        sub = await client.place("BTCUSDT", "buy", "market", "0.004", client_order_id="P1",
                                 algo=twap(4, 4_000, max_participation=cap))
        parent = await order_in(client, "P1", OrderState.EXPIRED, timeout=15)
        assert (await client.wait_result(sub)).status is ResultStatus.EXPIRED
        kids = await children(client, "P1")
    assert len(kids) >= 2, kids
    total = D(0)
    for kid in kids:
        total += kid.spec.quantity or 0
        traded = D("0.001") * (kid.created_at - parent.created_at) / 1000
        assert total <= cap * traded, (kid.client_order_id, total, traded)
    assert parent.filled_quantity == total == sum(k.filled_quantity for k in kids)
    assert D("0.001") <= total <= D("0.002"), total  # the cap holds back, not all
    assert f"its end time passed with {D('0.004') - total} left" in (parent.reason or "")
    assert "(capped by its participation)" in caplog.text


async def test_an_end_time_spreads_the_slices_up_to_it(
        redis_url: str, client: OrderClient, redis_client: aioredis.Redis) -> None:
    await set_price(redis_client, "50000")
    async with running(fast(redis_url)) as worker:
        end_at = worker.svc.clock() + 3_500
        algo = Algo(strategy=AlgoStrategy.TWAP, end_at=end_at, slices=3)
        sub = await client.place("BTCUSDT", "sell", "market", "0.3", client_order_id="E1",
                                 algo=algo)
        parent = await order_in(client, "E1", OrderState.FILLED, timeout=15)
        assert (await client.wait_result(sub)).status is ResultStatus.FILLED
        kids = await children(client, "E1")
    assert [k.spec.quantity for k in kids] == [D("0.1")] * 3
    interval = (end_at - parent.created_at) // 3
    times = [k.created_at - parent.created_at for k in kids]
    assert all(i * interval <= t < i * interval + 900 for i, t in enumerate(times)), times
    assert kids[-1].created_at < end_at


async def test_a_parent_above_the_largest_order_is_taken_when_its_children_fit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """The paper exchange takes at most 1000 BTC an order: 1500 in six slices is six
    children of 250; in one slice it is refused, naming the quantity."""
    await set_price(redis_client, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "market", "1500", client_order_id="B1",
                                 algo=twap(6, 60_000))
        first = await order_in(client, "B1-E1", OrderState.FILLED, OrderState.EXPIRED,
                               OrderState.PARTIALLY_FILLED, timeout=10)
        await client.wait_result(await client.cancel("B1"))
        big = await client.wait_result(sub)
        whole = await client.wait_result(await client.place(
            "BTCUSDT", "buy", "market", "1500", client_order_id="B2",
            algo=twap(1, 60_000)))
    assert big.status is ResultStatus.CANCELLED, big
    assert first.spec.quantity == D("250")
    assert (whole.status, whole.reason_code) == (ResultStatus.FAILED, ReasonCode.INVALID)
    assert "1000" in (whole.reason or "") and await client.order("B2") is None
