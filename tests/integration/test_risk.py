"""Pre-trade risk checks through real workers on a real redis-server and the paper broker:
each check denies a real request with its reason code and numbers; two workers racing on
one limit let exactly one order through; fills and cancels give reservations back; run-time
limits reach a running worker within a second, audited; trading states reducing and halted
are enforced; what cannot be evaluated is denied."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from executor import cli
from executor.background.projector import Projector
from executor.brokers.base import RetryableError
from executor.config import Settings
from executor.infra import audit
from executor.model.positions import decode_position
from executor.operations.risk_commands import set_limits
from executor.safety.risk.book import Reservation
from executor.safety.risk.limits import AccountLimits, RiskSettings
from executor.safety.risk.state import (
    ANY_TURN,
    RiskState,
    Snapshot,
    Write,
    checks_version_key,
    decode_reservation,
    open_by_symbol,
    open_key,
    turn_key,
    version_key,
)
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Result,
    ResultStatus,
    Side,
    WireDecimal,
    encode,
)
from producer.keys import Keys

from .conftest import replace, running

K = Keys()
D = Decimal


def with_risk(settings: Settings, **limits: Any) -> Settings:
    return replace(settings, risk=RiskSettings(defaults=AccountLimits(**limits)))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def reservations(r: aioredis.Redis, account: str = "default") -> dict[str, Any]:
    return {k.decode(): decode_reservation(v)
            for k, v in (await r.hgetall(open_key(K, account))).items()}


async def place(client: OrderClient, *args: Any, **kw: Any) -> Result:
    sub = await client.place(*args, **kw)
    return await client.wait_result(sub.request_id, 10)


RESTING = {"price": "45000"}  # a buy limit far below the paper price 50000: it rests


@pytest.mark.parametrize(("limits", "order", "code", "message"), [
    ({"max_quantity": D("0.01")}, ("buy", "limit", "0.011", RESTING),
     "risk_denied:quantity", "quantity 0.011 is above max_quantity 0.01 (BTCUSDT)"),
    ({"min_notional": D("10")}, ("buy", "market", "0.0001", {}),
     "risk_denied:notional", "notional 5 (0.0001 x 50000) is below min_notional 10"),
    ({"max_notional": D("100")}, ("buy", "limit", "0.01", RESTING),
     "risk_denied:notional", "notional 450 (0.01 x 45000) is above max_notional 100"),
    ({"deny_symbols": ["BTCUSDT"]}, ("buy", "market", "0.01", {}),
     "risk_denied:symbol", "BTCUSDT is on the deny list of account default"),
    ({"allow_symbols": ["ETHUSDT"]}, ("buy", "market", "0.01", {}),
     "risk_denied:symbol", "BTCUSDT is not on the allow list of account default (ETHUSDT)"),
    ({"price_band_pct": D("5")}, ("buy", "limit", "0.01", {"price": "52500.01"}),
     "risk_denied:price_band", "price 52500.01 is 5.00% from the reference price 50000"),
    ({}, ("sell", "market", "0.01", {"reduce_only": True}),
     "risk_denied:reduce_only", "reduce_only sell of 0.01 BTCUSDT would increase the "
     "position (position 0"),
    ({"max_daily_orders": 0}, ("buy", "market", "0.01", {}),
     "risk_denied:daily_orders", "order 1 today would exceed max_daily_orders 0"),
    ({"max_open_orders": 0}, ("buy", "market", "0.01", {}),
     "risk_denied:open_orders", "0 orders are open; one more would exceed max_open_orders 0"),
    ({"max_open_positions": 0}, ("buy", "market", "0.01", {}),
     "risk_denied:open_positions", "BTCUSDT would exceed max_open_positions 0"),
    ({"balance": D("449.99")}, ("buy", "limit", "0.01", RESTING),
     "risk_denied:balance", "notional 450 is above the available balance 449.99"),
    ({"equity": D("1000"), "max_position_pct": D("10")}, ("buy", "market", "0.01", {}),
     "risk_denied:position_exposure",
     "BTCUSDT exposure would be 500, over max_position_pct 10% of equity 1000 (= 100)"),
    ({"max_total_exposure": D("499.99")}, ("buy", "market", "0.01", {}),
     "risk_denied:total_exposure", "total exposure would be 500 (now 0), over "
     "max_total_exposure 499.99"),
    ({"max_net_short": D("100")}, ("sell", "market", "0.01", {}),
     "risk_denied:directional", "net short exposure would be 500 (now 0), over "
     "max_net_short 100"),
])
async def test_each_check_denies_a_real_request(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    limits: dict[str, Any], order: tuple[str, str, str, dict[str, Any]], code: str,
    message: str,
) -> None:
    side, kind, qty, extra = order
    async with running(with_risk(make_settings(), **limits)) as worker:
        result = await place(client, "BTCUSDT", side, kind, qty, **extra)
        received = await worker.brokers["default"].received_count()  # type: ignore[attr-defined]
    assert (result.status, result.reason_code) == (ResultStatus.DENIED, code), result.reason
    assert result.reason is not None and message in result.reason
    assert received == 0  # never reached the broker
    assert result.client_order_id is not None
    assert not await redis_client.exists(K.order(result.client_order_id))
    assert await reservations(redis_client) == {}


async def test_daily_loss_limit_denies_once_the_day_lost_more(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    settings = with_risk(make_settings(), max_daily_loss=D("500"))
    async with running(settings) as worker:
        day = worker.risk._day()
        await redis_client.hset(K.risk("default", f"day:{day}"), "pnl", "-500")
        at_limit = await place(client, "BTCUSDT", "buy", "market", "0.01")
        # As the projector writes a fill's PnL: with the account's version moved.
        await redis_client.hset(K.risk("default", f"day:{day}"), "pnl", "-500.01")
        await redis_client.incr(version_key(K, "default"))
        over = await place(client, "BTCUSDT", "buy", "market", "0.01")
    assert at_limit.status is ResultStatus.FILLED
    assert over.reason_code == "risk_denied:daily_loss"
    assert over.reason is not None and "realized loss today 500.01 is over max_daily_loss 500" \
        in over.reason


async def test_the_projector_counts_realized_pnl_of_the_day(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()) as worker:
        bought = await place(client, "BTCUSDT", "buy", "market", "0.01")
        sold = await place(client, "BTCUSDT", "sell", "market", "0.01")
        day_key = K.risk("default", f"day:{worker.risk._day()}")
        await until(lambda: redis_client.hexists(day_key, "pnl"))
        await until(lambda: _flat(redis_client))
        pnl = D((await redis_client.hget(day_key, "pnl")).decode())
        orders = int(await redis_client.hget(day_key, "orders"))
        ttl = await redis_client.pttl(day_key)
    expected = D(0)
    for result, sign in ((bought, -1), (sold, 1)):
        for fill in result.fills:
            expected += sign * fill.price * fill.quantity - fill.commission
    assert pnl == expected and pnl < 0  # the spread and the fees
    assert orders == 2
    assert 0 < ttl <= 2 * 86_400_000


async def _flat(r: aioredis.Redis) -> bool:
    raw = await r.hget(K.positions, "default:BTCUSDT")
    return raw is not None and decode_position(raw).quantity == 0


async def _barrier_on_snapshots(workers: list[Worker], parties: int) -> list[int]:
    """Make the first ``parties`` snapshots (whichever workers take them) wait for each
    other, so their orders are decided on one and the same state; returns a list that
    counts compare-and-set conflicts."""
    barrier = asyncio.Barrier(parties)
    waiting = [parties]
    conflicts = [0]
    for worker in workers:
        state = worker.risk.state
        snapshot, commit = state.snapshot, state.commit

        async def gated(account: str, day: str, cids: Any = (), snapshot: Any = snapshot,
                        **kw: Any) -> Snapshot:
            snap: Snapshot = await snapshot(account, day, cids, **kw)
            if waiting[0] > 0:
                waiting[0] -= 1
                await asyncio.wait_for(barrier.wait(), 5)
            return snap

        async def counted(*args: Any, commit: Any = commit) -> bool:
            done: bool = await commit(*args)
            conflicts[0] += not done
            return done

        # The checks' compare-and-set is made alone, or first in the script that creates
        # the orders that passed (None: it did not apply), with the paper exchange's door
        # or without.
        store = worker.svc.store
        for name in ("reserve_and_begin", "reserve_begin_and_open"):
            together = getattr(store, name)

            async def counted_together(*args: Any, together: Any = together) -> Any:
                begun = await together(*args)
                conflicts[0] += begun is None
                return begun
            setattr(store, name, counted_together)

        state.snapshot = gated  # type: ignore[method-assign]
        state.commit = counted  # type: ignore[method-assign]
    return conflicts


async def test_two_workers_racing_two_orders_over_max_open_orders_one_passes(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """Both workers read the same state (held at a barrier), each order fits alone, together
    they exceed the limit: the compare-and-set makes the second decide again, and deny."""
    one = dict(batch_size=1, concurrency=1)
    async with running(with_risk(make_settings("w1", **one), max_open_orders=1)) as w1, \
            running(with_risk(make_settings("w2", **one), max_open_orders=1)) as w2:
        conflicts = await _barrier_on_snapshots([w1, w2], 2)
        subs = [await client.place("BTCUSDT", "buy", "limit", "0.01", price="45000")
                for _ in range(2)]
        results = await client.wait_results([s.request_id for s in subs], 10)
    codes = sorted(r.reason_code or r.status for r in results.values())
    assert codes == ["accepted", "risk_denied:open_orders"]
    assert {r.worker for r in results.values()} == {"w1", "w2"}  # a real cross-worker race
    assert conflicts[0] >= 1
    assert len(await reservations(redis_client)) == 1


async def test_two_workers_racing_on_total_exposure_one_passes(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    one = dict(batch_size=1, concurrency=1)
    limits = {"max_total_exposure": D("500")}  # each resting buy is 450
    async with running(with_risk(make_settings("w1", **one), **limits)) as w1, \
            running(with_risk(make_settings("w2", **one), **limits)) as w2:
        await _barrier_on_snapshots([w1, w2], 2)
        subs = [await client.place("BTCUSDT", "buy", "limit", "0.01", price="45000")
                for _ in range(2)]
        results = await client.wait_results([s.request_id for s in subs], 10)
    assert sorted(r.reason_code or r.status for r in results.values()) == [
        "accepted", "risk_denied:total_exposure"]
    denied = next(r for r in results.values() if r.reason_code)
    assert denied.reason is not None and "would be 900 (now 450)" in denied.reason


async def test_many_orders_from_two_workers_never_exceed_max_open_orders(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    opts = dict(batch_size=1, concurrency=3)
    async with running(with_risk(make_settings("w1", **opts), max_open_orders=3)), \
            running(with_risk(make_settings("w2", **opts), max_open_orders=3)):
        subs = [await client.place("BTCUSDT", "buy", "limit", "0.01", price="45000")
                for _ in range(12)]
        results = await client.wait_results([s.request_id for s in subs], 20)
    statuses = [r.reason_code or r.status for r in results.values()]
    assert statuses.count("accepted") == 3
    assert statuses.count("risk_denied:open_orders") == 9
    assert len(await reservations(redis_client)) == 3


async def test_reservations_are_released_by_cancel_and_fill_so_later_orders_fit(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(with_risk(make_settings(), max_open_orders=1)):
        resting = await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
        assert resting.status is ResultStatus.ACCEPTED
        [held] = (await reservations(redis_client)).values()
        assert (held.quantity, held.price, held.side) == (D("0.01"), D("45000"), "buy")
        assert (await place(client, "BTCUSDT", "buy", "market", "0.01")).reason_code == \
            "risk_denied:open_orders"
        assert resting.client_order_id is not None
        cancel = await client.cancel(resting.client_order_id)
        assert (await client.wait_result(cancel.request_id, 10)).status is \
            ResultStatus.CANCELLED
        await until(lambda: _no_reservations(redis_client))
        filled = await place(client, "BTCUSDT", "buy", "market", "0.01")
        assert filled.status is ResultStatus.FILLED
        await until(lambda: _no_reservations(redis_client))  # the fill released it
        again = await place(client, "BTCUSDT", "buy", "market", "0.01")
        assert again.status is ResultStatus.FILLED
        await until(lambda: _no_reservations(redis_client))
        snap = await RiskState(redis_client, K).snapshot("default", "x")
    # What was reserved was released to the digit: the open totals are back at zero.
    btc = open_by_symbol(snap.sums)["BTCUSDT"]
    assert (btc.buy_quantity, btc.buy_notional, btc.orders, snap.open_orders) == (0, 0, 0, 0)
    assert snap.sums["BTCUSDT|buy|q+"] == D("0.03")  # three orders passed the checks


async def _no_reservations(r: aioredis.Redis) -> bool:
    return not await r.hlen(open_key(K, "default"))


async def test_an_amend_is_not_held_back_by_its_old_order_whose_cancel_releases_it(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(with_risk(make_settings(), max_open_orders=1)):
        first = await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
        assert first.client_order_id is not None
        sub = await client.amend(first.client_order_id, price="45500")
        amended = await client.wait_result(sub.request_id, 10)
        assert amended.status is ResultStatus.ACCEPTED, amended.reason
        await until(lambda: _gone(redis_client, first.client_order_id or ""))
        held = await reservations(redis_client)
    assert list(held) == [amended.client_order_id]
    assert held[amended.client_order_id].price == D("45500")


def _risk_cli(url: str, *args: str) -> int:
    return cli.main(["risk", *args, "--redis-url", url])


async def test_risk_set_reaches_a_running_worker_within_a_second_and_is_audited(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    redis_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    async with running(make_settings()):
        assert (await place(client, "BTCUSDT", "buy", "market", "0.01")).status is \
            ResultStatus.FILLED
        assert await asyncio.to_thread(_risk_cli, redis_url, "set", "--account", "default",
                                       "max_quantity=0.005", "deny_symbols=ETHUSDT") == 0
        changed = time.monotonic()
        denied = await place(client, "BTCUSDT", "buy", "market", "0.01")
        took = time.monotonic() - changed
        assert await asyncio.to_thread(_risk_cli, redis_url, "set", "--account", "default",
                                       "--symbol", "BTCUSDT", "max_quantity=0.02") == 0
        per_symbol = await place(client, "BTCUSDT", "buy", "market", "0.01")
        eth = await place(client, "ETHUSDT", "buy", "market", "0.01")
    assert denied.reason_code == "risk_denied:quantity" and took < 1.0
    assert per_symbol.status is ResultStatus.FILLED  # the symbol's own limit wins
    assert eth.reason_code == "risk_denied:symbol"
    entries = await audit.read(redis_client, K)
    assert [(e.kind, e.scope) for e in entries] == [("risk_set", "default")] * 2
    assert entries[0].details["changes"] == {"max_quantity": "0.005",
                                             "deny_symbols": "ETHUSDT"}
    assert entries[1].details["symbol"] == "BTCUSDT"
    assert int(await redis_client.get(version_key(K, "default"))) >= 2
    capsys.readouterr()
    assert await asyncio.to_thread(_risk_cli, redis_url, "show", "--json") == 0
    shown = capsys.readouterr().out
    assert '"max_quantity":"0.005"' in shown and '"day_orders":2' in shown


async def test_risk_set_refuses_a_bad_key_and_changes_nothing(
    redis_client: aioredis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert await asyncio.to_thread(_risk_cli, redis_url, "set", "--account", "default",
                                   "max_orders=1") == 2
    assert "unknown risk limit 'max_orders'" in capsys.readouterr().err
    assert await asyncio.to_thread(_risk_cli, redis_url, "set", "--account", "nobody",
                                   "max_open_orders=1") == 2
    assert not await redis_client.exists(K.risk_limits)
    assert await audit.read(redis_client, K) == []


async def test_halted_denies_every_new_order_but_not_cancels(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()):
        resting = await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
        await redis_client.hset(K.trading, "default", "halted")
        denied = await place(client, "BTCUSDT", "buy", "market", "0.01")
        assert resting.client_order_id is not None
        cancel = await client.cancel(resting.client_order_id)
        cancelled = await client.wait_result(cancel.request_id, 10)
        await redis_client.hset(K.trading, "default", "active")
        await redis_client.hset(K.trading, "global", "halted")  # a global halt stops it too
        globally = await place(client, "BTCUSDT", "sell", "market", "0.01")
    assert (denied.status, denied.reason_code) == (ResultStatus.DENIED, "halted")
    assert denied.reason == "account default is halted: no new orders"
    assert cancelled.status is ResultStatus.CANCELLED
    assert globally.reason_code == "halted"


async def test_a_denied_request_leaves_its_client_id_free_for_the_same_request_again(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    # A denial makes no order, so a producer sending the request again (after the halt is
    # lifted) is placed, not answered "duplicate", and the exchange sees the id once.
    async with running(make_settings()):
        await redis_client.hset(K.trading, "default", "halted")
        denied = await place(client, "BTCUSDT", "buy", "market", "0.01", client_order_id="r1")
        assert await redis_client.exists(K.order("r1")) == 0
        await redis_client.hset(K.trading, "default", "active")
        again = await place(client, "BTCUSDT", "buy", "market", "0.01", client_order_id="r1")
        received = await redis_client.xrange(K.paper("default", "received"))
    assert (denied.status, denied.reason_code) == (ResultStatus.DENIED, "halted")
    assert (again.status, again.reason_code) == (ResultStatus.FILLED, None)
    assert again.request_id != denied.request_id and again.broker_order_id is not None
    assert [f[b"client_order_id"] for _, f in received] == [b"r1"]


@pytest.mark.parametrize("scope", ["default", "global"])
async def test_an_order_decided_before_a_halt_is_not_reserved_after_it(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
    scope: str,
) -> None:
    """The kill switch lands between a batch's snapshot (trading active) and its commit: the
    compare-and-set sees the trading state moved, the batch decides again, and the order is
    denied ``halted``, with nothing at the exchange; the kill's cancel_all, published after
    the halt, has nothing left to miss."""
    async with running(make_settings(batch_size=1, concurrency=1)) as worker:
        state = worker.risk.state
        snapshot = state.snapshot
        halted = [False]

        async def halting(account: str, day: str, cids: Any = (), **kw: Any) -> Snapshot:
            snap: Snapshot = await snapshot(account, day, cids, **kw)
            if not halted[0]:
                halted[0] = True
                await redis_client.hset(K.trading, scope, "halted")
            return snap
        state.snapshot = halting  # type: ignore[method-assign]
        denied = await place(client, "BTCUSDT", "buy", "market", "0.01")
    assert halted[0]
    assert (denied.status, denied.reason_code) == (ResultStatus.DENIED, "halted")
    assert denied.client_order_id is not None
    assert not await redis_client.exists(K.order(denied.client_order_id))
    assert not await redis_client.hlen("orders:paper:default:orders")
    assert await reservations(redis_client) == {}


async def test_the_commit_compares_the_trading_states_as_read(
        redis_client: aioredis.Redis) -> None:
    """Any change of the account's or the global trading state between the snapshot and the
    commit fails the compare-and-set (nothing written); the same value written again, or
    another account's, does not."""
    state = RiskState(redis_client, K)
    put = Reservation(request_id="1-0", symbol="BTCUSDT", side=Side.BUY,
                      quantity=WireDecimal("0.01"), price=WireDecimal("50000"), at=1)
    for scope, value in (("default", "reducing"), ("global", "halted"),
                         ("default", "active"), ("global", "active")):
        snap = await state.snapshot("default", "x")
        await redis_client.hset(K.trading, scope, value)
        assert not await state.commit("default", "x", snap, Write(put=[("a", put, True)]))
        assert await reservations(redis_client) == {}
    snap = await state.snapshot("default", "x")
    await redis_client.hset(K.trading, mapping={"default": "active", "other": "halted"})
    assert await state.commit("default", "x", snap, Write(put=[("a", put, True)]))
    assert set(await reservations(redis_client)) == {"a"}


