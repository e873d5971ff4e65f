"""OANDA's transactions stream as the adapter's push feed: a resting order's fill arrives
through it (and through a whole worker whose polling is slowed down), a dropped stream
raises and the fill missed meanwhile is healed from transactions/sinceid on reconnect, and
a stream without heartbeats is broken (the stream gauge at 0, each attempt counted)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.base import BrokerStatus, FeedBroken
from executor.brokers.oanda.broker import OandaBroker
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import OrderSpec, OrderState, OrderType, Side, WireDecimal
from tests.fakes.feeds import Feed, following
from tests.fakes.oanda import account_for, venue

from .conftest import replace, running, settings_for
from .test_tracker import event_states

__all__ = ["venue"]  # fixture


@contextlib.asynccontextmanager
async def feed(b: OandaBroker, server: OandaExchangeServer) -> AsyncIterator[Feed]:
    before = server.streams
    async with following(b, lambda: server.streams > before) as f:
        yield f


def limit(side: Side, price: str, quantity: str = "1000") -> OrderSpec:
    return OrderSpec(account="oa", symbol="EUR_USD", side=side, type=OrderType.LIMIT,
                     quantity=WireDecimal(quantity), price=WireDecimal(price))


@pytest.fixture
async def broker(venue: OandaExchangeServer) -> AsyncIterator[OandaBroker]:
    venue.heartbeat_ms = 100
    b = OandaBroker("oa", account_for(venue, stream_timeout_ms=500), metrics=Metrics())
    await b.start()
    yield b
    await b.close()


def gauge(b: OandaBroker, name: str, feed: str = "orders") -> float | None:
    assert b.metrics is not None
    return b.metrics.registry.get_sample_value(name, {"account": "oa", "feed": feed})


async def test_a_resting_order_fill_arrives_through_the_stream(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    accepted = await broker.submit("rest-1", limit(Side.BUY, "1.09"))
    assert accepted.status is BrokerStatus.NEW
    async with feed(broker, venue) as f:
        assert gauge(broker, "orderstream_broker_stream_up") == 1
        venue.set_price("EUR_USD", "1.08990", "1.09000")
        report = await f.next()
        assert f.error is None
    assert report.client_order_id == "rest-1"
    assert report.status is BrokerStatus.FILLED
    assert report.filled_quantity == Decimal(1000)
    assert [f.price for f in report.fills] == [Decimal("1.09")]


async def test_a_cancel_of_a_resting_order_arrives_through_the_stream(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    await broker.submit("rest-2", limit(Side.SELL, "1.2"))
    async with feed(broker, venue) as f:
        venue.venue.cancel("@rest-2")  # cancelled by someone else (OANDA's web page)
        report = await f.next()
    assert (report.client_order_id, report.status) == ("rest-2", BrokerStatus.CANCELLED)


async def test_a_fill_missed_while_the_stream_was_down_is_healed_from_sinceid(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    await broker.submit("rest-3", limit(Side.BUY, "1.09"))
    async with feed(broker, venue) as f:
        await venue.drop_streams()
        for _ in range(300):
            if f.task.done():
                break
            await asyncio.sleep(0.01)
        assert isinstance(f.error, FeedBroken), f.error
        assert f.error.logged
    assert gauge(broker, "orderstream_broker_stream_up") == 0
    venue.set_price("EUR_USD", "1.08990", "1.09000")  # fills while nobody listens
    sinceid = sum(1 for r in venue.log if r.name == "sinceid")
    async with feed(broker, venue) as f:
        report = await f.next()
    assert (report.client_order_id, report.status) == ("rest-3", BrokerStatus.FILLED)
    assert sum(1 for r in venue.log if r.name == "sinceid") > sinceid  # healed from there
    assert gauge(broker, "orderstream_broker_stream_up") == 1


async def test_a_stream_without_heartbeats_is_broken_and_counted(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    venue.heartbeats = False
    async with feed(broker, venue) as f:
        await asyncio.wait_for(asyncio.shield(f.task), 5)
    assert isinstance(f.error, FeedBroken), f.error
    assert "no heartbeat for 500 ms" in str(f.error)
    assert gauge(broker, "orderstream_broker_stream_up") == 0
    assert gauge(broker, "orderstream_broker_stream_failures_total") == 1
    assert broker.feed.backoff.delay() > 0  # the next attempt waits first


async def test_a_worker_learns_a_fill_from_the_stream_while_polling_is_slow(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    venue.heartbeat_ms = 200
    settings = replace(settings_for(redis_url, track_interval_ms=60_000),
                       accounts={"default": account_for(venue)})
    async with running(settings):
        sub = await client.place("EUR_USD", "buy", "limit", "1000", price="1.09")
        accepted = await client.wait_result(sub.request_id, 10)
        for _ in range(300):  # until the worker's feed is connected
            if venue.streams:
                break
            await asyncio.sleep(0.01)
        venue.set_price("EUR_USD", "1.08990", "1.09000")
        states: list[OrderState] = []
        for _ in range(100):
            states = await event_states(redis_client, sub.client_order_id)
            if OrderState.FILLED in states:
                break
            await asyncio.sleep(0.05)
    assert accepted.status.value == "accepted", accepted
    assert states[-1] is OrderState.FILLED, states
    assert venue.received[sub.client_order_id] == 1
