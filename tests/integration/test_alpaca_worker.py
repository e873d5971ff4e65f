"""A whole worker trading on the local Alpaca API through the Alpaca adapter: orders placed,
filled and cancelled through the real pipeline, one result per request, each client id
received by Alpaca once; a market order valued by risk at the latest quote's mid (the
market data API) and filled."""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from tests.fakes.alpaca import alpaca, alpaca_account

from .conftest import replace, running, settings_for, until
from .test_tracker import event_states, state_of

__all__ = ["alpaca"]  # fixture


async def test_orders_fill_rest_and_cancel_through_the_pipeline_once_each(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    settings = replace(settings_for(redis_url, track_interval_ms=100),
                       accounts={"default": alpaca_account(alpaca)})
    async with running(settings):
        # A stop buy whose stop the price has passed: triggered at once, filled at market.
        stop = await client.place("AAPL", "buy", "stop", "3", stop_price="185")
        limit = await client.place("AAPL", "buy", "limit", "2", price="150")
        market = await client.place("AAPL", "buy", "market", "1")
        stopped = await client.wait_result(stop.request_id, 15)
        rested = await client.wait_result(limit.request_id, 15)
        marketed = await client.wait_result(market.request_id, 15)

        cancel = await client.cancel(limit.client_order_id)
        cancelled = await client.wait_result(cancel.request_id, 15)

        # A late fill of a resting order reaches it by the tracker's lookups.
        late = await client.place("AAPL", "sell", "limit", "1", price="200")
        assert (await client.wait_result(late.request_id, 15)).status is (
            ResultStatus.ACCEPTED)
        alpaca.set_price("AAPL", "201")

        async def filled() -> bool:
            return await state_of(redis_client, late.client_order_id) == "filled"
        await until(filled, 15)

    assert stopped.status is ResultStatus.FILLED, stopped
    assert stopped.filled_quantity == 3 and stopped.average_price == Decimal("190")
    assert stopped.broker_order_id is not None and len(stopped.broker_order_id) == 36
    assert rested.status is ResultStatus.ACCEPTED, rested
    assert cancelled.status is ResultStatus.CANCELLED, cancelled
    assert marketed.status is ResultStatus.FILLED, marketed
    assert marketed.filled_quantity == 1 and marketed.average_price == Decimal("190")
    quotes = [r for r in alpaca.log if r.path == "/v2/stocks/{symbol}/quotes/latest"]
    assert quotes and all(r.query == {"feed": "iex"} for r in quotes)

    for sub in (stop, limit, market, late):
        assert alpaca.received[sub.client_order_id] == 1, sub
        assert alpaca.orders_for(sub.client_order_id) == 1
    assert len(alpaca.orders_sent()) == 4
    # One result per request.
    results = await redis_client.xrange(client.keys.completed) + await redis_client.xrange(
        client.keys.failed)
    assert len(results) == 5
    assert await event_states(redis_client, limit.client_order_id) == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
        OrderState.ACCEPTED, OrderState.PENDING_CANCEL, OrderState.CANCELLED]
    assert (await event_states(redis_client, late.client_order_id))[-1] is OrderState.FILLED