async def test_reducing_lets_only_position_reducing_orders_through(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()):
        assert (await place(client, "BTCUSDT", "buy", "market", "0.02")).status is \
            ResultStatus.FILLED
        await until(lambda: _no_reservations(redis_client))  # projected into the position
        await redis_client.hset(K.trading, "default", "reducing")
        more = await place(client, "BTCUSDT", "buy", "market", "0.01")
        flip = await place(client, "BTCUSDT", "sell", "market", "0.03")
        other = await place(client, "ETHUSDT", "sell", "market", "0.1")
        reduce = await place(client, "BTCUSDT", "sell", "market", "0.015")
    assert more.reason_code == "halted" and more.reason is not None
    assert "account default is reducing" in more.reason and "position 0.02" in more.reason
    assert flip.reason_code == "halted" and other.reason_code == "halted"
    assert reduce.status is ResultStatus.FILLED


async def test_a_missing_reference_price_denies(
    make_settings: Callable[..., Settings], client: OrderClient,
) -> None:
    async with running(with_risk(make_settings(), price_band_pct=D("5"))) as worker:
        async def unknown(symbol: str) -> None:
            return None

        worker.brokers["default"].reference_price = unknown  # type: ignore[method-assign]
        market = await place(client, "BTCUSDT", "buy", "market", "0.01")
        limit = await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
    assert market.reason_code == "risk_denied:reference_price"
    assert market.reason is not None and "no reference price for BTCUSDT" in market.reason
    assert limit.reason_code == "risk_denied:price_band"
    assert limit.reason is not None and "price_band cannot be evaluated" in limit.reason


