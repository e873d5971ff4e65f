"""Stop-loss / take-profit on positions through real workers on the paper exchange: the
exit follows the position as it grows, fires once at its level, closes exactly what is
held with a reduce_only order that goes the way of every request, and is over when the
position is flat; a closing order refused (trading halted) arms it again, later; the
commands refuse what cannot be protected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.config import Settings, load_settings
from executor.infra import audit
from executor.model.exits import Exit
from executor.model.positions import decode_position, position_key
from executor.operations.exit_commands import exit_of, set_exit
from producer.client import OrderClient
from producer.contract import OrderState, Result, ResultStatus, decode_result, decoder
from producer.keys import Keys

from .conftest import events_in, running, settings_for, until

K = Keys()
D = Decimal


def fast(redis_url: str) -> Settings:
    return settings_for(redis_url, emulator_interval_ms=100, emulator_lease_ms=1000)


async def set_price(r: aioredis.Redis, price: str) -> None:
    await r.hset(K.paper("default", "prices"), "BTCUSDT", price)
    await asyncio.sleep(0.3)  # the exchange reads it every match pass (200 ms)


async def position(r: aioredis.Redis) -> Decimal:
    raw = await r.hget(K.positions, position_key("default", "BTCUSDT"))
    return D(0) if raw is None else decode_position(raw).quantity


async def held(r: aioredis.Redis, quantity: str) -> None:
    async def there() -> bool:
        return await position(r) == D(quantity)
    await until(there, 10)


async def buy(client: OrderClient, quantity: str) -> None:
    sub = await client.place("BTCUSDT", "buy", "market", quantity)
    assert (await client.wait_result(sub)).status is ResultStatus.FILLED


@contextlib.asynccontextmanager
async def long_half(redis_url: str, r: aioredis.Redis,
                    client: OrderClient) -> AsyncIterator[Settings]:
    """A worker serving the paper account, the price at 50000 and a long of 0.5 held."""
    await set_price(r, "50000")
    settings = fast(redis_url)
    async with running(settings):
        await buy(client, "0.5")
        await held(r, "0.5")
        yield settings


def levels(**kw: str) -> Exit:
    return exit_of(kw.get("stop_loss"), kw.get("take_profit"), kw.get("trailing"), "price",
                   kw.get("close", "market"), now=1_000, by="test")


async def closing_orders(r: aioredis.Redis) -> list[str]:
    events = await events_in(r)
    return [e.client_order_id for e in events
            if e.order is not None and e.order.strategy_id == "sl-tp"]


async def test_a_stop_loss_follows_the_position_and_closes_it_once(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    async with long_half(redis_url, r, client) as settings:
        await set_exit(r, K, settings, "default", "BTCUSDT",
                       levels(stop_loss="49800", take_profit="50500"))
        await buy(client, "0.3")  # the position grows: the exit covers it all
        await held(r, "0.8")
        shown = await asyncio.to_thread(operator, redis_url, "positions")
        assert "default BTCUSDT: stop-loss 49800, take-profit 50500, close market" in shown
        await set_price(r, "49800.01")
        await asyncio.sleep(0.5)
        assert await closing_orders(r) == []  # above the stop: nothing
        await set_price(r, "49800")
        await held(r, "0")

        async def over() -> bool:
            return not await r.hexists(K.exits("default"), "BTCUSDT")
        await until(over, 10)
        await asyncio.sleep(0.5)  # passes after the close fire nothing more
        [cid] = await closing_orders(r)
        status = await client.order(cid)
    assert status is not None and status.state is OrderState.FILLED
    assert status.spec.reduce_only and status.spec.side == "sell"
    assert status.spec.quantity == D("0.8") and status.spec.metadata == {
        "exit": "stop_loss", "trigger": "49800"}
    assert [e.kind for e in await audit.read(r, K)] == ["sl_tp_set"]


async def test_a_refused_closing_order_arms_the_exit_again_later(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Trading halted when the take-profit fires: the closing order is denied, the exit
    waits RETRY_MS and fires again (a new client id) once trading resumed."""
    r = redis_client
    async with long_half(redis_url, r, client) as settings:
        await set_exit(r, K, settings, "default", "BTCUSDT", levels(take_profit="50500"))
        await r.hset(K.trading, "default", "halted")
        await set_price(r, "50600")

        async def refused() -> list[Result]:
            return [x for x in await results(r, K.failed) if x.strategy_id == "sl-tp"]
        await until(lambda: _any(refused), 10)
        await r.hdel(K.trading, "default")
        await held(r, "0")
        [first] = await refused()
        [second] = [x for x in await results(r, K.completed) if x.strategy_id == "sl-tp"]
    assert first.reason_code == "halted" and first.client_order_id != second.client_order_id
    assert second.status is ResultStatus.FILLED and second.quantity == D("0.5")
    # RETRY_MS later, not at every pass.
    assert second.received_at - first.completed_at >= 4_500, (first, second)


