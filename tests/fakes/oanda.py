"""Fixtures for the OANDA adapter: the local v20 venue in process on a free port, and
account settings that point the adapter at it (token and account id from environment
variables, as in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.oanda.broker import OandaBroker
from executor.brokers.oanda.config import OandaAccount

TOKEN, ACCOUNT_ID = "test-oanda-token-0123456789abcdef", "101-004-1234567-001"
TOKEN_ENV, ACCOUNT_ENV = "ORDERSTREAM_TEST_OANDA_TOKEN", "ORDERSTREAM_TEST_OANDA_ACCOUNT"


@pytest.fixture
async def venue(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OandaExchangeServer]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(ACCOUNT_ENV, ACCOUNT_ID)
    server = OandaExchangeServer(TOKEN, ACCOUNT_ID)
    await server.start()
    yield server
    await server.close()


def account_for(server: OandaExchangeServer, **changes: Any) -> OandaAccount:
    return OandaAccount(account_id_env=ACCOUNT_ENV, token_env=TOKEN_ENV,
                        base_url=server.url,
                        instruments=["EUR_USD", "USD_JPY", "XAU_USD"], **changes)


@pytest.fixture
async def oanda(venue: OandaExchangeServer) -> AsyncIterator[OandaBroker]:
    b = OandaBroker("oa", account_for(venue))
    await b.start()
    yield b
    await b.close()
