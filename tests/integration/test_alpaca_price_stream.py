"""Alpaca's market data streams (quotes) as the adapter's price source, on the local
Alpaca: a quote set there reaches ``reference_price`` as the exact mid without a
latest-quote poll after the first, a quiet symbol is priced by one poll once subscribed,
stocks and crypto stream on connections of their own and a new symbol joins the live one,
a bad key is logged without the secret while polls answer, a dropped stream is reconnected
and resubscribed while polling covers the gap, a second connection of the same keys is
refused (406) and polls, a symbol past the plan's limit is polled, an emulated stop fires
on a streamed quote through a worker, ``price_stream = false`` polls as before, and of two
workers of one account only the emulator's lease holder streams (one connection, no 406),
the other polling silently, until a clean stop hands the lease and the stream over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.wrapper import unwrap
from executor.infra.metrics import Metrics
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys
from tests.fakes.alpaca import KEY_ID, SECRET, alpaca, alpaca_account

from .conftest import eventually, replace, running, settings_for, until

__all__ = ["alpaca"]  # fixture
D = Decimal
STOCKS, CRYPTO = "/v2/iex", "/v1beta3/crypto/us"


async def start(server: AlpacaExchangeServer, **changes: Any) -> AlpacaBroker:
    config: dict[str, Any] = {"price_stream_timeout_ms": 600, "price_cache_ms": 60_000,
                              **changes}
    b = AlpacaBroker("ap", alpaca_account(server, **config), metrics=Metrics())
    await b.start()
    return b


@pytest.fixture
async def broker(alpaca: AlpacaExchangeServer) -> AsyncIterator[AlpacaBroker]:
    b = await start(alpaca)
    yield b
    await b.close()


def gauge(b: AlpacaBroker, name: str) -> float | None:
    assert b.metrics is not None
    return b.metrics.registry.get_sample_value(name, {"account": "ap", "feed": "prices"})


async def failing(b: AlpacaBroker, times: int = 1) -> None:
    """Until the prices stream failed ``times``; it is down."""
    await eventually(
        lambda: (gauge(b, "orderstream_broker_stream_failures_total") or 0) >= times)
    assert gauge(b, "orderstream_broker_stream_up") == 0


async def subscribed(b: AlpacaBroker, server: AlpacaExchangeServer,
                     *expected: tuple[str, frozenset[str]]) -> None:
    def done() -> bool:
        kinds = {CRYPTO: "crypto"}
        return server.market_data.subscriptions() == sorted(expected) and all(
            b.quotes[kinds.get(path, "stocks")].connection() is not None
            for path, _ in expected)
    await eventually(done)


async def test_a_quote_reaches_the_adapter_as_the_exact_mid_without_a_poll(
        alpaca: AlpacaExchangeServer) -> None:
    # A cache of 200 ms: any price older than that would be polled again without the stream.
    b = await start(alpaca, price_cache_ms=200)
    try:
        assert await b.reference_price("AAPL") == D("190.00")  # the first: polled
        assert alpaca.quote_polls() == 1
        await subscribed(b, alpaca, (STOCKS, frozenset({"AAPL"})))
        assert gauge(b, "orderstream_broker_stream_up") == 1

        # Bid 123.4467, ask 123.4667 (JSON numbers): read as floats their mid would not be
        # 123.4567 to the last digit.
        alpaca.set_price("AAPL", "123.4567")
        await eventually(lambda: b.quotes["stocks"].current("AAPL") is not None, 2)
        price = await b.reference_price("AAPL")
        assert isinstance(price, Decimal) and price == D("123.4567")
        await asyncio.sleep(0.5)  # past the cache: a quiet symbol's last quote stands
        assert await b.reference_price("AAPL") == D("123.4567")
        assert alpaca.quote_polls() == 1  # none after the first
        # The handshake carries no key (auth is a message) and asks for JSON (no msgpack).
        for headers in alpaca.market_data.handshakes:
            assert not any(k.lower().startswith("apca-") for k in headers), headers
            assert "msgpack" not in headers.get("Content-Type", "")
    finally:
        await b.close()
    await eventually(lambda: alpaca.market_data.subscriptions() == [], 2)


async def test_a_quiet_symbol_is_priced_by_one_poll_once_subscribed(
        alpaca: AlpacaExchangeServer) -> None:
    """Alpaca sends no quote on subscribing: the first poll after the subscription is
    acknowledged stands for the symbol's price until a quote comes."""
    b = await start(alpaca, price_cache_ms=100)
    try:
        await b.reference_price("MSFT")
        await subscribed(b, alpaca, (STOCKS, frozenset({"MSFT"})))
        assert b.quotes["stocks"].current("MSFT") is None  # no quote on this connection yet
        await asyncio.sleep(0.15)  # past the cache
        assert await b.reference_price("MSFT") == D("420.00")
        assert alpaca.quote_polls() == 2
        assert b.quotes["stocks"].current("MSFT") == D("420.00")
        await asyncio.sleep(0.3)
        assert await b.reference_price("MSFT") == D("420.00")
        assert alpaca.quote_polls() == 2
        alpaca.set_price("MSFT", "421")
        await eventually(lambda: b.quotes["stocks"].current("MSFT") == D("421"), 2)
    finally:
        await b.close()