async def test_a_closing_order_below_the_brokers_minimum_is_not_sent_until_it_can_be(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """A long of 0.1 under a symbol whose minimum is 0.15: its stop-loss, reached, would
    close 0.1, which the exchange refuses, so nothing is sent (no failed result every
    5 s); an error names the rule and the blocked gauge shows it. Grown to 0.25, the
    position is closed by the exit, whole."""
    r = redis_client
    await set_price(r, "50000")
    config = tmp_path / "orderstream.toml"
    config.write_text(
        '[accounts.default]\nbroker = "paper"\n'
        '[accounts.default.symbols.BTCUSDT]\nprice = "50000"\ntick_size = "0.01"\n'
        'step_size = "0.00001"\nmin_quantity = "0.15"\nmax_quantity = "1000"\n'
        'depth_quantity = "5"\nbase_asset = "BTC"\nquote_asset = "USDT"\n')
    settings = load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
        "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": "100", "ORDERSTREAM_EMULATOR_LEASE_MS": "1000"})
    blocked = {"account": "default", "kind": "position"}
    async with running(settings) as worker:
        await buy(client, "0.3")
        sell = await client.place("BTCUSDT", "sell", "market", "0.2")
        assert (await client.wait_result(sell)).status is ResultStatus.FILLED
        await held(r, "0.1")
        await set_exit(r, K, settings, "default", "BTCUSDT", levels(stop_loss="49800"))
        await asyncio.sleep(0.3)  # seen above its level first
        await set_price(r, "49700")

        async def shown() -> bool:
            return worker.metrics.registry.get_sample_value(
                "orderstream_exits_blocked", blocked) == 1
        await until(shown, 10)
        await asyncio.sleep(0.5)
        assert await closing_orders(r) == []
        assert not [x for x in await results(r, K.failed) if x.strategy_id == "sl-tp"]
        await buy(client, "0.15")
        await held(r, "0")
        [cid] = await closing_orders(r)
        status = await client.order(cid)
        assert status is not None and status.spec.quantity == D("0.25")
        await until(lambda: _gauge_is(worker, blocked, 0), 10)
    errors = [x.getMessage() for x in caplog.records if x.levelname == "ERROR"]
    assert any("sl-tp of default BTCUSDT is due (stop_loss at 49700)" in m
               and "quantity" in m and "0.15" in m for m in errors), errors


async def _gauge_is(worker: Any, labels: dict[str, str], value: float) -> bool:
    return bool(worker.metrics.registry.get_sample_value(
        "orderstream_exits_blocked", labels) == value)


async def results(r: aioredis.Redis, stream: str) -> list[Result]:
    return [decode_result(f[b"data"]) for _, f in await r.xrange(stream)]


async def _any(get: Any) -> bool:
    return bool(await get())