async def test_a_reference_price_that_fails_denies_that_order_alone(
    make_settings: Callable[..., Settings], client: OrderClient,
) -> None:
    """The broker's price lookup raising (its API down) is that order's missing price: a
    denial naming it; an order for another symbol, placed right after, goes on."""
    async with running(with_risk(make_settings())) as worker:
        broker = worker.brokers["default"]
        real = broker.reference_price

        async def failing(symbol: str) -> Any:
            if symbol == "BTCUSDT":
                raise RetryableError("ticker: 503 Service Unavailable")
            return await real(symbol)

        broker.reference_price = failing  # type: ignore[method-assign]
        alone = await place(client, "BTCUSDT", "buy", "market", "0.01")
        ids = [(await client.place(symbol, "buy", "market", "0.01")).request_id
               for symbol in ("BTCUSDT", "ETHUSDT")]
        both = [await client.wait_result(rid, 10) for rid in ids]
    assert alone.reason_code == "risk_denied:reference_price"
    assert alone.reason is not None and "BTCUSDT" in alone.reason
    assert both[0].reason_code == "risk_denied:reference_price"
    assert both[1].status is ResultStatus.FILLED


async def test_a_redis_error_or_unreadable_state_denies(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings()) as worker:
        real = worker.risk.state.snapshot

        async def failing(account: str, day: str, cids: Any = (), **kw: Any) -> Snapshot:
            raise RedisConnectionError("connection reset by peer")

        worker.risk.state.snapshot = failing  # type: ignore[method-assign]
        broken = await place(client, "BTCUSDT", "buy", "market", "0.01")
        worker.risk.state.snapshot = real  # type: ignore[method-assign]
        await redis_client.hset(K.risk_limits, "default", b"{not json")
        unreadable = await place(client, "BTCUSDT", "buy", "market", "0.01")
    for result in (broken, unreadable):
        assert (result.status, result.reason_code) == (ResultStatus.DENIED,
                                                       "risk_denied:unavailable")
    assert broken.reason is not None and "connection reset by peer" in broken.reason
    assert unreadable.reason is not None and "unreadable" in unreadable.reason


