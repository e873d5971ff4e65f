"""Fixtures for the Binance adapter: the local exchange in process on a free port, and
account settings that point python-binance at it (credentials from environment variables,
as in production)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.binance.config import BinanceAccount

KEY, SECRET = "test-api-key-0123456789", "test-api-secret-0123456789abcdef"
KEY_ENV, SECRET_ENV = "ORDERSTREAM_TEST_BINANCE_KEY", "ORDERSTREAM_TEST_BINANCE_SECRET"


@pytest.fixture
async def exchange(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BinanceExchangeServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = BinanceExchangeServer(KEY, SECRET)
    await server.start()
    yield server
    await server.close()


def account_for(server: BinanceExchangeServer, **changes: Any) -> BinanceAccount:
    return BinanceAccount(api_key_env=KEY_ENV, api_secret_env=SECRET_ENV, testnet=True,
                          base_url=server.url, **changes)


@pytest.fixture
async def broker(exchange: BinanceExchangeServer) -> AsyncIterator[BinanceBroker]:
    b = BinanceBroker("bn", account_for(exchange))
    await b.start()
    yield b
    await b.close()


@contextlib.contextmanager
def in_thread(server: BinanceExchangeServer) -> Iterator[BinanceExchangeServer]:
    """Serve ``server`` from its own thread and event loop: for tests whose own loop blocks
    (waiting for worker processes to exit) while workers still talk to the exchange."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="binance-exchange", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
