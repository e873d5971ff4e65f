"""Conditional orders through a real worker on the local Binance exchange: a trailing sell
stop goes out as Binance's trailing STOP_LOSS (or TAKE_PROFIT, activated at its stopPrice),
follows a rising price, fires after a fall past its delta and its fill reaches the result
and the record; a market-if-touched buy fires at its stop; what Binance cannot take exactly
is refused before anything is sent."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.base import BrokerStatus
from executor.brokers.binance.broker import BinanceBroker
from producer.client import OrderClient
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    ResultStatus,
    Side,
    TrailingOffsetType,
    WireDecimal,
)
from tests.fakes.binance import broker, exchange

from .conftest import running, until
from .test_binance_worker import binance_settings
from .test_tracker import event_states, state_of

__all__ = ["broker", "exchange"]  # fixtures


def sent_for(server: BinanceExchangeServer, cid: str) -> dict[str, str]:
    """The parameters of the one POST /api/v3/order the exchange received for ``cid``."""
    sent = [r.params for r in server.orders_sent() if r.params["newClientOrderId"] == cid]
    assert len(sent) == 1, sent
    return {k: v for k, v in sent[0].items()
            if k not in ("timestamp", "signature", "recvWindow", "newOrderRespType")}


async def wait_state(r: aioredis.Redis, cid: str, state: str) -> None:
    async def reached() -> bool:
        return await state_of(r, cid) == state
    await until(reached, 10)


async def test_a_native_trailing_sell_stop_follows_the_price_and_fires_after_a_fall(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                 trailing_offset="150", trailing_offset_type="bps")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        assert sent_for(exchange, cid) == {
            "symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "0.01",
            "trailingDelta": "150", "newClientOrderId": cid}

        exchange.set_price("BTCUSDT", "51000")  # a new high: the trigger is 50235 now
        exchange.set_price("BTCUSDT", "50236")  # a fall short of 150 bips
        order = exchange.exchange.find({"symbol": "BTCUSDT", "origClientOrderId": cid})
        assert order.water == Decimal("51000") and order.status == "NEW"
        assert await state_of(redis_client, cid) == "accepted"

        exchange.set_price("BTCUSDT", "50235")  # 51000 * (1 - 0.015): fires, a market sell
        await wait_state(redis_client, cid, "filled")
        record = await client.order(cid)
        assert record is not None and record.state is OrderState.FILLED
        assert record.filled_quantity == Decimal("0.01")
        assert [f.price for f in record.fills] == [Decimal("50235")]
        assert record.spec.trailing_offset == Decimal("150")
    assert (await event_states(redis_client, cid))[-2:] == [OrderState.ACCEPTED,
                                                            OrderState.FILLED]


async def test_an_activation_price_is_a_take_profit_stop_price(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                 trailing_offset="1", trailing_offset_type="percent",
                                 activation_price="51000")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        sent = sent_for(exchange, cid)
        assert (sent["type"], sent["stopPrice"], sent["trailingDelta"]) == (
            "TAKE_PROFIT", "51000", "100")
        exchange.set_price("BTCUSDT", "49000")  # not active yet: a fall does nothing
        exchange.set_price("BTCUSDT", "52000")  # activates, the water mark
        exchange.set_price("BTCUSDT", "51481")
        assert await state_of(redis_client, cid) == "accepted"
        exchange.set_price("BTCUSDT", "51480")  # 52000 * 0.99
        await wait_state(redis_client, cid, "filled")
        record = await client.order(cid)
        assert record is not None and [f.price for f in record.fills] == [Decimal("51480")]


async def test_a_market_if_touched_buy_fires_at_its_stop(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "market_if_touched", "0.01",
                                 stop_price="49000")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        sent = sent_for(exchange, cid)
        assert (sent["type"], sent["side"], sent["stopPrice"]) == ("TAKE_PROFIT", "BUY",
                                                                   "49000")
        exchange.set_price("BTCUSDT", "49000.01")
        assert await state_of(redis_client, cid) == "accepted"
        exchange.set_price("BTCUSDT", "49000")  # touched
        await wait_state(redis_client, cid, "filled")
        record = await client.order(cid)
        assert record is not None and [f.price for f in record.fills] == [Decimal("49000")]


async def test_what_binance_cannot_take_exactly_is_emulated_and_sent_when_it_fires(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """A trail in price units, a fraction of a bip, a trailing limit: held by the worker's
    emulator (nothing at Binance), then sent as a plain MARKET or LIMIT order under the
    same client id when the ticker crosses the trigger. A trail past the symbol's
    TRAILING_DELTA is refused (emulating it would only hide the symbol's rule)."""
    async with running(binance_settings(redis_url, exchange)):
        by_price = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                      trailing_offset="50")  # price: the default
        half_bip = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                      trailing_offset="12.5", trailing_offset_type="bps")
        limit = await client.place("BTCUSDT", "sell", "trailing_stop_limit", "0.01",
                                   trailing_offset="100", trailing_offset_type="bps",
                                   limit_offset="10")
        too_far = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                     trailing_offset="25", trailing_offset_type="percent")
        for sub in (by_price, half_bip, limit):
            result = await client.wait_result(sub.request_id, 10)
            assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        result = await client.wait_result(too_far.request_id, 10)
        assert result.reason_code == "invalid", result
        assert result.reason is not None and "TRAILING_DELTA" in result.reason
        assert exchange.orders_sent() == []

        # From 50000: by_price triggers at 49950, half_bip at 49937.5, limit at 49500.
        exchange.set_price("BTCUSDT", "49950")
        await wait_state(redis_client, by_price.client_order_id, "filled")
        exchange.set_price("BTCUSDT", "49400")
        await wait_state(redis_client, half_bip.client_order_id, "filled")

        async def sent() -> bool:
            return len(exchange.orders_sent()) == 3
        await until(sent, 15)
    params = {r.params["newClientOrderId"]: r.params for r in exchange.orders_sent()}
    assert params[by_price.client_order_id]["type"] == "MARKET"
    assert params[half_bip.client_order_id]["type"] == "MARKET"
    sent_limit = params[limit.client_order_id]
    assert (sent_limit["type"], sent_limit["side"], Decimal(sent_limit["price"])) == (
        "LIMIT", "SELL", Decimal("49490"))  # trigger 49500 (100 bps), less limit_offset
    assert "trailingDelta" not in sent_limit
    record = await client.order(by_price.client_order_id)
    assert record is not None and [f.price for f in record.fills] == [Decimal("49950")]


