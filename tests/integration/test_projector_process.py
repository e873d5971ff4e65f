"""``orderstream projector``: the positions fold in a process of its own (executor/
projection.py). With workers that do not project, it folds every fill once, releases the
risk reservations the fills settle, counts the fills, and knows each symbol's assets from
what the workers recorded in Redis, never from a broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from executor.config import Settings
from executor.infra.streams import positions_caught_up
from executor.model.positions import decode_position
from executor.projection import ProjectorProcess, StoredAssets
from producer.client import OrderClient
from producer.keys import Keys

from .conftest import running

K = Keys()


async def test_the_projector_process_folds_what_workers_that_do_not_project_fill(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    settings = make_settings(project_positions="false")
    process = ProjectorProcess(settings, serve_metrics=False)
    folding = asyncio.create_task(process.run())
    try:
        async with running(settings):
            subs = [await client.place("BTCUSDT", side, "market", qty)
                    for side, qty in (("buy", "0.030"), ("sell", "0.010"), ("buy", "0.005"))]
            results = await client.wait_results([s.request_id for s in subs], 10)
            assert await positions_caught_up(redis_client, K, 10, poll_s=0.05)
    finally:
        process.stop()
        await folding
    assert all(r.status.value == "filled" for r in results.values())
    position = decode_position(await redis_client.hget(K.positions, "default:BTCUSDT"))
    assert position.quantity == Decimal("0.025")
    # The fills settled their reservations: nothing reserved is left.
    assert await redis_client.hlen("orders:risk:default:open") == 0
    # Counted where they were folded, once each.
    fills = process.metrics.registry.get_sample_value(
        "orderstream_fills_total", {"account": "default", "side": "buy"})
    assert fills == 2
    # The lease was given up on the clean stop.
    assert not await redis_client.exists(K.positions_lease)


async def test_workers_record_each_symbol_s_assets_before_its_first_order_once(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before an account's first order of a symbol is written, the worker records the
    symbol's base and quote assets as its broker knows them; not again in that process."""
    async with running(make_settings(project_positions="false")) as worker:
        store = worker.svc.store
        noted: list[Any] = []
        hset = store.redis.hset

        async def counted(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == K.assets:
                noted.append(kwargs.get("mapping"))
            return await hset(name, *args, **kwargs)
        monkeypatch.setattr(store.redis, "hset", counted)
        for symbols in (("BTCUSDT",), ("BTCUSDT", "ETHUSDT", "BTCUSDT"), ("ETHUSDT",)):
            subs = [await client.place(symbol, "buy", "market", "0.01") for symbol in symbols]
            await client.wait_results([s.request_id for s in subs], 10)
    assert [list(m) for m in noted] == [["default:BTCUSDT"], ["default:ETHUSDT"]]
    assets = await redis_client.hgetall(K.assets)
    assert msgspec.json.decode(assets[b"default:BTCUSDT"]) == ["BTC", "USDT"]
    assert msgspec.json.decode(assets[b"default:ETHUSDT"]) == ["ETH", "USDT"]


async def test_assets_are_read_from_redis_and_again_only_for_a_pair_not_known(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from executor import projection

    await redis_client.hset(K.assets, "live:ETHBTC", msgspec.json.encode(["ETH", "BTC"]))
    assets = StoredAssets(redis_client, K, make_settings())
    reads = 0
    fold_assets = projection.fold_assets

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await fold_assets(*args)
    monkeypatch.setattr(projection, "fold_assets", counted)
    await assets.learn({("live", "ETHBTC")})
    assert (assets.base("live", "ETHBTC"), assets.quote("live", "ETHBTC")) == ("ETH", "BTC")
    # The paper accounts' symbols, from the configuration.
    assert assets.quote("default", "BTCUSDT") == "USDT"
    await assets.learn({("live", "ETHBTC"), ("default", "BTCUSDT")})
    assert reads == 1
    # A pair nobody recorded: read again (once), said, and not read again at every page.
    with caplog.at_level(logging.WARNING, logger="executor.projection"):
        await assets.learn({("live", "SOLBTC")})
        await assets.learn({("live", "SOLBTC")})
        await assets.learn({("live", "SOLBTC"), ("live", "ETHBTC")})
    assert reads == 2
    assert "live:SOLBTC" in caplog.text
    assert assets.quote("live", "SOLBTC") is None
    # Another new pair is read at once (its worker recorded it before its first order).
    await redis_client.hset(K.assets, "live:XRPBTC", msgspec.json.encode(["XRP", "BTC"]))
    await assets.learn({("live", "XRPBTC"), ("live", "SOLBTC")})
    assert assets.quote("live", "XRPBTC") == "BTC" and reads == 3
    # Recorded meanwhile: known at the next read once the pause is over.
    await redis_client.hset(K.assets, "live:SOLBTC", msgspec.json.encode(["SOL", "BTC"]))
    monkeypatch.setattr(projection, "_REREAD_UNKNOWN_S", 0.0)
    await assets.learn({("live", "SOLBTC")})
    assert assets.quote("live", "SOLBTC") == "BTC" and reads == 4


def _command(redis_url: str, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, REDIS_URL=redis_url, ORDERSTREAM_METRICS_PORT="0",
               ORDERSTREAM_METRICS_HOST="127.0.0.1")
    return [sys.executable, "-m", "executor", "projector", *args], env


async def test_the_command_takes_the_lease_and_gives_it_up_on_sigterm(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    command, env = _command(redis_url)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            holder = await redis_client.get(K.positions_lease)
            if holder is not None:
                break
            await asyncio.sleep(0.05)
        assert holder is not None and holder.startswith(b"projector-")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not await redis_client.exists(K.positions_lease)


def test_the_command_refuses_a_partition_of_an_unpartitioned_deployment(
        redis_url: str) -> None:
    command, env = _command(redis_url, "--partition", "1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--partition: the deployment is not partitioned" in done.stderr