async def test_stocks_and_crypto_stream_apart_and_a_new_symbol_joins_the_live_connection(
        broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await broker.reference_price("AAPL")
    await broker.reference_price("BTC/USD")
    await subscribed(broker, alpaca, (STOCKS, frozenset({"AAPL"})),
                     (CRYPTO, frozenset({"BTC/USD"})))
    alpaca.set_price("BTC/USD", "61000.5")
    await eventually(lambda: broker.quotes["crypto"].current("BTC/USD") == D("61000.5"), 2)
    assert broker.quotes["stocks"].current("BTC/USD") is None

    # MSFT is subscribed on the stocks connection that is up: Alpaca allows one a feed.
    assert await broker.reference_price("MSFT") == D("420.00")  # its first: polled
    await subscribed(broker, alpaca, (STOCKS, frozenset({"AAPL", "MSFT"})),
                     (CRYPTO, frozenset({"BTC/USD"})))
    assert (broker.quotes["stocks"].connects, broker.quotes["crypto"].connects) == (1, 1)
    alpaca.set_price("MSFT", "425.5")
    await eventually(lambda: broker.quotes["stocks"].current("MSFT") == D("425.5"), 2)
    assert await broker.reference_price("MSFT") == D("425.5")
    assert alpaca.quote_polls() == 3  # AAPL, BTC/USD and MSFT once each


async def test_the_stock_stream_is_the_accounts_feed(alpaca: AlpacaExchangeServer) -> None:
    b = await start(alpaca, feed="sip")
    try:
        await b.reference_price("AAPL")
        await subscribed(b, alpaca, ("/v2/sip", frozenset({"AAPL"})))
    finally:
        await b.close()


async def test_a_bad_key_is_logged_without_the_secret_and_prices_are_polled(
        alpaca: AlpacaExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    alpaca.market_data.keys = lambda: {"another-key": "another-secret"}
    caplog.set_level(logging.DEBUG)
    b = await start(alpaca, price_cache_ms=50)
    try:
        assert await b.reference_price("AAPL") == D("190.00")
        await failing(b)
        alpaca.engine.set_price("AAPL", D("191"))
        await asyncio.sleep(0.06)
        assert await b.reference_price("AAPL") == D("191")  # polled
    finally:
        await b.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text and KEY_ID not in text
    told = "\n".join(r.getMessage() for r in caplog.records
                     if r.name == "executor.brokers.alpaca.quotes")
    assert "AUTHENTICATION FAILED" in told and "402 auth failed" in told, told
    assert "ws://" not in told and "/v2/iex" not in told  # no URL either


async def test_a_dropped_stream_is_reconnected_and_resubscribed_and_polls_cover_the_gap(
        alpaca: AlpacaExchangeServer) -> None:
    b = await start(alpaca, price_cache_ms=50)
    try:
        await b.reference_price("AAPL")
        await b.reference_price("MSFT")
        both = frozenset({"AAPL", "MSFT"})
        await subscribed(b, alpaca, (STOCKS, both))
        alpaca.set_price("AAPL", "190.5")
        await eventually(lambda: b.quotes["stocks"].current("AAPL") == D("190.5"), 2)

        alpaca.market_data.enabled = False  # reconnects are refused for now
        await alpaca.market_data.drop()
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 0)
        assert b.quotes["stocks"].current("AAPL") is None
        alpaca.engine.set_price("AAPL", D("191"))  # a move the lost stream cannot tell
        polls = alpaca.quote_polls()
        await asyncio.sleep(0.06)  # past the cache
        assert await b.reference_price("AAPL") == D("191")
        assert alpaca.quote_polls() == polls + 1
        await failing(b, 2)

        alpaca.market_data.enabled = True
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 1, 10)
        await subscribed(b, alpaca, (STOCKS, both))  # both symbols again
        assert b.quotes["stocks"].connects == 2
        alpaca.set_price("MSFT", "430")
        await eventually(lambda: b.quotes["stocks"].current("MSFT") == D("430"), 2)
        polls = alpaca.quote_polls()
        await asyncio.sleep(0.1)
        assert await b.reference_price("MSFT") == D("430")
        assert alpaca.quote_polls() == polls  # streamed again
        assert b.quotes["stocks"].backoff.failures == 0  # it spoke again: reset
    finally:
        await b.close()


