"""Fixtures for the Alpaca adapter: the local Alpaca API in process on a free port, and
account settings that point the adapter at it (credentials from environment variables, as
in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.alpaca.config import AlpacaAccount

KEY_ID, SECRET = "test-key-id-0123456789", "test-secret-key-0123456789abcdef"
KEY_ENV, SECRET_ENV = "ORDERSTREAM_TEST_ALPACA_KEY_ID", "ORDERSTREAM_TEST_ALPACA_SECRET"
SYMBOLS = ["AAPL", "MSFT", "GME", "BTC/USD"]


@pytest.fixture
async def alpaca(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AlpacaExchangeServer]:
    monkeypatch.setenv(KEY_ENV, KEY_ID)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = AlpacaExchangeServer(KEY_ID, SECRET)
    await server.start()
    yield server
    await server.close()


def alpaca_account(server: AlpacaExchangeServer, **changes: Any) -> AlpacaAccount:
    changes.setdefault("symbols", SYMBOLS)
    return AlpacaAccount(key_id_env=KEY_ENV, secret_env=SECRET_ENV, base_url=server.url,
                         **changes)


@pytest.fixture
async def alpaca_broker(alpaca: AlpacaExchangeServer) -> AsyncIterator[AlpacaBroker]:
    b = AlpacaBroker("ap", alpaca_account(alpaca))
    await b.start()
    yield b
    await b.close()
