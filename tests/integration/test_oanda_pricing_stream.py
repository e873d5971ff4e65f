"""OANDA's pricing stream as the adapter's price source: a price set at the venue reaches
``reference_price`` without a poll (and a quiet instrument's stays current while the
heartbeats come), an emulated order triggers at once rather than when the cached price
ages out, a silent or dropped stream is reconnected while polling answers, a price that is
not tradeable is not taken, a new instrument joins the subscription, the token never
reaches the log, and ``pricing_stream = false`` polls as before."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.oanda.broker import OandaBroker
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, account_for, venue

from .conftest import eventually, running, until
from .test_oanda_worker import oanda_settings

__all__ = ["venue"]  # fixture
D = Decimal


async def start(server: OandaExchangeServer, **changes: Any) -> OandaBroker:
    server.heartbeat_ms = 50
    config: dict[str, Any] = {"stream_timeout_ms": 400, "price_cache_ms": 60_000, **changes}
    b = OandaBroker("oa", account_for(server, **config), metrics=Metrics())
    await b.start()
    return b


@pytest.fixture
async def broker(venue: OandaExchangeServer) -> AsyncIterator[OandaBroker]:
    b = await start(venue)
    yield b
    await b.close()


def gauge(b: OandaBroker, name: str) -> float | None:
    assert b.metrics is not None
    return b.metrics.registry.get_sample_value(name, {"account": "oa", "feed": "prices"})


async def streaming(b: OandaBroker, *instruments: str) -> None:
    """Until the stream vouches for a price of each instrument."""
    await eventually(lambda: all(b.pricing.current(i) is not None for i in instruments))


async def test_a_price_set_at_the_venue_reaches_the_adapter_without_a_poll(
        venue: OandaExchangeServer) -> None:
    # A cache of 200 ms: any price older than that would be polled again without the stream.
    b = await start(venue, price_cache_ms=200)
    try:
        assert await b.reference_price("EUR_USD") == D("1.10005")  # the first: polled
        assert venue.polls() == 1
        await streaming(b, "EUR_USD")
        assert gauge(b, "orderstream_broker_stream_up") == 1
        [subscribed] = [r for r in venue.log if r.name == "pricing_stream"]
        assert subscribed.query == {"instruments": "EUR_USD", "snapshot": "true"}
        assert subscribed.headers["Authorization"] == f"Bearer {TOKEN}"

        venue.set_price("EUR_USD", "1.10100", "1.10120")
        await eventually(lambda: b.pricing.current("EUR_USD") == D("1.10110"), 1)
        assert await b.reference_price("EUR_USD") == D("1.10110")
        # A quiet market: no PRICE for longer than the cache keeps one, but heartbeats.
        await asyncio.sleep(0.5)
        assert await b.reference_price("EUR_USD") == D("1.10110")
        assert venue.polls() == 1  # none after the first
    finally:
        await b.close()
    await eventually(lambda: venue.price_streams == [], 2)  # closed with the adapter


async def test_an_emulated_order_triggers_within_a_fraction_of_price_cache_ms(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    """A sell stop_limit held by the emulator fires on the streamed mid: well before a
    cached price (10 s here) would have been polled again."""
    venue.heartbeat_ms = 200
    async with running(oanda_settings(redis_url, venue, price_cache_ms=10_000)):
        placed = await client.place("EUR_USD", "sell", "stop_limit", "1000",
                                    stop_price="1.09", price="1.0895")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED and accepted.emulated, accepted
        await eventually(lambda: venue.price_streams == [frozenset({"EUR_USD"})], 5)
        await asyncio.sleep(0.3)  # the snapshot read, a pass or so of the emulator
        polls = venue.polls()
        venue.set_price("EUR_USD", "1.09000", "1.09020")  # the mid 1.0901: above it
        await asyncio.sleep(0.5)
        assert venue.orders_sent() == []
        moved_at = time.monotonic()
        venue.set_price("EUR_USD", "1.08990", "1.09010")  # the mid at 1.09: fired

        async def sent() -> bool:
            return len(venue.orders_sent()) == 1
        await until(sent, 10)
        elapsed = time.monotonic() - moved_at
        assert elapsed < 2.0, elapsed  # a fifth of price_cache_ms at most
        [body] = [r.body["order"] for r in venue.orders_sent()]
        assert (body["type"], body["units"], body["price"]) == ("LIMIT", "-1000", "1.08950")
        assert venue.polls() == polls  # the trigger and the release's risk check: streamed
        status = await client.order(placed.client_order_id)
        assert status is not None and status.state is not OrderState.REJECTED


async def test_a_silent_stream_is_reconnected_and_polling_answers_meanwhile(
        venue: OandaExchangeServer) -> None:
    b = await start(venue, price_cache_ms=50)
    try:
        await b.reference_price("EUR_USD")
        await streaming(b, "EUR_USD")
        venue.price_heartbeats = False  # the connection stays open and says nothing
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 0, 5)
        assert b.pricing.current("EUR_USD") is None
        # A move the dead stream does not tell: the poll does.
        venue.venue.prices["EUR_USD"] = (D("1.20000"), D("1.20020"))
        polls = venue.polls()
        await asyncio.sleep(0.06)  # past the cache
        assert await b.reference_price("EUR_USD") == D("1.20010")
        assert venue.polls() == polls + 1

        venue.price_heartbeats = True
        await eventually(lambda: gauge(b, "orderstream_broker_stream_up") == 1, 10)
        await streaming(b, "EUR_USD")
        assert b.pricing.connects >= 2
        assert (gauge(b, "orderstream_broker_stream_failures_total") or 0) >= 1
        polls = venue.polls()
        await asyncio.sleep(0.2)
        assert await b.reference_price("EUR_USD") == D("1.20010")  # the snapshot's
        assert venue.polls() == polls  # streamed again: no polls
    finally:
        await b.close()


async def test_a_dropped_stream_is_reconnected_with_the_same_instruments(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    await broker.reference_price("EUR_USD")
    await streaming(broker, "EUR_USD")
    await venue.drop_price_streams()
    await eventually(lambda: broker.pricing.connects == 2, 5)
    await streaming(broker, "EUR_USD")
    assert venue.price_streams == [frozenset({"EUR_USD"})]
    assert gauge(broker, "orderstream_broker_stream_failures_total") == 1
    assert broker.pricing.backoff.failures == 0  # it spoke again: reset


async def test_a_price_that_is_not_tradeable_is_not_used(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    await broker.reference_price("EUR_USD")
    await streaming(broker, "EUR_USD")
    venue.set_tradeable("EUR_USD", False)
    venue.set_price("EUR_USD", "1.30000", "1.30020")  # told, with tradeable false
    await eventually(lambda: broker.pricing.current("EUR_USD") is None, 2)
    await asyncio.sleep(0.1)
    assert broker.pricing.current("EUR_USD") is None
    # The last tradeable price, from the cache (60 s), not the halted one.
    assert await broker.reference_price("EUR_USD") == D("1.10005")
    assert venue.polls() == 1

    venue.set_tradeable("EUR_USD", True)
    await eventually(lambda: broker.pricing.current("EUR_USD") == D("1.30010"), 2)
    assert await broker.reference_price("EUR_USD") == D("1.30010")


async def test_a_new_instrument_is_added_to_the_subscription(
        broker: OandaBroker, venue: OandaExchangeServer) -> None:
    await broker.reference_price("EUR_USD")
    await streaming(broker, "EUR_USD")
    assert venue.price_streams == [frozenset({"EUR_USD"})]
    assert await broker.reference_price("USD_JPY") is not None  # its first: polled
    assert venue.polls() == 2
    await eventually(lambda: venue.price_streams == [frozenset({"EUR_USD", "USD_JPY"})], 5)
    await streaming(broker, "EUR_USD", "USD_JPY")
    assert [r.query["instruments"] for r in venue.log if r.name == "pricing_stream"] == [
        "EUR_USD", "EUR_USD,USD_JPY"]
    venue.set_price("USD_JPY", "157.100", "157.120")
    await eventually(lambda: broker.pricing.current("USD_JPY") == D("157.110"), 2)
    assert await broker.reference_price("USD_JPY") == D("157.110")
    assert await broker.reference_price("GBP_USD") is None  # not this account's
    assert broker.pricing.instruments == {"EUR_USD", "USD_JPY"}
    assert venue.polls() == 2
    # A restart for a new instrument is no loss.
    assert gauge(broker, "orderstream_broker_stream_failures_total") in (None, 0)


async def test_the_token_never_reaches_the_log(
        venue: OandaExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        b = await start(venue)
        try:
            await b.reference_price("EUR_USD")
            await streaming(b, "EUR_USD")
            b.pricing.health.repeat_s = 0  # every failure told
            venue.token = "another-token"  # ours is refused from now on: 401
            await venue.drop_price_streams()
            await eventually(
                lambda: (gauge(b, "orderstream_broker_stream_failures_total") or 0) >= 2, 10)
        finally:
            await b.close()
    lost = [r.getMessage() for r in caplog.records if "pricing stream" in r.getMessage()]
    assert any("oanda HTTP 401" in m and "Insufficient authorization" in m for m in lost), lost
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + str(record.args)
        assert TOKEN not in text, record
        if record.name.startswith("executor."):  # (the fake's access log names paths)
            assert ACCOUNT_ID not in text, record  # nor the URL, which names the account
    assert TOKEN not in repr(b)


async def test_the_fake_answers_a_bad_stream_request_as_oanda_does(
        venue: OandaExchangeServer) -> None:
    url = f"{venue.url}/v3/accounts/{ACCOUNT_ID}/pricing/stream"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params={"instruments": "EUR_USD,NOT_ONE"},
                               headers=auth) as reply:
            assert reply.status == 400
            assert await reply.json() == {
                "errorMessage": "Invalid value specified for 'instruments'"}
        async with session.get(url, params={"instruments": "EUR_USD"},
                               headers={"Authorization": "Bearer wrong"}) as reply:
            assert reply.status == 401
            assert await reply.json() == {
                "errorMessage": "Insufficient authorization to perform request."}
        async with session.get(url, params={"instruments": "EUR_USD"},
                               headers=auth) as reply:
            assert reply.status == 200
            first = await reply.content.readline()
            assert b'"type":"PRICE"' in first and b'"instrument":"EUR_USD"' in first
            assert b'"bids":[{"price":"1.10000"' in first


async def test_with_the_stream_off_prices_are_polled(venue: OandaExchangeServer) -> None:
    b = await start(venue, pricing_stream=False, price_cache_ms=50)
    try:
        assert await b.reference_price("EUR_USD") == D("1.10005")
        await asyncio.sleep(0.2)
        assert venue.price_streams == []
        venue.set_price("EUR_USD", "1.10100", "1.10120")
        assert await b.reference_price("EUR_USD") == D("1.10110")
        assert venue.polls() == 2
        assert [r for r in venue.log if r.name == "pricing_stream"] == []
    finally:
        await b.close()
