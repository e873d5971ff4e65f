"""The guarantee every broker's native lists are tested for (test_binance_native_lists.py,
test_alpaca_native_lists.py, test_oanda_native_lists.py): a worker process SIGKILLed
between an entry's native fill and its exit's adoption leaves one exit, the broker's,
adopted by the heir."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.config import Settings
from producer.client import OrderClient
from producer.contract import OrderState, OrderStatus
from producer.keys import Keys

from .conftest import running, until
from .test_lists import order_in

K = Keys()


async def killed_before_adoption(redis_url: str, redis_client: aioredis.Redis,
                                 tmp_path: Path, config: str,
                                 fill: Callable[[OrderClient], Awaitable[None]],
                                 heir: Settings) -> OrderStatus:
    """A worker process on ``config`` (TOML; a watcher pass every 5 s) places and fills the
    entry ``K1`` natively (``fill``) and is SIGKILLed, most likely before its watcher's
    next pass: the exit is then the broker's alone until the heir (``heir``, in this
    process, its lease taken over after a second) publishes it. The exit ``K1-x1`` once
    accepted; no second exit was ever published."""
    client = OrderClient(redis_client)
    path = tmp_path / "orderstream.toml"
    path.write_text(config)
    first = WorkerProcess(redis_url, "first", tmp_path / "first.log",
                          ORDERSTREAM_CONFIG=str(path),
                          ORDERSTREAM_EMULATOR_INTERVAL_MS="5000",
                          ORDERSTREAM_EMULATOR_LEASE_MS="10000")
    try:
        await until(lambda: redis_client.exists(K.worker("first")), 30)
        await fill(client)
        first.kill()
        heir.worker.emulator_lease_ms = 1000
        async with running(heir):
            exit_ = await order_in(client, "K1-x1", OrderState.ACCEPTED, timeout=60)
            await asyncio.sleep(0.5)
            assert await client.order("K1-x2") is None
            return exit_
    finally:
        first.kill()
