"""The kill switch and trading-state commands on a real redis-server with real workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from executor.config import Settings, load_settings
from executor.infra import audit
from executor.infra.store import decode_order
from executor.model.positions import decode_position
from executor.operations.control import kill
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from producer.keys import Keys

from .conftest import died_after_pending_cancel, running
from .test_operator_commands import cli, cli_json

K = Keys()


async def positions_now(r: aioredis.Redis) -> dict[str, D]:
    raw: Any = await r.hgetall(K.positions)
    return {k.decode(): decode_position(v).quantity for k, v in raw.items()}


async def test_kill_halts_and_cancels_every_open_order(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    async with running(make_settings("w1")):
        resting = [await client.place("BTCUSDT", "buy", "limit", "0.001", price=p)
                   for p in ("40000", "41000")]
        for sub in resting:
            assert (await client.wait_result(sub.request_id, 10)).status is \
                ResultStatus.ACCEPTED
        report = await kill(redis_client, K, client, account=None, flatten=False, wait_s=10)
        assert report.ok and report.state == "halted" and report.scope == "global"
        assert sorted(report.cancelled) == sorted(s.client_order_id or "" for s in resting)
        for sub in resting:
            raw = await redis_client.hget(K.order(sub.client_order_id or ""), "record")
            assert raw is not None and decode_order(raw).state is OrderState.CANCELLED
    assert await redis_client.hget(K.trading, "global") == b"halted"
    [entry] = await audit.read(redis_client, K)
    assert (entry.kind, entry.scope, entry.details["state"]) == ("trading_state", "global",
                                                                 "halted")


async def test_kill_cancels_an_order_a_dead_worker_left_pending_cancel(
        make_settings: Callable[..., Settings], redis_url: str, client: OrderClient,
        redis_client: aioredis.Redis, tmp_path: Path) -> None:
    async with running(make_settings("w1")):
        resting = [await client.place("BTCUSDT", "buy", "limit", "0.001", price=p)
                   for p in ("40000", "41000")]
        answers = await client.wait_results([s.request_id for s in resting], 10)
    cids = sorted(answers[s.request_id].client_order_id or "" for s in resting)
    # A cancel of the first whose worker died before it asked the exchange; the cancel
    # stays pending (and is not redelivered within this test).
    await client.cancel(cids[0])
    await died_after_pending_cancel(redis_url, tmp_path / "doomed.log")
    assert await redis_client.hget(K.order(cids[0]), "state") == b"pending_cancel"
    async with running(make_settings("w1", visibility_timeout_ms=60_000)):
        report = await kill(redis_client, K, client, account=None, flatten=False, wait_s=10)
    assert report.ok and sorted(report.cancelled) == cids, report
    for cid in cids:
        raw = await redis_client.hget(K.order(cid), "record")
        assert raw is not None and decode_order(raw).state is OrderState.CANCELLED


async def test_kill_flatten_closes_every_position_of_the_account_then_halts_it(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    async with running(make_settings("w1")):
        for symbol, side, qty in (("BTCUSDT", "buy", "0.012"), ("ETHUSDT", "sell", "0.5")):
            sub = await client.place(symbol, side, "market", qty)
            assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.FILLED
        report = await kill(redis_client, K, client, account="default", flatten=True,
                            wait_s=10)
        assert report.ok, report
        assert [(c.symbol, c.side, c.quantity) for c in report.closes] == [
            ("BTCUSDT", "sell", D("0.012")), ("ETHUSDT", "buy", D("0.5"))]
        assert all(r.status is ResultStatus.FILLED for r in report.close_results)
        for _ in range(50):  # the projector folds the closing fills
            if set((await positions_now(redis_client)).values()) == {D(0)}:
                break
            await asyncio.sleep(0.1)
        assert set((await positions_now(redis_client)).values()) == {D(0)}
    assert await redis_client.hget(K.trading, "default") == b"halted"
    kinds = [(e.details["state"], e.details["why"]) for e in await audit.read(redis_client, K)]
    assert kinds == [("reducing", "kill"), ("halted", "kill: flattened")]


async def test_commands_set_show_and_resume_trading_and_breakers(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    code, out = await cli(redis_url, "trading", "--account", "default", "reducing")
    assert code == 0 and "default" in out and "reducing" in out
    code, view = await cli_json(redis_url, "trading")
    assert view == {"states": {"default": "reducing"}, "effective": {"default": "reducing"}}
    code, out = await cli(redis_url, "resume", "--account", "default")
    assert code == 0 and await redis_client.hget(K.trading, "default") == b"active"
    await redis_client.hset(K.breaker("default"), mapping={"state": "open", "trips": 2})
    code, view = await cli_json(redis_url, "breaker")
    assert view["breakers"]["default"]["state"] == "open"
    code, info = await cli_json(redis_url, "info")
    assert info["trading"] == {"default": "active"}
    assert info["breakers"]["default"]["state"] == "open"
    code, out = await cli(redis_url, "info")
    assert "trading: default active" in out and "default  open" in out.replace("   ", "  ")
    code, view = await cli_json(redis_url, "breaker", "--account", "default", "--reset")
    assert code == 0 and view["breakers"]["default"]["state"] == "closed"
    assert [e.kind for e in await audit.read(redis_client, K)] == [
        "trading_state", "trading_state", "breaker_reset"]


async def test_a_kill_reaches_every_worker_at_once(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    # Two workers; the kill is issued while both serve. The next orders, whichever worker
    # takes them, are refused `halted` within a second; a resume lets orders through again.
    async with running(make_settings("w1")), running(make_settings("w2")):
        report = await kill(redis_client, K, client, account=None, flatten=False, wait_s=10)
        assert report.ok
        subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(12)]
        results = [await client.wait_result(s.request_id, 1.0) for s in subs]
        assert {r.reason_code for r in results} == {"halted"}
        assert {r.worker for r in results} == {"w1", "w2"}
        # Cancels still pass while halted.
        cancel = await client.cancel_all()
        assert (await client.wait_result(cancel.request_id, 1.0)).ok
        await redis_client.hset(K.trading, "global", "active")
        sub = await client.place("BTCUSDT", "buy", "market", "0.001")
        assert (await client.wait_result(sub.request_id, 1.0)).status is ResultStatus.FILLED


async def test_reducing_lets_the_flatten_orders_through_and_nothing_that_adds(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    async with running(make_settings("w1")):
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.FILLED
        await redis_client.hset(K.trading, "default", "reducing")
        for _ in range(50):  # the position must be folded for "reduces" to be known
            if (await positions_now(redis_client)).get("default:BTCUSDT") == D("0.010"):
                break
            await asyncio.sleep(0.1)
        adds = await client.place("BTCUSDT", "buy", "market", "0.001")
        assert (await client.wait_result(adds.request_id, 10)).reason_code == "halted"
        report = await kill(redis_client, K, client, account="default", flatten=True,
                            wait_s=10)
        assert report.ok and [r.status for r in report.close_results] == [
            ResultStatus.FILLED]


async def test_kill_signs_its_requests_where_workers_require_it(
        redis_url: str, tmp_path: Path, client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    secret = "kill-switch-secret-0123456789"
    (tmp_path / "ops").write_text(secret)
    config = tmp_path / "orderstream.toml"
    config.write_text(f'[auth.keys.ops]\nsecret_file = "{tmp_path / "ops"}"\n')
    settings = load_settings(config, {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
                                      "ORDERSTREAM_METRICS_PORT": "0"})
    async with running(settings):
        # Unsigned, the cancel_all is refused by the workers: the kill says it is not done.
        code, out = await cli(redis_url, "kill")
        assert code == 1 and "unauthenticated" in out and "NOT COMPLETE" in out
        code, out = await cli(redis_url, "kill", "--key-id", "ops", "--key-file",
                              str(tmp_path / "ops"))
        assert code == 0 and "cancelled 0 open orders" in out
    assert secret not in out
