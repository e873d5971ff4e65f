"""Reconciliation of a Binance account against our records, through the real python-binance
client and real workers: balances are compared with what the account held at start, not
with zero."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.wrapper import unwrap
from executor.infra.store import Store
from executor.model.positions import Position, decode_position, position_key
from producer.client import OrderClient
from producer.contract import ResultStatus, encode
from producer.keys import Keys
from tests.fakes.binance import account_for, exchange

from .conftest import running
from .test_binance_worker import binance_settings, until

__all__ = ["exchange"]  # fixture

K = Keys()
POSITION = position_key("default", "BTCUSDT")


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def record_position(r: aioredis.Redis, quantity: str) -> None:
    held = Position(account="default", symbol="BTCUSDT", quantity=Decimal(quantity))
    await r.hset(K.positions, POSITION, encode(held))


async def test_an_account_that_held_the_base_asset_and_sold_some_is_not_drift_at_start(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient, caplog: pytest.LogCaptureFixture) -> None:
    # The exchange's account holds 100 BTC from before orderstream; we sell 1.5 of them.
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "market", "1.5")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.FILLED

        async def projected() -> bool:
            raw = await redis_client.hget(K.positions, POSITION)
            return raw is not None and decode_position(raw).quantity == Decimal("-1.5")
        await until(projected)
    caplog.clear()
    async with running(binance_settings(redis_url, exchange)) as worker:  # every start
        adapter = unwrap(worker.brokers["default"])
        assert isinstance(adapter, BinanceBroker) and adapter.drift is not None
        assert adapter.drift.shortfalls == []
    assert errors(caplog) == []


async def test_a_later_pass_finds_fills_recorded_that_did_not_happen(
        redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store(redis_client, K, results_maxlen=10, order_ttl_ms=60_000)
    # Sold 1 of the 100 BTC held before orderstream: 99 held, our position -1. Fine.
    exchange.exchange.balances["BTC"][0] = Decimal("99")
    await record_position(redis_client, "-1")
    b = BinanceBroker("default", account_for(exchange), redis_client, K)
    await b.start()
    try:
        assert b.drift is not None and b.drift.shortfalls == []
        # A buy of 5 BTC recorded that the exchange never made: 99 held, 104 expected.
        await record_position(redis_client, "4")
        drift = await b.reconcile(store)
        [short] = drift.shortfalls
        assert (short.asset, short.held, short.recorded, short.expected) == (
            "BTC", Decimal("99"), Decimal("4"), Decimal("104"))
        assert any("holds 99.00000000 BTC, at least 104 expected" in m
                   for m in errors(caplog))
    finally:
        await b.close()


async def test_a_shortfall_gone_when_read_again_is_not_reported(
        redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The balances can show a fill before the positions projection has folded it: a
    shortfall is read again before it is told."""
    store = Store(redis_client, K, results_maxlen=10, order_ttl_ms=60_000)
    b = BinanceBroker("default", account_for(exchange), redis_client, K)
    await b.start()
    try:
        btc = exchange.exchange.balances["BTC"]
        btc[0] -= Decimal("2")  # gone from the balance, not (yet) from our positions

        def settled(_: dict[str, str]) -> None:
            btc[0] += Decimal("2")
        hook = exchange.after("GET", "/api/v3/account", settled)
        drift = await b.reconcile(store)
        assert hook.times == 0  # the first read was short
        assert drift.shortfalls == [] and errors(caplog) == []
    finally:
        await b.close()