async def test_the_projector_shrinks_reservations_by_fills_and_drops_them_at_the_end(
    redis_client: aioredis.Redis,
) -> None:
    """Deterministic, on hand-written events: the fill moves its quantity from the
    reservation to the position in one script; the order's end drops what is left."""
    r = redis_client
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal("6"), price=WireDecimal("50000"))
    state = RiskState(r, K)
    await put(state, *(Reservation(request_id=f"1-{cid}", symbol="BTCUSDT", side=Side.BUY,
                                   quantity=WireDecimal("6"), price=WireDecimal("50000"))
                       for cid in ("a", "b")), cids=("a", "b"))

    def event(cid: str, seq: int, state: OrderState, **kw: Any) -> dict[str, bytes]:
        return {"client_order_id": cid.encode(), "data": encode(Event(
            client_order_id=cid, seq=seq, state=state, at=1_700_006_400_000,
            account="default", symbol="BTCUSDT", **kw))}

    def fill(n: int, qty: str) -> Fill:
        return Fill(fill_id=f"f{n}", price=WireDecimal("50000"), quantity=WireDecimal(qty),
                    commission=WireDecimal("2"), commission_asset="USDT", at=0)

    await r.xadd(K.events, event("a", 1, OrderState.CREATED, order=spec))
    await r.xadd(K.events, event("a", 4, OrderState.PARTIALLY_FILLED, fill=fill(1, "5")))
    projector = Projector(r, K, "p", quote_asset=lambda a, s: "USDT")
    assert await projector.once() == 2
    held = await reservations(r)
    assert held["a"].quantity == D("1") and held["b"].quantity == D("6")
    assert await r.hget(K.risk("default", "day:20231115"), "pnl") == b"-2"
    assert await r.get(version_key(K, "default")) == b"2"
    snap = await state.snapshot("default", "20231115")
    btc = open_by_symbol(snap.sums)["BTCUSDT"]
    assert (btc.buy_quantity, btc.buy_notional, btc.orders, snap.open_orders) == (
        D("7"), D("350000"), 2, 2)
    await r.xadd(K.events, event("a", 5, OrderState.FILLED, fill=fill(2, "1")))
    await r.xadd(K.events, event("b", 3, OrderState.CANCELLED))
    assert await projector.once() == 2
    assert await reservations(r) == {}
    assert await r.hget(K.risk("default", "day:20231115"), "pnl") == b"-4"
    assert await r.get(version_key(K, "default")) == b"3"
    snap = await state.snapshot("default", "20231115")
    btc = open_by_symbol(snap.sums)["BTCUSDT"]
    assert (btc.buy_quantity, btc.buy_notional, btc.orders, snap.open_orders) == (0, 0, 0, 0)
    position = decode_position(await r.hget(K.positions, "default:BTCUSDT"))
    assert position.quantity == D("6")


