"""The Binance user data stream through python-binance's socket manager: partial fills as
they happen, a gap healed by a REST lookup, and a broken stream reported so the tracker
can poll and reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.base import BrokerStatus, FeedBroken, RetryableError
from executor.brokers.binance.broker import BinanceBroker
from executor.infra.metrics import Metrics
from producer.contract import OrderSpec, OrderType, Side, WireDecimal
from tests.fakes.binance import account_for, broker, exchange
from tests.fakes.feeds import Feed, following

__all__ = ["broker", "exchange"]  # fixtures


@contextlib.asynccontextmanager
async def feed(b: BinanceBroker, exchange: BinanceExchangeServer) -> AsyncIterator[Feed]:
    subscribed = len(exchange.exchange.listeners)
    async with following(b, lambda: len(exchange.exchange.listeners) > subscribed) as f:
        yield f


def order(type: OrderType, qty: str, price: str | None = None) -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY, type=type,
                     quantity=WireDecimal(qty),
                     price=None if price is None else WireDecimal(price))


async def test_partial_fills_of_a_market_order_arrive_one_by_one(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    exchange.exchange.market_fill_parts = 3
    other = BinanceBroker("bn", account_for(exchange))  # another worker sends it
    await other.start()
    async with feed(broker, exchange) as f:
        await other.submit("s-mkt", order(OrderType.MARKET, "0.03"))
        await other.close()
        new = await f.next()
        assert (new.client_order_id, new.status, new.fills) == ("s-mkt", BrokerStatus.NEW, [])
        fills = [await f.next() for _ in range(3)]
    assert [r.status for r in fills] == [BrokerStatus.PARTIALLY_FILLED,
                                         BrokerStatus.PARTIALLY_FILLED, BrokerStatus.FILLED]
    assert [r.filled_quantity for r in fills] == [Decimal("0.01"), Decimal("0.02"),
                                                  Decimal("0.03")]
    assert all(len(r.fills) == 1 for r in fills)
    assert len({r.fills[0].fill_id for r in fills}) == 3


async def test_events_older_than_the_reply_are_dropped(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    """The sender's HTTP reply (with every fill) can overtake the order's events; those
    carry nothing new and are not pushed again."""
    exchange.exchange.market_fill_parts = 2
    async with feed(broker, exchange) as f:
        done = await broker.submit("s-old", order(OrderType.MARKET, "0.02"))
        assert done.status is BrokerStatus.FILLED and len(done.fills) == 2
        await broker.submit("s-after", order(OrderType.LIMIT, "0.01", "40000"))
        first = await f.next()
    assert first.client_order_id == "s-after"


async def test_a_resting_order_fills_in_parts_then_at_the_price(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    async with feed(broker, exchange) as f:
        await broker.submit("s-lim", order(OrderType.LIMIT, "0.05", "49000"))
        assert (await f.next()).status is BrokerStatus.NEW
        exchange.exchange.fill("BTCUSDT", "s-lim", Decimal("0.02"))
        part = await f.next()
        assert part.status is BrokerStatus.PARTIALLY_FILLED
        assert [(x.quantity, x.price, x.liquidity) for x in part.fills] == [
            (Decimal("0.02"), Decimal(49000), "maker")]
        exchange.set_price("BTCUSDT", "48999")
        done = await f.next()
    assert done.status is BrokerStatus.FILLED
    assert done.filled_quantity == Decimal("0.05")
    assert [x.quantity for x in done.fills] == [Decimal("0.03")]


async def test_a_missed_fill_is_healed_by_a_rest_lookup(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    async with feed(broker, exchange) as f:
        await broker.submit("s-gap", order(OrderType.LIMIT, "0.05", "49000"))
        assert (await f.next()).status is BrokerStatus.NEW
        exchange.stream_enabled = False  # events are lost
        exchange.exchange.fill("BTCUSDT", "s-gap", Decimal("0.01"))
        exchange.stream_enabled = True
        exchange.exchange.fill("BTCUSDT", "s-gap", Decimal("0.01"))
        healed = await f.next()
    # The event's fill alone would skip one: the report is the REST one, with both.
    assert healed.filled_quantity == Decimal("0.02")
    assert [x.quantity for x in healed.fills] == [Decimal("0.01"), Decimal("0.01")]
    assert any(r.path == "/api/v3/myTrades" for r in exchange.log)


async def test_an_unreadable_event_is_skipped(broker: BinanceBroker,
                                              exchange: BinanceExchangeServer) -> None:
    async with feed(broker, exchange) as f:
        exchange.exchange._emit({"e": "executionReport", "s": "BTCUSDT"})  # no fields
        await broker.submit("s-next", order(OrderType.LIMIT, "0.01", "40000"))
        assert (await f.next()).client_order_id == "s-next"
        assert f.error is None


async def test_a_dropped_stream_raises_and_a_new_subscription_works(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    async with feed(broker, exchange) as f:
        await exchange.drop_streams()
        await asyncio.wait_for(f.task, 15)
        assert isinstance(f.error, RetryableError)
    async with feed(broker, exchange) as again:
        await broker.submit("s-again", order(OrderType.LIMIT, "0.01", "40000"))
        assert (await again.next()).client_order_id == "s-again"


async def test_a_stream_that_cannot_open_raises_retryable(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    exchange.stream_enabled = False
    with pytest.raises(RetryableError, match="cannot subscribe"):
        async for _ in broker.updates():
            pass


async def test_without_a_stream_the_loss_is_logged_once_and_every_attempt_counted(
        exchange: BinanceExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    """A server without the WebSocket API (404), asked for the stream every 0.1 s for two
    seconds, as a tracker polling at that pace would: one line, not two ERRORs a try."""
    exchange.stream_enabled, exchange.stream_refused_status = False, 404
    metrics = Metrics()
    b = BinanceBroker("bn", account_for(exchange), metrics=metrics)
    await b.start()
    attempts = 0
    try:
        with caplog.at_level(logging.DEBUG):
            caplog.clear()
            for _ in range(20):
                with pytest.raises(FeedBroken, match="404") as caught:
                    async for _ in b.updates():
                        pass
                assert caught.value.logged  # told already: the tracker need not
                attempts += 1
                await asyncio.sleep(0.1)
            told = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.levelname for r in told] == ["WARNING"], [r.getMessage() for r in told]
            assert "user data stream lost" in told[0].getMessage()

            def sample(name: str) -> float | None:
                return metrics.registry.get_sample_value(name, {"account": "bn", "feed": "orders"})
            assert sample("orderstream_broker_stream_failures_total") == attempts == 20
            assert sample("orderstream_broker_stream_up") == 0
            exchange.stream_enabled = True
            async with feed(b, exchange) as f:
                await b.submit("s-back", order(OrderType.LIMIT, "0.01", "40000"))
                assert (await f.next()).client_order_id == "s-back"
                assert sample("orderstream_broker_stream_up") == 1
        assert any("user data stream back" in r.getMessage() for r in caplog.records)
    finally:
        await b.close()
