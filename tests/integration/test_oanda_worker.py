"""A whole worker trading on the local OANDA venue through the real pipeline: a market
order, a limit order and its cancel each get one result, and the venue saw each client id
once; a send whose answer was lost is found by lookup, never sent again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from devtools.oanda_exchange import OandaExchangeServer
from executor.config import Settings
from producer.client import OrderClient
from producer.contract import Algo, AlgoStrategy, OrderState, ResultStatus
from tests.fakes.oanda import account_for, venue

from .conftest import replace, results_of, running, settings_for
from .test_tracker import event_states

__all__ = ["venue"]  # fixture


def oanda_settings(redis_url: str, server: OandaExchangeServer, **account: Any) -> Settings:
    base = settings_for(redis_url, track_interval_ms=100)
    return replace(base, accounts={"default": account_for(server, **account)})


async def test_market_limit_and_cancel_through_the_pipeline(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    async with running(oanda_settings(redis_url, venue)):
        market = await client.place("EUR_USD", "buy", "market", "1000")
        filled = await client.wait_result(market.request_id, 10)
        limit = await client.place("EUR_USD", "sell", "limit", "2000", price="1.2")
        accepted = await client.wait_result(limit.request_id, 10)
        cancel = await client.cancel(limit.client_order_id)
        cancelled = await client.wait_result(cancel.request_id, 10)

    assert filled.status is ResultStatus.FILLED, filled
    assert filled.filled_quantity == Decimal(1000)
    assert filled.average_price == Decimal("1.10010")  # the ask
    assert accepted.status is ResultStatus.ACCEPTED, accepted
    assert cancelled.status is ResultStatus.CANCELLED, cancelled
    for sub, status in ((market, ResultStatus.FILLED), (limit, ResultStatus.ACCEPTED),
                        (cancel, ResultStatus.CANCELLED)):
        assert await results_of(redis_client, sub.request_id) == [status]  # one result each
    for sub in (market, limit):
        assert venue.received[sub.client_order_id] == 1
        assert venue.orders_for(sub.client_order_id) == 1
    sent = {r.body["order"]["clientExtensions"]["id"]: r.body["order"]
            for r in venue.orders_sent()}
    assert sent[limit.client_order_id]["units"] == "-2000"
    assert sent[limit.client_order_id]["price"] == "1.20000"
    cancels = [r.path for r in venue.log if r.name == "cancel"]
    assert cancels == [f"/v3/accounts/{venue.account_id}/orders/@{limit.client_order_id}"
                       "/cancel"]
    assert await event_states(redis_client, limit.client_order_id) == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
        OrderState.ACCEPTED, OrderState.PENDING_CANCEL, OrderState.CANCELLED]


async def test_a_5xx_after_the_order_was_stored_is_resolved_without_a_second_order(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    venue.inject("create", 503, after=True)
    async with running(oanda_settings(redis_url, venue)):
        sub = await client.place("EUR_USD", "buy", "market", "1000")
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED, result
    assert venue.orders_for(sub.client_order_id) == 1
    assert venue.received[sub.client_order_id] == 1  # looked up, never sent again


async def test_an_order_off_the_instrument_rules_never_reaches_oanda(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    async with running(oanda_settings(redis_url, venue)):
        sub = await client.place("EUR_USD", "buy", "limit", "1000", price="1.123456")
        result = await client.wait_result(sub.request_id, 10)
    assert result.reason_code == "invalid", result
    assert result.reason is not None and "displayPrecision 5" in result.reason
    assert venue.orders_sent() == []


async def test_a_participation_cap_is_refused_where_the_broker_reports_no_volume(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    """OANDA's candles count price ticks, not units traded: no volume to cap against."""
    algo = Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=2,
                max_participation=Decimal("0.1"))
    async with running(oanda_settings(redis_url, venue)):
        sub = await client.place("EUR_USD", "buy", "market", "1000", algo=algo,
                                 client_order_id="CAP1")
        result = await client.wait_result(sub.request_id, 10)
        assert await client.order("CAP1") is None
    assert result.reason_code == "invalid", result
    assert result.reason is not None and "algo.max_participation" in result.reason
    assert "does not report" in result.reason
    assert venue.orders_sent() == []