async def test_a_projector_page_between_snapshot_and_commit_commutes_with_the_commit(
    redis_client: aioredis.Redis,
) -> None:
    """The checks compare their own version, which the projector does not bump: a fill
    folded between a batch's snapshot and its commit does not make the batch decide again,
    and both land. A reservation the batch drops and the projector moved meanwhile fails
    the commit (nothing written); so do another batch's commit and a limit change."""
    r = redis_client
    state = RiskState(r, K)
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal("6"), price=WireDecimal("50000"))
    await put(state, Reservation(request_id="1-a", symbol="BTCUSDT", side=Side.BUY,
                                 quantity=WireDecimal("6"), price=WireDecimal("50000")),
              cids=("a",))
    snap = await state.snapshot("default", "x", ["a"])
    await r.xadd(K.events, {"data": encode(Event(
        client_order_id="a", seq=1, state=OrderState.CREATED, at=1, account="default",
        symbol="BTCUSDT", order=spec))})
    await r.xadd(K.events, {"data": encode(Event(
        client_order_id="a", seq=2, state=OrderState.PARTIALLY_FILLED, at=2,
        account="default", symbol="BTCUSDT", fill=Fill(
            fill_id="f1", price=WireDecimal("50000"), quantity=WireDecimal("5"),
            commission=WireDecimal("0"), commission_asset="USDT", at=2)))})
    assert await Projector(r, K, "p", quote_asset=lambda a, s: "USDT").once() == 2
    assert await r.get(version_key(K, "default")) == b"2"  # moved: positions changed
    # The projector shrank a: dropping it as read would release 5 twice.
    assert not await state.commit("default", "x", snap,
                                  Write(drop=[("a", snap.reservations["a"])]))
    assert (await reservations(r))["a"].quantity == D("1")
    new = Reservation(request_id="1-c", symbol="BTCUSDT", side=Side.BUY,
                      quantity=WireDecimal("2"), price=WireDecimal("50000"))
    assert await state.commit("default", "x", snap, Write(put=[("c", new, True)]))
    after = await state.snapshot("default", "x")
    btc = open_by_symbol(after.sums)["BTCUSDT"]
    assert (btc.buy_quantity, btc.buy_notional, btc.orders, after.open_orders) == (
        D("3"), D("150000"), 2, 2)
    # Another batch's commit, or a limit change, does make a stale snapshot decide again.
    assert not await state.commit("default", "x", snap, Write(put=[("d", new, True)]))
    await set_limits(r, K, "default", {"max_quantity": "1"}, by="test")
    assert not await state.commit("default", "x", after, Write(put=[("d", new, True)]))
    assert set(await reservations(r)) == {"a", "c"}