async def test_a_level_already_reached_is_removed_unfired(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    async with long_half(redis_url, r, client) as settings:
        await set_exit(r, K, settings, "default", "BTCUSDT", levels(stop_loss="50100"))

        async def removed() -> bool:
            return not await r.hexists(K.exits("default"), "BTCUSDT")
        await until(removed, 10)
    assert await closing_orders(r) == [] and await position(r) == D("0.5")


def operator(redis_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_")}
    env["REDIS_URL"] = redis_url
    run = subprocess.run([sys.executable, "-m", "executor", *args], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return run.stdout


def test_the_command_refuses_a_position_that_is_not_there(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_")}
    env["REDIS_URL"] = redis_url
    run = subprocess.run(
        [sys.executable, "-m", "executor", "sl-tp", "set", "--account", "default",
         "--symbol", "BTCUSDT", "--stop-loss", "49000"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2, run
    assert "there is no position in BTCUSDT on default to protect" in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "executor", "sl-tp", "set", "--account", "default",
         "--symbol", "BTCUSDT", "--stop-loss", "-1"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "stop_loss must be a positive decimal" in bad.stderr
    shown = subprocess.run([sys.executable, "-m", "executor", "sl-tp", "show"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0 and "no stop-loss / take-profit set" in shown.stdout


async def test_the_sl_tp_action_sets_and_clears_from_any_producer(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    async with long_half(redis_url, r, client):
        none = await client.wait_result(await client.sl_tp("ETHUSDT", stop_loss="2900"))
        assert none.reason_code == "not_found" and none.reason is not None
        assert "no position in ETHUSDT on default" in none.reason
        unknown = await client.wait_result(await client.sl_tp("BTCUSDT", account="nope",
                                                              stop_loss="1"))
        assert unknown.reason_code == "invalid" and unknown.reason is not None
        assert "nope" in unknown.reason
        set_ = await client.wait_result(await client.sl_tp(
            "BTCUSDT", take_profit="50500", trailing_offset="300"))
        assert set_.status is ResultStatus.ACCEPTED and set_.symbol == "BTCUSDT", set_
        stored = await r.hget(K.exits("default"), "BTCUSDT")
        assert stored is not None and b'"take_profit":"50500"' in stored
        cleared = await client.wait_result(await client.sl_tp("BTCUSDT"))
        assert cleared.status is ResultStatus.CANCELLED
        assert cleared.reason == "stop-loss / take-profit removed"
        assert not await r.hexists(K.exits("default"), "BTCUSDT")
        again = await client.wait_result(await client.sl_tp("BTCUSDT", take_profit="50500"))
        assert again.status is ResultStatus.ACCEPTED
        await set_price(r, "50500")
        await held(r, "0")
    kinds = [e.kind for e in await audit.read(r, K)]
    assert kinds == ["sl_tp_set", "sl_tp_clear", "sl_tp_set"]
    assert all(e.by.startswith("request:") for e in await audit.read(r, K))


async def test_a_position_that_opens_gets_its_automatic_exit_and_loses_it_when_closed(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        tmp_path: Path) -> None:
    """[exits.default] stop-loss 1%, take-profit 2%: a long opened at 50000 gets 49500 /
    51000, which close it; a flat position's marker goes, so the next one gets its own; an
    exit an operator set is never replaced."""
    r = redis_client
    config = tmp_path / "orderstream.toml"
    config.write_text('[accounts.default]\nbroker = "paper"\n'
                      '[exits.default]\nstop_loss_percent = "1"\ntake_profit_percent = "2"\n')
    settings = load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1", "ORDERSTREAM_METRICS_PORT": "0",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": "100", "ORDERSTREAM_EMULATOR_LEASE_MS": "1000"})
    await set_price(r, "50000")

    async def exit_of_position() -> Exit | None:
        raw = await r.hget(K.exits("default"), "BTCUSDT")
        return None if raw is None else decoder(Exit).decode(raw)

    async with running(settings):
        await buy(client, "0.5")
        await held(r, "0.5")
        await until(lambda: _is_set(exit_of_position), 10)
        made = await exit_of_position()
        assert made is not None and made.set_by == "auto"
        assert (made.stop_loss, made.take_profit) == (D("49500.00"), D("51000.00"))
        await set_price(r, "49500")
        await held(r, "0")

        async def forgotten() -> bool:
            return not await r.hexists(K.exits_auto("default"), "BTCUSDT")
        await until(forgotten, 10)
        await set_price(r, "40000")
        await buy(client, "0.2")  # a new long, at 40000: its own exit
        await held(r, "0.2")

        async def renewed() -> bool:
            e = await exit_of_position()
            return e is not None and e.stop_loss == D("39600.00")
        await until(renewed, 10)
        operator_exit = levels(stop_loss="30000")
        await set_exit(r, K, settings, "default", "BTCUSDT", operator_exit)
        await asyncio.sleep(1.5)  # auto passes: the operator's stays
        kept = await exit_of_position()
    assert kept is not None and kept.stop_loss == D("30000") and kept.set_by == "test"
    [closed] = await closing_orders(r)
    assert (await client.order(closed)).spec.metadata == {  # type: ignore[union-attr]
        "exit": "stop_loss", "trigger": "49500"}


async def _is_set(get: Any) -> bool:
    return await get() is not None


async def test_a_position_closed_by_hand_takes_its_exit_with_it(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    async with long_half(redis_url, r, client) as settings:
        await set_exit(r, K, settings, "default", "BTCUSDT", levels(stop_loss="49000"))
        sell = await client.place("BTCUSDT", "sell", "market", "0.5")
        assert (await client.wait_result(sell)).status is ResultStatus.FILLED
        await held(r, "0")

        async def over() -> bool:
            return not await r.hexists(K.exits("default"), "BTCUSDT")
        await until(over, 10)
        await buy(client, "0.5")  # a new position: the old exit does not apply to it
        await held(r, "0.5")
        await set_price(r, "48000")
        await asyncio.sleep(0.5)
    assert await closing_orders(r) == [] and await position(r) == D("0.5")


async def test_an_unreadable_exit_holds_up_no_other(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await r.hset(K.exits("default"), "ETHUSDT", "{garbled")
    async with long_half(redis_url, r, client) as settings:
        await set_exit(r, K, settings, "default", "BTCUSDT", levels(take_profit="50100"))
        await set_price(r, "50100")
        await held(r, "0")
    assert await r.hget(K.exits("default"), "ETHUSDT") == b"{garbled"  # left for a person
