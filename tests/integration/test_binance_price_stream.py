"""Binance's market stream (each symbol's trades) as the adapter's price source: a price set
at the exchange reaches ``reference_price`` without a ticker/price poll after the first, a
quiet symbol is priced by one poll once the stream is up, an emulated order triggers at once
rather than when the cached price ages out, a dropped or stalled stream is reconnected while
polling covers the gap, a new symbol joins the subscription, the API key and secret never
reach the log, and ``price_stream = false`` polls as before."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.binance.broker import BinanceBroker
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import ResultStatus
from tests.fakes.binance import KEY, SECRET, account_for, exchange

from .conftest import eventually, running, until
from .test_binance_worker import binance_settings

__all__ = ["exchange"]  # fixture
D = Decimal
BTC = frozenset({"btcusdt@trade"})


async def start(server: BinanceExchangeServer, **changes: Any) -> BinanceBroker:
    config: dict[str, Any] = {"price_stream_timeout_ms": 600, "price_cache_ms": 60_000,
                              **changes}
    b = BinanceBroker("bn", account_for(server, **config), metrics=Metrics())
    await b.start()
    return b


@pytest.fixture
async def broker(exchange: BinanceExchangeServer) -> AsyncIterator[BinanceBroker]:
    b = await start(exchange)
    yield b
    await b.close()


def gauge(b: BinanceBroker, name: str) -> float | None:
    assert b.metrics is not None
    return b.metrics.registry.get_sample_value(name, {"account": "bn", "feed": "prices"})


async def connected(b: BinanceBroker, server: BinanceExchangeServer,
                    streams: frozenset[str] = BTC) -> None:
    await eventually(lambda: server.market_streams == [streams]
                     and b.market.connection() is not None)


async def test_a_price_set_at_the_exchange_reaches_the_adapter_without_a_poll(
        exchange: BinanceExchangeServer) -> None:
    # A cache of 200 ms: any price older than that would be polled again without the stream.
    b = await start(exchange, price_cache_ms=200)
    try:
        assert await b.reference_price("BTCUSDT") == D("50000")  # the first: polled
        assert exchange.price_polls() == 1
        await connected(b, exchange)
        assert gauge(b, "orderstream_broker_stream_up") == 1

        exchange.set_price("BTCUSDT", "51000.5")  # a trade at the exchange
        await eventually(lambda: b.market.current("BTCUSDT") == D("51000.5"), 1)
        assert await b.reference_price("BTCUSDT") == D("51000.5")
        # No trade for longer than the cache keeps a price: the last one stays current
        # while the connection lives (our pings answered).
        await asyncio.sleep(1.0)
        assert await b.reference_price("BTCUSDT") == D("51000.5")
        assert await b.reference_prices(["BTCUSDT"]) == {"BTCUSDT": D("51000.5")}
        assert exchange.price_polls() == 1  # none after the first
    finally:
        await b.close()
    await eventually(lambda: exchange.market_streams == [], 2)  # closed with the adapter


async def test_a_quiet_symbol_is_priced_by_one_poll_once_the_stream_is_up(
        exchange: BinanceExchangeServer) -> None:
    """A trade stream has no snapshot: the first poll after the connection is up stands for
    the symbol's price on it until a trade comes."""
    b = await start(exchange, price_cache_ms=100)
    try:
        await b.reference_price("BTCUSDT")
        await connected(b, exchange)
        assert b.market.current("BTCUSDT") is None  # no trade yet on this connection
        await asyncio.sleep(0.15)  # past the cache
        assert await b.reference_price("BTCUSDT") == D("50000")
        assert exchange.price_polls() == 2
        assert b.market.current("BTCUSDT") == D("50000")
        await asyncio.sleep(0.3)
        assert await b.reference_price("BTCUSDT") == D("50000")
        assert exchange.price_polls() == 2
        exchange.set_price("BTCUSDT", "49000")
        await eventually(lambda: b.market.current("BTCUSDT") == D("49000"), 1)
    finally:
        await b.close()


async def test_an_emulated_trailing_stop_triggers_within_a_fraction_of_price_cache_ms(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    """A trail in price units (held by the emulator, Binance trails in bips only) fires on
    the streamed trade: well before a cached price (10 s here) would be polled again."""
    async with running(binance_settings(redis_url, exchange, price_cache_ms=10_000)):
        placed = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                    trailing_offset="50")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED and accepted.emulated, accepted
        await eventually(lambda: exchange.market_streams == [BTC], 5)
        await asyncio.sleep(0.3)  # a pass or so of the emulator
        polls = exchange.price_polls()
        exchange.set_price("BTCUSDT", "49990")  # above the trigger (50000 - 50)
        await asyncio.sleep(0.5)
        assert exchange.orders_sent() == []
        moved_at = time.monotonic()
        exchange.set_price("BTCUSDT", "49950")  # at it: fired

        async def sent() -> bool:
            return len(exchange.orders_sent()) == 1
        await until(sent, 10)
        elapsed = time.monotonic() - moved_at
        assert elapsed < 2.0, elapsed  # a fifth of price_cache_ms at most
        [order] = exchange.orders_sent()
        assert (order.params["type"], order.params["side"]) == ("MARKET", "SELL")
        assert exchange.price_polls() == polls  # the trigger and the release: streamed