async def test_a_second_connection_of_the_same_keys_is_refused_and_polls(
        broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    """Alpaca allows the keys one connection per feed: another worker's is refused (406)
    and its prices are polled."""
    await broker.reference_price("AAPL")
    await subscribed(broker, alpaca, (STOCKS, frozenset({"AAPL"})))
    other = await start(alpaca, price_cache_ms=50)
    try:
        assert await other.reference_price("AAPL") == D("190.00")
        await failing(other)
        assert other.quotes["stocks"].health.lost_since is not None
        assert alpaca.market_data.subscriptions() == [(STOCKS, frozenset({"AAPL"}))]
        assert gauge(broker, "orderstream_broker_stream_up") == 1
    finally:
        await other.close()


async def test_a_symbol_past_the_plans_limit_is_polled_and_the_rest_streamed(
        broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.market_data.symbol_limit = 1
    await broker.reference_price("AAPL")
    await subscribed(broker, alpaca, (STOCKS, frozenset({"AAPL"})))
    await broker.reference_price("MSFT")  # 405 symbol limit exceeded: MSFT not streamed
    await asyncio.sleep(0.3)
    assert alpaca.market_data.subscriptions() == [(STOCKS, frozenset({"AAPL"}))]
    assert gauge(broker, "orderstream_broker_stream_up") == 1
    alpaca.set_price("AAPL", "192")
    await eventually(lambda: broker.quotes["stocks"].current("AAPL") == D("192"), 2)
    assert broker.quotes["stocks"].current("MSFT") is None
    # Reconnected, both in one subscription are refused: asked for one at a time, the
    # symbol that fits is streamed again.
    await alpaca.market_data.drop()
    await eventually(lambda: broker.quotes["stocks"].connects == 2)
    await subscribed(broker, alpaca, (STOCKS, frozenset({"AAPL"})))
    alpaca.set_price("AAPL", "193")
    await eventually(lambda: broker.quotes["stocks"].current("AAPL") == D("193"), 2)
    assert gauge(broker, "orderstream_broker_stream_up") == 1


async def test_with_price_stream_off_prices_are_polled(alpaca: AlpacaExchangeServer) -> None:
    b = await start(alpaca, price_stream=False, price_cache_ms=50)
    try:
        assert await b.reference_price("AAPL") == D("190.00")
        alpaca.set_price("AAPL", "191")
        await asyncio.sleep(0.3)
        assert await b.reference_price("AAPL") == D("191")
        assert alpaca.quote_polls() == 2
        assert alpaca.market_data.handshakes == []
    finally:
        await b.close()


async def test_an_emulated_stop_fires_on_a_streamed_quote_through_a_worker(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    """A stop on a crypto pair (Alpaca takes none: emulated) fires on the streamed quote,
    well before a cached price (10 s here) would be polled again."""
    settings = replace(settings_for(redis_url, track_interval_ms=100),
                       accounts={"default": alpaca_account(alpaca, price_cache_ms=10_000)})
    async with running(settings):
        placed = await client.place("BTC/USD", "sell", "stop", "0.5", stop_price="59000",
                                    time_in_force="gtc")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED and accepted.emulated, accepted
        await eventually(lambda: alpaca.market_data.subscriptions() == [
            (CRYPTO, frozenset({"BTC/USD"}))], 5)
        await asyncio.sleep(0.3)  # a pass or so of the emulator
        polls = alpaca.quote_polls()
        alpaca.set_price("BTC/USD", "59001")  # above the stop
        await asyncio.sleep(0.5)
        assert alpaca.orders_sent() == []
        moved_at = time.monotonic()
        alpaca.set_price("BTC/USD", "59000")  # at it: fired

        async def sent() -> bool:
            return len(alpaca.orders_sent()) == 1
        await until(sent, 10)
        assert time.monotonic() - moved_at < 2.0  # a fifth of price_cache_ms at most
        [order] = alpaca.orders_sent()
        assert (order.body["type"], order.body["side"]) == ("market", "sell")
        assert alpaca.quote_polls() == polls  # the trigger and the release: streamed


def adapter(worker: Worker) -> AlpacaBroker:
    found = unwrap(worker.brokers["default"])
    assert isinstance(found, AlpacaBroker)
    return found


def worker_gauge(worker: Worker, name: str) -> float | None:
    return worker.metrics.registry.get_sample_value(
        name, {"account": "default", "feed": "prices"})


def streams(worker: Worker) -> bool:
    """Whether the worker's crypto quotes are streamed (its connection is up)."""
    return adapter(worker).quotes["crypto"].connection() is not None


def polls_silently(worker: Worker) -> None:
    """A worker that does not lead: no stream, no gauge claiming it down, no failure."""
    quotes = adapter(worker).quotes
    assert not any(q.running for q in quotes.values())
    assert worker_gauge(worker, "orderstream_broker_stream_up") is None
    assert not worker_gauge(worker, "orderstream_broker_stream_failures_total")


async def test_only_the_emulators_lease_holder_streams_and_a_clean_stop_hands_it_over(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """Alpaca allows the keys one market data connection per feed: of two workers of one
    account, the one whose emulator holds the account's lease streams, the other polls
    (and neither logs nor exports a lost stream); the holder stopped cleanly, the other
    takes the lease and the stream, on one connection again, never refused."""
    caplog.set_level(logging.INFO, logger="executor.brokers.alpaca.quotes")
    account = alpaca_account(alpaca, price_cache_ms=100)
    lease = Keys().emulator_lease("default")
    one = [(CRYPTO, frozenset({"BTC/USD"}))]
    stacks = {name: contextlib.AsyncExitStack() for name in ("w1", "w2")}
    workers: dict[str, Worker] = {}
    try:
        for name, stack in stacks.items():
            settings = replace(settings_for(redis_url, name, track_interval_ms=100),
                               accounts={"default": account})
            workers[name] = await stack.enter_async_context(running(settings))
        # Nothing to emulate yet: nobody leads, both poll, silently.
        for worker in workers.values():
            assert await adapter(worker).reference_price("BTC/USD") == D("60000.00")
            polls_silently(worker)
        placed = await client.place("BTC/USD", "sell", "stop", "0.5", stop_price="59000",
                                    time_in_force="gtc")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED and accepted.emulated, accepted

        async def holder() -> str:
            token = await client.redis.get(lease)
            return "" if token is None else token.decode().removesuffix(":emulator")

        async def streamed_by(name: str) -> bool:
            return (await holder() == name and streams(workers[name])
                    and alpaca.market_data.subscriptions() == one)

        async def streamed() -> bool:
            return await streamed_by(await holder()) if await holder() else False
        await until(streamed, 10)
        leader = await holder()
        other = "w2" if leader == "w1" else "w1"
        await asyncio.sleep(1.0)  # passes of both emulators
        assert alpaca.market_data.subscriptions() == one
        assert worker_gauge(workers[leader], "orderstream_broker_stream_up") == 1
        polls_silently(workers[other])

        # The other polls, exactly as without a stream; the leader's price is streamed.
        alpaca.set_price("BTC/USD", "59500")
        await eventually(
            lambda: adapter(workers[leader]).quotes["crypto"].current("BTC/USD") == D("59500"))
        await asyncio.sleep(0.15)  # past the cache
        polls = alpaca.quote_polls()
        assert await adapter(workers[other]).reference_price("BTC/USD") == D("59500")
        assert alpaca.quote_polls() == polls + 1
        assert await adapter(workers[leader]).reference_price("BTC/USD") == D("59500")
        assert alpaca.quote_polls() == polls + 1

        # The leader stops cleanly (its connection closed, its lease released): the other
        # takes the lease and the stream.
        await stacks[leader].aclose()
        await until(lambda: streamed_by(other), 10)
        assert worker_gauge(workers[other], "orderstream_broker_stream_up") == 1
        alpaca.set_price("BTC/USD", "59600")
        await eventually(
            lambda: adapter(workers[other]).quotes["crypto"].current("BTC/USD") == D("59600"))
        assert len(alpaca.market_data.handshakes) == 2  # one connection each, in turn
    finally:
        for stack in stacks.values():
            await stack.aclose()
    assert alpaca.market_data.over_limit == 0  # no connection refused, at any time
    told = [r for r in caplog.records if r.name == "executor.brokers.alpaca.quotes"]
    assert not [r for r in told if r.levelno >= logging.WARNING], [
        r.getMessage() for r in told]


async def test_a_broker_that_does_not_lead_polls_and_one_that_stops_leading_closes_at_once(
        alpaca: AlpacaExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="executor.brokers.alpaca.quotes")
    b = AlpacaBroker("ap", alpaca_account(alpaca, price_stream_timeout_ms=600,
                                          price_cache_ms=50), metrics=Metrics())
    b.lead_prices(False)  # as the emulator says on its creation, before the start
    await b.start()
    try:
        assert await b.reference_price("AAPL") == D("190.00")
        alpaca.set_price("AAPL", "191")
        await asyncio.sleep(0.3)
        assert await b.reference_price("AAPL") == D("191")
        assert alpaca.quote_polls() == 2  # polled, as with price_stream = false
        assert alpaca.market_data.handshakes == []
        assert gauge(b, "orderstream_broker_stream_up") is None  # not its job: no series

        b.lead_prices(True)  # the symbols asked meanwhile are streamed
        await subscribed(b, alpaca, (STOCKS, frozenset({"AAPL"})))
        assert gauge(b, "orderstream_broker_stream_up") == 1
        alpaca.set_price("AAPL", "192")
        await eventually(lambda: b.quotes["stocks"].current("AAPL") == D("192"), 2)

        b.lead_prices(False)  # returns at once; the connection closes in the background
        assert b.quotes["stocks"].current("AAPL") is None
        assert gauge(b, "orderstream_broker_stream_up") is None
        await eventually(lambda: alpaca.market_data.subscriptions() == [], 2)
        alpaca.set_price("AAPL", "193")
        await asyncio.sleep(0.06)  # past the cache
        assert await b.reference_price("AAPL") == D("193")  # polled again
        assert not gauge(b, "orderstream_broker_stream_failures_total")
    finally:
        await b.close()
    assert [r.getMessage() for r in caplog.records
            if r.name == "executor.brokers.alpaca.quotes"] == []


async def test_a_leader_refused_while_the_last_connection_lingers_polls_and_retries(
        alpaca: AlpacaExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    """The previous holder was killed: Alpaca still counts its connection, so the new
    leader's is refused (406) until it goes; meanwhile prices are polled, the refusal is
    logged once and retried with the backoff."""
    caplog.set_level(logging.INFO, logger="executor.brokers.alpaca.quotes")
    lingering = await start(alpaca)
    await lingering.reference_price("AAPL")
    await subscribed(lingering, alpaca, (STOCKS, frozenset({"AAPL"})))
    b = AlpacaBroker("ap", alpaca_account(alpaca, price_stream_timeout_ms=600,
                                          price_cache_ms=50), metrics=Metrics())
    b.lead_prices(False)
    await b.start()
    try:
        b.lead_prices(True)
        assert await b.reference_price("AAPL") == D("190.00")
        await failing(b, 2)  # refused, and refused again after a backoff
        assert alpaca.market_data.over_limit >= 2
        alpaca.engine.set_price("AAPL", D("191"))
        await asyncio.sleep(0.06)
        assert await b.reference_price("AAPL") == D("191")  # polled meanwhile
        await lingering.close()  # Alpaca lets the dead connection go
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 1, 10)
        await subscribed(b, alpaca, (STOCKS, frozenset({"AAPL"})))
    finally:
        await lingering.close()
        await b.close()
    warned = [r.getMessage() for r in caplog.records
              if r.name == "executor.brokers.alpaca.quotes" and r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "406 connection limit exceeded" in warned[0], warned
