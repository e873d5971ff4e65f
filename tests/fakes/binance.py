"""Fixtures for the Binance adapter: the local exchange in process on a free port, and
account settings that point python-binance at it (credentials from environment variables,
as in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.binance.config import BinanceAccount
from tests.fakes.threaded import in_thread  # noqa: F401 (the tests import it here)

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