async def test_a_dropped_stream_is_reconnected_and_polling_covers_the_gap(
        exchange: BinanceExchangeServer) -> None:
    b = await start(exchange, price_cache_ms=50)
    try:
        await b.reference_price("BTCUSDT")
        await connected(b, exchange)
        exchange.set_price("BTCUSDT", "50100")
        await eventually(lambda: b.market.current("BTCUSDT") == D("50100"), 1)

        exchange.market_enabled = False  # reconnects are refused for now
        await exchange.drop_market_streams()
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 0, 5)
        assert b.market.current("BTCUSDT") is None
        # A move the lost stream cannot tell: the poll does.
        exchange.exchange.set_price("BTCUSDT", D("50200"))
        polls = exchange.price_polls()
        await asyncio.sleep(0.06)  # past the cache
        assert await b.reference_price("BTCUSDT") == D("50200")
        assert exchange.price_polls() == polls + 1
        # A reconnect refused (after a backoff), counted.
        await eventually(
            lambda: (gauge(b, "orderstream_broker_stream_failures_total") or 0) >= 2, 5)

        exchange.market_enabled = True
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 1, 10)
        await connected(b, exchange)
        assert b.market.connects == 2
        exchange.set_price("BTCUSDT", "50300")
        await eventually(lambda: b.market.current("BTCUSDT") == D("50300"), 1)
        polls = exchange.price_polls()
        await asyncio.sleep(0.2)
        assert await b.reference_price("BTCUSDT") == D("50300")
        assert exchange.price_polls() == polls  # streamed again: no polls
        assert b.market.backoff.failures == 0  # it spoke again: reset
    finally:
        await b.close()


async def test_a_stalled_stream_is_lost_and_reconnected(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.reference_price("BTCUSDT")
    await connected(broker, exchange)
    exchange.set_price("BTCUSDT", "50100")
    await eventually(lambda: broker.market.current("BTCUSDT") == D("50100"), 1)
    exchange.market_sending = False  # open, silent, our pings unanswered
    await eventually(lambda: gauge(broker, "orderstream_broker_stream_up") == 0, 5)
    assert broker.market.current("BTCUSDT") is None
    exchange.market_sending = True
    await eventually(lambda: gauge(broker, "orderstream_broker_stream_up") == 1, 10)
    exchange.set_price("BTCUSDT", "50200")
    await eventually(lambda: broker.market.current("BTCUSDT") == D("50200"), 2)


async def test_a_new_symbol_joins_the_subscription(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.reference_price("BTCUSDT")
    await connected(broker, exchange)
    assert await broker.reference_price("ETHUSDT") == D("3000")  # its first: polled
    assert exchange.price_polls() == 2
    both = frozenset({"btcusdt@trade", "ethusdt@trade"})
    await connected(broker, exchange, both)
    assert exchange.market_connects == [BTC, both]
    exchange.set_price("ETHUSDT", "3100")
    exchange.set_price("BTCUSDT", "50500")
    await eventually(lambda: broker.market.current("ETHUSDT") == D("3100"), 2)
    assert await broker.reference_prices(["BTCUSDT", "ETHUSDT", "NOPE"]) == {
        "BTCUSDT": D("50500"), "ETHUSDT": D("3100"), "NOPE": None}
    assert await broker.reference_price("NOPE") is None  # not a symbol of the exchange
    assert broker.market.symbols == {"BTCUSDT", "ETHUSDT"}
    assert exchange.price_polls() == 2
    # A restart for a new symbol is no loss.
    assert gauge(broker, "orderstream_broker_stream_failures_total") in (None, 0)


async def test_the_key_and_secret_never_reach_the_log(
        exchange: BinanceExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        b = await start(exchange)
        try:
            await b.reference_price("BTCUSDT")
            await connected(b, exchange)
            exchange.set_price("BTCUSDT", "50100")
            b.market.health.repeat_s = 0  # every failure told
            exchange.market_enabled = False
            await exchange.drop_market_streams()
            await eventually(
                lambda: (gauge(b, "orderstream_broker_stream_failures_total") or 0) >= 2, 10)
        finally:
            await b.close()
    lost = [r.getMessage() for r in caplog.records if "market stream" in r.getMessage()]
    assert any("binance bn: market stream lost (closed by the server)" in m
               for m in lost), lost
    assert any("refused: HTTP 503" in m for m in lost), lost
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + str(record.args)
        assert KEY not in text and SECRET not in text, record


async def test_with_the_stream_off_prices_are_polled(
        exchange: BinanceExchangeServer) -> None:
    b = await start(exchange, price_stream=False, price_cache_ms=50)
    try:
        assert await b.reference_price("BTCUSDT") == D("50000")
        await asyncio.sleep(0.2)
        exchange.set_price("BTCUSDT", "50100")
        assert await b.reference_price("BTCUSDT") == D("50100")
        assert exchange.price_polls() == 2
        assert exchange.market_connects == []
    finally:
        await b.close()


async def test_the_fake_serves_raw_and_combined_streams_and_subscribe(
        exchange: BinanceExchangeServer) -> None:
    ws_url = "ws" + exchange.url[len("http"):]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{ws_url}/ws/btcusdt@trade") as raw, \
                session.ws_connect(f"{ws_url}/stream?streams=ethusdt@trade") as combined:
            await eventually(lambda: len(exchange.market_streams) == 2)
            exchange.set_price("BTCUSDT", "50001")
            trade = json.loads((await raw.receive(2)).data)
            assert (trade["e"], trade["s"], trade["p"]) == ("trade", "BTCUSDT",
                                                            "50001.00000000")
            await combined.send_str(json.dumps(
                {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
            assert json.loads((await combined.receive(2)).data) == {"result": None, "id": 7}
            exchange.set_price("BTCUSDT", "50002")
            message = json.loads((await combined.receive(2)).data)
            assert message["stream"] == "btcusdt@trade"
            assert message["data"]["p"] == "50002.00000000"
        exchange.market_enabled = False
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{ws_url}/ws/btcusdt@trade")
        assert refused.value.status == 503
