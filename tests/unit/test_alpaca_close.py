"""``AlpacaBroker.close`` ends its reconciliation task even when that task swallows a
cancel (redis-py can, inside a command: infra/tasks.py): a close that awaited it once hung
for ever, and with it the worker's stop."""

from __future__ import annotations

import asyncio
import time

import pytest

from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.alpaca.config import AlpacaAccount


async def test_close_ends_a_reconciliation_that_swallowed_a_cancel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_KEY", "key")
    monkeypatch.setenv("AP_SECRET", "secret")
    broker = AlpacaBroker("ap", AlpacaAccount(key_id_env="AP_KEY", secret_env="AP_SECRET",
                                              base_url="http://127.0.0.1:9"))
    cancels: list[int] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) == 2:
                    raise
                # the first cancel lost, as inside a Redis command: the loop goes on

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    broker._reconciling = task
    started = time.monotonic()
    await asyncio.wait_for(broker.close(), 10)
    assert time.monotonic() - started < 3  # cancelled again, not waited on for ever
    assert task.done() and len(cancels) == 2
