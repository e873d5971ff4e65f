"""Alpaca's trade_updates stream: updates reported as they happen (a fill reaches the order
with polling slowed to once a minute), a dropped stream reconnected, a fill missed while it
was down found by the REST read after reconnecting, and a refused authentication reported
without the secret."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.base import BrokerStatus, FeedBroken
from executor.config import Settings
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import OrderSpec, OrderType, ResultStatus, Side, WireDecimal
from producer.keys import Keys
from tests.fakes.alpaca import KEY_ID, SECRET, alpaca, alpaca_account, alpaca_broker
from tests.fakes.feeds import Feed

from .conftest import replace, running, settings_for, until
from .test_tracker import state_of

__all__ = ["alpaca", "alpaca_broker"]  # fixtures

K = Keys()


def alpaca_settings(redis_url: str, server: AlpacaExchangeServer, **worker: Any) -> Settings:
    """A worker trading on ``server`` as account ``default``."""
    return replace(settings_for(redis_url, **worker),
                   accounts={"default": alpaca_account(server)})


def limit(price: str, qty: str = "2") -> OrderSpec:
    return OrderSpec(account="ap", symbol="AAPL", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal(qty), price=WireDecimal(price))


async def listening(server: AlpacaExchangeServer, n: int = 1) -> bool:
    await asyncio.sleep(0)
    return server.listening() >= n


async def _is(r: aioredis.Redis, cid: str, state: str) -> bool:
    return await state_of(r, cid) == state


async def test_updates_are_reported_as_they_happen(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    feed = Feed(alpaca_broker)
    try:
        await until(lambda: listening(alpaca))
        await alpaca_broker.submit("s-1", limit("150"))
        new = await feed.next()
        assert (new.client_order_id, new.status, new.fills) == ("s-1", BrokerStatus.NEW, [])
        alpaca.engine.fill("s-1", WireDecimal("0.5"), WireDecimal("150"))
        part = await feed.next()
        alpaca.set_price("AAPL", "149")
        done = await feed.next()
    finally:
        await feed.stop()
    assert (part.status, part.filled_quantity) == (BrokerStatus.PARTIALLY_FILLED, 0.5)
    assert done.status is BrokerStatus.FILLED and done.filled_quantity == 2
    assert [(f.quantity, f.price) for f in done.fills] == [(0.5, 150), (1.5, 149)]
    assert alpaca_broker.stream.lost_since is None and alpaca_broker.stream.failures == 0


async def test_a_dropped_stream_raises_and_the_next_connection_reads_open_orders_first(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    feed = Feed(alpaca_broker)
    await until(lambda: listening(alpaca))
    await alpaca_broker.submit("s-2", limit("150", "3"))
    assert (await feed.next()).status is BrokerStatus.NEW
    alpaca.stream_enabled = False
    await alpaca.drop_streams()
    await asyncio.wait_for(feed.task, 5)
    assert isinstance(feed.error, FeedBroken), feed.error
    assert alpaca_broker.stream.lost_since is not None
    alpaca.engine.fill("s-2", WireDecimal("1"))  # while the stream is down: no update
    alpaca.stream_enabled = True
    again = Feed(alpaca_broker)  # after the backoff (1 s) a new connection
    try:
        found = await again.next(10)
    finally:
        await again.stop()
    assert (found.client_order_id, found.status, found.filled_quantity) == (
        "s-2", BrokerStatus.PARTIALLY_FILLED, 1)
    assert alpaca_broker.stream.lost_since is None
    assert [r.query.get("status") for r in alpaca.log
            if r.method == "GET" and r.path == "/v2/orders"] == ["open", "open"]


async def test_refused_stream_authentication_is_reported_without_the_secret(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    alpaca.stream_keys = {KEY_ID: "another-secret"}
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            feed = Feed(alpaca_broker)
            started = time.monotonic()
            await asyncio.wait_for(feed.task, 10)
            assert isinstance(feed.error, FeedBroken), feed.error
        waited = time.monotonic() - started  # the second attempt after the backoff
    assert "authentication refused (unauthorized)" in str(feed.error)
    assert alpaca_broker.stream.failures == 2 and waited >= 0.9
    told = [r for r in caplog.records if "AUTHENTICATION FAILED" in r.getMessage()]
    assert told and told[0].levelno == logging.ERROR
    everything = caplog.text + str(feed.error) + repr(alpaca_broker)
    assert SECRET not in everything and "another-secret" not in everything


async def test_a_stream_that_cannot_open_is_counted(alpaca: AlpacaExchangeServer) -> None:
    alpaca.stream_enabled = False
    metrics = Metrics()
    b = AlpacaBroker("ap", alpaca_account(alpaca), metrics=metrics)
    await b.start()
    try:
        with pytest.raises(FeedBroken, match="HTTP 503"):
            async for _ in b.updates():
                pass
    finally:
        await b.close()
    assert metrics.registry.get_sample_value(
        "orderstream_broker_stream_failures_total", {"account": "ap", "feed": "orders"}) == 1
    assert metrics.registry.get_sample_value(
        "orderstream_broker_stream_up", {"account": "ap", "feed": "orders"}) == 0


async def test_a_fill_arrives_through_the_stream_with_polling_slowed(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    # Polling once a minute: within the test only the stream can tell the fill.
    settings = alpaca_settings(redis_url, alpaca, track_interval_ms=60_000)
    async with running(settings) as worker:
        await until(lambda: listening(alpaca))
        sub = await client.place("AAPL", "buy", "limit", "2", price="150")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
        before = len(alpaca.log)
        alpaca.set_price("AAPL", "149")
        await until(lambda: _is(redis_client, sub.client_order_id, "filled"))
        assert "default" in worker.tracker.live_feeds
    # No lookup of the order (by client id or Alpaca's id).
    assert not [r for r in alpaca.log[before:]
                if r.path.startswith("/v2/orders:") or r.path == "/v2/orders/{order_id}"]


async def test_a_fill_missed_while_the_stream_was_down_is_read_after_reconnecting(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    settings = alpaca_settings(redis_url, alpaca, track_interval_ms=60_000)
    async with running(settings):
        await until(lambda: listening(alpaca))
        sub = await client.place("AAPL", "sell", "limit", "1", price="200")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
        cid = sub.client_order_id
        alpaca.stream_enabled = False
        await alpaca.drop_streams()
        alpaca.set_price("AAPL", "201")  # filled while the stream is down: no update
        await asyncio.sleep(0.2)
        # The worker reconnects a minute later (its polling interval): another follower
        # of the account connects now, and its first reports are what it read over REST.
        assert await state_of(redis_client, cid) == "accepted"
        alpaca.stream_enabled = True
        other = AlpacaBroker("default", alpaca_account(alpaca), redis_client, K)
        await other.start()
        feed = Feed(other)
        try:
            found = await feed.next(10)
        finally:
            await feed.stop()
            await other.close()
    assert (found.client_order_id, found.status, found.filled_quantity) == (
        cid, BrokerStatus.FILLED, 1)
    assert [f.price for f in found.fills] == [201]


async def test_a_process_whose_memory_is_behind_the_record_derives_from_the_record(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    # Every worker hears every update, and any may look an order up (a cancel): a rise of
    # the cumulative quantity is one fill from what was told before, so a worker that
    # remembers less than the record has must not count the difference again.
    settings = alpaca_settings(redis_url, alpaca)
    other = AlpacaBroker("default", alpaca_account(alpaca), redis_client, K)
    await other.start()
    try:
        async with running(settings):
            await until(lambda: listening(alpaca))
            sub = await client.place("AAPL", "buy", "limit", "3", price="150")
            assert (await client.wait_result(sub.request_id, 10)).status is (
                ResultStatus.ACCEPTED)
            cid = sub.client_order_id
            alpaca.engine.fill(cid, WireDecimal("1"))
            assert (await other.get_order(cid, "AAPL")).filled_quantity == 1  # remembered
            alpaca.engine.fill(cid, WireDecimal("1"))
            await until(lambda: _filled(client, cid, 2))  # told by the worker, not `other`
            alpaca.engine.fill(cid, WireDecimal("1"))
            found = await other.get_order(cid, "AAPL")
            await until(lambda: _is(redis_client, cid, "filled"))
            record = await client.order(cid)
    finally:
        await other.close()
    assert [f.quantity for f in found.fills] == [1, 1, 1], found.fills
    assert record is not None and record.filled_quantity == 3
    assert [f.fill_id for f in record.fills] == [f.fill_id for f in found.fills]


async def _filled(client: OrderClient, cid: str, quantity: int) -> bool:
    record = await client.order(cid)
    return record is not None and record.filled_quantity == quantity