async def test_an_orphaned_reservation_is_released_and_a_live_one_kept(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """A request dead-lettered after it reserved but before persist leaves a reservation
    without an order; once old enough, a batch of the account releases it."""
    r = redis_client
    settings = replace(make_settings(), risk=RiskSettings(orphan_after_ms=1_000))
    async with running(settings):
        resting = await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
        live = resting.client_order_id
        assert live is not None
        old = (await reservations(r))[live]
        old.at = 1  # as if made long ago: it has an order, so it stays
        await r.hset(open_key(K, "default"), live, encode(old))
        await put(RiskState(r, K), Reservation(
            request_id="1-0", symbol="BTCUSDT", side=Side.BUY, quantity=WireDecimal("1"),
            price=WireDecimal("1"), at=1), cids=("ghost",))
        await asyncio.sleep(0.2)  # past the sweep's pace (orphan_after_ms / 10)
        await place(client, "BTCUSDT", "buy", "limit", "0.01", price="45000")
        await until(lambda: _gone(r, "ghost"))
        assert live in await reservations(r)
        snap = await RiskState(r, K).snapshot("default", "x")
    btc = open_by_symbol(snap.sums)["BTCUSDT"]
    assert (btc.buy_quantity, btc.orders) == (D("0.02"), 2)  # the ghost's 1 is gone


async def put(state: RiskState, *reservations: Reservation, cids: tuple[str, ...]) -> None:
    """Reservations made as the checks make them (totals and counts with them)."""
    snap = await state.snapshot("default", "x")
    assert await state.commit("default", "x", snap, Write(put=[
        (cid, r, False) for cid, r in zip(cids, reservations, strict=True)]))


async def _gone(r: aioredis.Redis, cid: str) -> bool:
    return not await r.hexists(open_key(K, "default"), cid)


async def test_an_order_in_another_quote_asset_is_denied_while_account_wide_limits_apply(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """BTCUSDT is quoted in USDT, EUR_USD in USD: with max_total_exposure set, the account
    cannot hold both, as their amounts would be added as one; once the USDT order is gone,
    the USD one passes."""
    async with running(with_risk(make_settings(), max_total_exposure=D("1000000"))) as worker:
        resting = await place(client, "BTCUSDT", "buy", "limit", "0.01", **RESTING)
        assert resting.status is ResultStatus.ACCEPTED
        fx = await place(client, "EUR_USD", "buy", "market", "1000")
        assert (fx.status, fx.reason_code) == (ResultStatus.DENIED, "risk_denied:quote_asset")
        assert fx.reason and "EUR_USD is quoted in USD" in fx.reason
        assert "BTCUSDT in USDT" in fx.reason
        assert await worker.brokers["default"].received_count() == 1  # type: ignore[attr-defined]
        assert resting.client_order_id is not None
        cancel = await client.cancel(resting.client_order_id)
        await client.wait_result(cancel.request_id, 10)
        await until(lambda: _no_reservations(redis_client))
        again = await place(client, "EUR_USD", "buy", "market", "1000")
        assert again.status is ResultStatus.FILLED, again.reason


async def test_a_state_that_keeps_changing_is_retried_with_growing_pauses_then_denies(
    make_settings: Callable[..., Settings], client: OrderClient,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Every compare-and-set loses (another worker keeps moving the state): the batch is
    decided again ``attempts`` times, with a pause after each loss, then denied, never
    passed unchecked, and the worker says so in its log. The pauses' bound doubles (2 ms,
    4 ms, ...) up to 100 ms."""
    from executor.pipeline.steps import risk as risk_step

    paused: list[int] = []
    monkeypatch.setattr(risk_step, "pause_s", lambda attempt: paused.append(attempt) or 0.0)
    async with running(make_settings()) as worker:
        async def lost(*args: Any, **kwargs: Any) -> bool:
            return False

        async def lost_together(*args: Any, **kwargs: Any) -> None:
            return None  # the reservations' compare-and-set lost: no order created

        worker.risk.state.commit = lost  # type: ignore[method-assign]
        worker.svc.store.reserve_and_begin = lost_together  # type: ignore[method-assign]
        worker.svc.store.reserve_begin_and_open = lost_together  # type: ignore[method-assign]
        result = await place(client, "BTCUSDT", "buy", "market", "0.01")
    assert (result.status, result.reason_code) == (ResultStatus.DENIED,
                                                   "risk_denied:unavailable")
    assert result.reason is not None and "kept changing" in result.reason
    assert paused == list(range(8))
    said = [r for r in caplog.records if r.levelno == logging.WARNING
            and "risk_denied:unavailable" in r.getMessage()]
    assert [r.getMessage() for r in said] == [
        "denied 1 orders of default (risk_denied:unavailable): its risk state kept changing "
        "under other workers for 8 compare-and-set attempts"]
    monkeypatch.undo()
    for attempt, bound in ((0, 0.002), (1, 0.004), (5, 0.064), (6, 0.1), (20, 0.1)):
        assert all(0 <= risk_step.pause_s(attempt) <= bound for _ in range(200))
    assert max(risk_step.pause_s(5) for _ in range(200)) > 0.032  # really grows


async def test_run_time_limits_apply_to_the_next_batch_and_every_one_after(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """The merged limits are kept per account and symbol while the run-time limits they
    were merged with are the same (pipeline/steps/risk.py ``_limits``): a change of them
    is met by the next batch and by the speculative ones after it, and undone likewise."""
    async with running(make_settings(batch_size=1, concurrency=1)) as worker:
        for _ in range(3):  # the later ones written speculatively, on the first's state
            assert (await place(client, "BTCUSDT", "buy", "market", "0.01")).status is \
                ResultStatus.FILLED
        await set_limits(redis_client, K, "default", {"max_quantity": "0.005"}, by="test")
        for _ in range(3):
            denied = await place(client, "BTCUSDT", "buy", "market", "0.01")
            assert denied.reason_code == "risk_denied:quantity", denied
        assert (await place(client, "BTCUSDT", "buy", "market", "0.004")).status is \
            ResultStatus.FILLED
        await set_limits(redis_client, K, "default", {"max_quantity": "none"}, by="test")
        for _ in range(3):
            assert (await place(client, "BTCUSDT", "buy", "market", "0.01")).status is \
                ResultStatus.FILLED
        speculated = worker.metrics.speculative_writes.labels("default", "applied")
        assert speculated._value.get() > 0


async def test_a_held_turn_lets_only_its_holder_and_releases_write_the_account(
    redis_client: aioredis.Redis,
) -> None:
    """The account's turn (risk_reserve.lua): while a token holds it, a commit under no
    token or another's is refused as a lost compare-and-set, nothing written; a release
    of reservations (ANY_TURN) applies whoever holds it; the holder's own commit applies
    and gives the turn back. A speculative write's guard refuses while anyone holds it."""
    state = RiskState(redis_client, K)
    turn = state.turn("default", "w1:1")
    assert await turn.hold(10_000)

    async def commit(token: str) -> bool:
        snap = await state.snapshot("default", "20261206")
        return await state.commit("default", "20261206", snap, Write(), token)

    version = await redis_client.get(checks_version_key(K, "default"))
    assert not await commit("")
    assert not await commit("w2:1")
    assert await redis_client.get(checks_version_key(K, "default")) == version
    snap = await state.snapshot("default", "20261206")
    guard = state.guard_call("default", snap, ["fresh-id"])
    unchanged = redis_client.register_script(
        (resources.files("executor.infra") / "lua" / "unchanged.lua").read_text())
    assert await unchanged(keys=guard.keys, args=guard.args) == 0
    assert await commit(ANY_TURN)
    assert await redis_client.get(turn_key(K, "default")) == b"w1:1"
    assert await commit("w1:1")
    assert await redis_client.get(turn_key(K, "default")) is None
    snap = await state.snapshot("default", "20261206")
    guard = state.guard_call("default", snap, ["fresh-id"])
    assert await unchanged(keys=guard.keys, args=guard.args) == 1
    assert await commit("")


async def test_a_batch_that_lost_to_another_worker_takes_the_account_s_turn_and_wins(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """Another worker writes the account between every read of this one and its write
    (as two busy workers on one account do): the batch loses twice, takes the account's
    turn, and the other's next write, which respects it, waits, so the batch's write
    applies: the order is filled, not denied after eight losses, and the turn is given
    back."""
    others: list[bool] = []  # each of the other worker's writes: applied or not

    async def other_writes() -> None:
        # What another worker's risk_reserve.lua does to the account, turn and all.
        applied = not await redis_client.exists(turn_key(K, "default"))
        if applied:
            await redis_client.incr(checks_version_key(K, "default"))
            await redis_client.incr(version_key(K, "default"))
        others.append(applied)

    async with running(make_settings()) as worker:
        state = worker.risk.state
        snapshot = state.snapshot

        async def read_then_other(*args: Any, **kwargs: Any) -> Any:
            snap = await snapshot(*args, **kwargs)
            await other_writes()
            return snap

        state.snapshot = read_then_other  # type: ignore[method-assign]
        result = await place(client, "BTCUSDT", "buy", "market", "0.01")
    assert result.status is ResultStatus.FILLED, result.reason
    assert others == [True, True, False]
    assert await redis_client.get(turn_key(K, "default")) is None