async def test_the_reports_of_a_trailing_stop_untriggered_then_filled(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    """The new-order reply, a lookup while it trails and one after it fired: open, then
    filled with its fill (a fresh lookup by client id, as after a restart)."""
    order = OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY,
                      type=OrderType.TRAILING_STOP, quantity=WireDecimal("0.01"),
                      trailing_offset=WireDecimal("0.5"),
                      trailing_offset_type=TrailingOffsetType.PERCENT)
    assert broker.check(order) == order
    placed = await broker.submit("trail-buy-1", order)
    assert (placed.status, placed.filled_quantity, placed.fills) == (
        BrokerStatus.NEW, Decimal(0), [])
    exchange.set_price("BTCUSDT", "48000")  # a new low: the trigger is 48240
    exchange.set_price("BTCUSDT", "48239.99")
    found = await broker.get_order("trail-buy-1", "BTCUSDT")
    assert found.status is BrokerStatus.NEW
    exchange.set_price("BTCUSDT", "48240")  # 48000 * 1.005
    found = await broker.get_order("trail-buy-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED and found.filled_quantity == Decimal("0.01")
    assert [f.price for f in found.fills] == [Decimal("48240")]


async def test_an_orphan_trailing_stop_is_adopted_as_one(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    base = {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01", "trailingDelta": "200"}
    exchange.exchange.place({**base, "type": "TAKE_PROFIT", "stopPrice": "51000",
                             "newClientOrderId": "orphan-trail"})
    # Activated by a fall: no order of ours behaves so, it is reported only.
    exchange.exchange.place({**base, "type": "STOP_LOSS", "stopPrice": "49000",
                             "newClientOrderId": "orphan-odd"})
    async with running(binance_settings(redis_url, exchange, orphans="adopt")):
        await wait_state(redis_client, "orphan-trail", "accepted")
        record = await client.order("orphan-trail")
        assert record is not None and record.spec.type is OrderType.TRAILING_STOP
        spec = record.spec
        assert (spec.trailing_offset, spec.trailing_offset_type, spec.activation_price,
                spec.stop_price) == (200, TrailingOffsetType.BPS, 51000, None)
        exchange.set_price("BTCUSDT", "52000")  # activates
        exchange.set_price("BTCUSDT", "50960")  # 52000 * 0.98: fires
        await wait_state(redis_client, "orphan-trail", "filled")
    assert await state_of(redis_client, "orphan-odd") == ""


async def test_an_iceberg_goes_out_with_its_iceberg_qty_and_a_refused_one_sends_nothing(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "limit", "0.05", price="51000",
                                 display_quantity="0.01")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        assert sent_for(exchange, cid) == {
            "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "quantity": "0.05",
            "price": "51000", "timeInForce": "GTC", "icebergQty": "0.01",
            "newClientOrderId": cid}
        order = exchange.exchange.find({"symbol": "BTCUSDT", "origClientOrderId": cid})
        assert order.iceberg_qty == Decimal("0.01")
        record = await client.order(cid)
        assert record is not None and record.spec.display_quantity == Decimal("0.01")

        ioc = await client.place("BTCUSDT", "sell", "limit", "0.05", price="51000",
                                 display_quantity="0.01", time_in_force="ioc")
        parts = await client.place("BTCUSDT", "sell", "limit", "0.05", price="51000",
                                   display_quantity="0.004")  # 13 parts, the limit is 10
        for refused, field in ((ioc, "time_in_force"), (parts, "display_quantity")):
            result = await client.wait_result(refused.request_id, 10)
            assert result.reason_code == "invalid", result
            assert result.reason is not None and field in result.reason, result.reason
            assert await state_of(redis_client, refused.client_order_id) in ("", "rejected")
    assert [r.params["newClientOrderId"] for r in exchange.orders_sent()] == [cid]


async def test_the_emulator_prices_every_symbol_with_one_ticker_call(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """Held orders on two symbols, prices polled (the market stream off): each pass asks
    GET /api/v3/ticker/price once for every ticker (weight 4), never once per symbol
    (weight 2 each), and both fire on it."""
    async with running(binance_settings(redis_url, exchange, price_stream=False)):
        btc = await client.place("BTCUSDT", "sell", "trailing_stop", "0.01",
                                 trailing_offset="50")
        eth = await client.place("ETHUSDT", "sell", "trailing_stop", "0.1",
                                 trailing_offset="5")
        for sub in (btc, eth):
            assert (await client.wait_result(sub.request_id, 10)).emulated
        seen = len(exchange.log)
        await asyncio.sleep(2.5)  # a few price_cache_ms (1 s) of emulator passes
        tickers = [r for r in exchange.log[seen:] if r.path == "/api/v3/ticker/price"]
        assert tickers and all("symbol" not in r.params for r in tickers), tickers
        exchange.set_price("BTCUSDT", "49950")
        exchange.set_price("ETHUSDT", "2995")
        await wait_state(redis_client, btc.client_order_id, "filled")
        await wait_state(redis_client, eth.client_order_id, "filled")
