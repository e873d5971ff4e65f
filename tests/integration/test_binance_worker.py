"""Whole workers trading on the local Binance exchange through python-binance: an unknown
outcome is resolved by a lookup without a second order, fills pushed by the user data stream
reach the order and the position, polling takes over while the stream is down, and the
reconciliation at start reports, adopts or cancels orders we have no record of."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.model.positions import decode_position
from producer.client import OrderClient
from producer.contract import Algo, AlgoStrategy, OrderState, ResultStatus
from producer.keys import Keys
from tests.fakes.binance import account_for, exchange

from .conftest import replace, running, settings_for, until
from .test_tracker import event_states, state_of

__all__ = ["exchange"]  # fixture

K = Keys()


def binance_settings(redis_url: str, server: BinanceExchangeServer, *,
                     track_interval_ms: int = 100, **account: Any) -> Settings:
    base = settings_for(redis_url, track_interval_ms=track_interval_ms)
    return replace(base, accounts={"default": account_for(server, **account)})


async def test_unknown_outcome_is_resolved_by_lookup_without_a_second_order(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    exchange.inject("POST", "/api/v3/order", 503, after=True)  # stored, then "503"
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED, result
    assert result.filled_quantity == Decimal("0.010")
    assert result.broker_order_id is not None and result.broker_order_id.isdigit()
    assert exchange.orders_for(sub.client_order_id) == 1
    assert exchange.received[sub.client_order_id] == 1  # looked up, never sent again


async def test_5xx_before_the_order_was_stored_is_never_sent_again(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """Binance's "no such order" is not definitive (its backend may still execute a request
    it answered 5xx), so the order is never sent again: recorded submitted, answered so,
    followed by client id, and ended rejected (not_found) once the broker has not shown it
    for unknown_resolve_ms."""
    exchange.inject("POST", "/api/v3/order", 502)  # refused, nothing stored
    settings = binance_settings(redis_url, exchange)
    settings.worker.unknown_resolve_ms = 1_500
    async with running(settings):
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        result = await client.wait_result(sub.request_id, 30)
        assert result.status is ResultStatus.SUBMITTED, result
        assert result.order_state is OrderState.SUBMITTED and result.reason_code is None
        assert result.reason is not None and "never sent again" in result.reason
        async def rejected() -> bool:
            return await state_of(redis_client, sub.client_order_id) == "rejected"
        await until(rejected, 15)
    assert exchange.orders_for(sub.client_order_id) == 0
    sent = [r for r in exchange.orders_sent()
            if r.params["newClientOrderId"] == sub.client_order_id]
    assert len(sent) == 1
    states = await event_states(redis_client, sub.client_order_id)
    assert states[-2:] == [OrderState.SUBMITTED, OrderState.REJECTED]


async def test_a_filter_refusal_never_reaches_binance(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.000015", price="50000")
        result = await client.wait_result(sub.request_id, 10)
    assert result.reason_code == "invalid"
    assert result.reason is not None and "LOT_SIZE" in result.reason
    assert "step 0.00001" in result.reason
    assert exchange.orders_sent() == []


async def test_round_quantity_records_and_sends_the_rounded_quantity(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange, round_quantity=True)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.012349")
        result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.FILLED, result
    assert result.quantity == Decimal("0.01234") == result.filled_quantity
    assert exchange.orders_sent()[-1].params["quantity"] == "0.01234"


async def test_a_market_order_by_quote_amount(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    exchange.exchange.market_fill_parts = 2
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "market", None, quote_quantity="100")
        result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.FILLED, result
    assert result.quantity is None
    assert result.filled_quantity == Decimal("0.002") and len(result.fills) == 2
    sent = exchange.orders_sent()[-1].params
    assert (sent["quoteOrderQty"], "quantity" in sent) == ("100", False)
    assert (await event_states(redis_client, sub.client_order_id))[-3:] == [
        OrderState.PARTIALLY_FILLED, OrderState.PARTIALLY_FILLED, OrderState.FILLED]


async def test_partial_fills_from_the_stream_update_the_order_and_the_position(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    # Polling once a minute: within the test only the stream can tell the fills.
    async with running(binance_settings(redis_url, exchange, track_interval_ms=60_000)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.050", price="49000")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        requests_before = len(exchange.log)
        exchange.exchange.fill("BTCUSDT", cid, Decimal("0.020"))
        await until(lambda: _is(redis_client, cid, "partially_filled"))
        exchange.set_price("BTCUSDT", "48990")
        await until(lambda: _is(redis_client, cid, "filled"))
        # The stream told it: no order lookups.
        assert not [r for r in exchange.log[requests_before:] if r.path == "/api/v3/order"]

        # The exchange charges a buy's fee in the base asset: the position holds the rest.
        record = await client.order(cid)
        assert record is not None and record.commissions is not None
        held = Decimal("0.05") - record.commissions.get("BTC", Decimal(0))

        async def projected() -> bool:
            raw = await redis_client.hget(K.positions, "default:BTCUSDT")
            return raw is not None and decode_position(raw).quantity == held
        await until(projected)
    assert await event_states(redis_client, cid) == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
        OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED, OrderState.FILLED]


async def _is(r: aioredis.Redis, cid: str, state: str) -> bool:
    return await state_of(r, cid) == state


async def test_while_the_stream_is_down_polling_records_the_fills(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    exchange.stream_enabled = False  # the WebSocket API refuses every connection
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "limit", "0.010", price="51000")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
        exchange.set_price("BTCUSDT", "51000")
        await until(lambda: _is(redis_client, sub.client_order_id, "filled"))
    looked_up = [r for r in exchange.log if r.path == "/api/v3/order" and r.method == "GET"]
    assert looked_up


async def test_a_dropped_stream_is_reconnected(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)) as worker:
        sub = await client.place("BTCUSDT", "buy", "limit", "0.010", price="49000")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
        await until(lambda: _subscribed(exchange, 1))
        await exchange.drop_streams()
        await until(lambda: _subscribed(exchange, 1))  # a new subscription
        assert "default" in worker.tracker.live_feeds
        exchange.set_price("BTCUSDT", "48000")
        await until(lambda: _is(redis_client, sub.client_order_id, "filled"))


async def _subscribed(server: BinanceExchangeServer, n: int) -> bool:
    await asyncio.sleep(0)
    return len(server.exchange.listeners) == n


async def test_an_orphan_placed_while_the_worker_runs_is_found_by_a_later_pass(
        redis_url: str, client: OrderClient, exchange: BinanceExchangeServer) -> None:
    """Someone places an order on the account by hand while the worker runs: a later
    reconciliation finds it, reports it once however many passes see it, and our own
    resting order is never taken for one."""
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.01", "price": "45000"}
    settings = binance_settings(redis_url, exchange, reconcile_interval_ms=100)
    async with running(settings) as worker:
        ours = await client.place("BTCUSDT", "buy", "limit", "0.01", price="45000")
        assert (await client.wait_result(ours.request_id, 10)).order_state.value == "accepted"

        def reported() -> float:
            return worker.metrics.registry.get_sample_value(
                "orderstream_broker_orphans_total",
                {"account": "default", "action": "report"}) or 0.0

        await asyncio.sleep(0.3)  # passes that see only our own order
        assert reported() == 0
        exchange.exchange.place({**params, "newClientOrderId": "by-hand-1"})

        async def found() -> bool:
            return reported() == 1

        await until(found)
        await asyncio.sleep(0.4)  # more passes, which see it again
        assert reported() == 1
    settings = binance_settings(redis_url, exchange, reconcile_interval_ms=100,
                                orphans="cancel")
    async with running(settings):
        exchange.exchange.place({**params, "newClientOrderId": "by-hand-2"})

        async def cancelled() -> bool:
            open_ids = {o["clientOrderId"] for o in exchange.exchange.open_orders("BTCUSDT")}
            return not open_ids & {"by-hand-1", "by-hand-2"}

        await until(cancelled)
        open_ids = {o["clientOrderId"] for o in exchange.exchange.open_orders("BTCUSDT")}
        assert open_ids == {ours.client_order_id}


async def test_orphans_are_reported_adopted_or_cancelled_at_start(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer) -> None:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.01", "price": "45000"}
    for cid in ("orphan-1", "orphan-2", "orphan-3"):
        exchange.exchange.place({**params, "newClientOrderId": cid})

    async with running(binance_settings(redis_url, exchange)) as worker:
        counted = worker.metrics.registry.get_sample_value(
            "orderstream_broker_orphans_total", {"account": "default", "action": "report"})
        assert counted == 3
    assert await redis_client.exists(K.order("orphan-1")) == 0  # reported only

    async with running(binance_settings(redis_url, exchange, orphans="adopt")):
        await until(lambda: _is(redis_client, "orphan-1", "accepted"))
        exchange.set_price("BTCUSDT", "44000")  # all three fill
        await until(lambda: _is(redis_client, "orphan-1", "filled"))

    exchange.set_price("BTCUSDT", "50000")
    exchange.exchange.place({**params, "newClientOrderId": "orphan-4"})
    async with running(binance_settings(redis_url, exchange, orphans="cancel")) as worker:
        counted = worker.metrics.registry.get_sample_value(
            "orderstream_broker_orphans_total", {"account": "default", "action": "cancel"})
        assert counted == 1
    assert exchange.exchange.open_orders("BTCUSDT") == []
    assert await redis_client.exists(K.order("orphan-4")) == 0


async def test_balances_short_of_our_positions_are_reported_at_start(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    from executor.model.positions import Position, position_key
    from producer.contract import encode

    # We recorded more BTC than the exchange holds (100 BTC): drift, reported at start.
    held = Position(account="default", symbol="BTCUSDT", quantity=Decimal("150"))
    await redis_client.hset(K.positions, position_key("default", "BTCUSDT"), encode(held))
    async with running(binance_settings(redis_url, exchange)) as worker:
        adapter = unwrap(worker.brokers["default"])
        assert isinstance(adapter, BinanceBroker) and adapter.drift is not None
        [short] = adapter.drift.shortfalls
        assert (short.asset, short.held, short.recorded) == ("BTC", Decimal("100"),
                                                             Decimal("150"))
    assert any("holds 100.00000000 BTC, but our positions in BTCUSDT add up to 150"
               in r.getMessage()
               for r in caplog.records)


async def test_a_worker_without_a_user_data_stream_says_so_once(
        redis_url: str, exchange: BinanceExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The WebSocket answers 404: the broker tells the loss once and the tracker, which asks
    for the feed again every pass, does not repeat it at every attempt."""
    exchange.stream_enabled, exchange.stream_refused_status = False, 404
    with caplog.at_level(logging.DEBUG):
        async with running(binance_settings(redis_url, exchange)):
            await asyncio.sleep(2.0)
    told = [r for r in caplog.records if r.levelno >= logging.WARNING
            and "stream" in r.getMessage()]
    assert [r.name for r in told] == ["executor.brokers.binance.stream"], [
        (r.name, r.getMessage()) for r in told]
    tries = [r for r in caplog.records if "push feed of default broke" in r.getMessage()]
    assert len(tries) >= 5 and all(r.levelno == logging.DEBUG for r in tries)


async def test_a_capped_twap_follows_the_volume_binance_reports(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    """Others trade 0.002 BTC a second; the TWAP takes at most a quarter of the volume
    Binance's one-second klines report (ours included), where its schedule alone would buy
    0.01 in 4 s: the cap holds it to about 0.0027, and it expires with the rest."""
    exchange.set_volume("BTCUSDT", "0.002")
    algo = Algo(strategy=AlgoStrategy.TWAP, horizon_ms=4_000, slices=4,
                max_participation=Decimal("0.25"))
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.01", client_order_id="BV1",
                                 algo=algo)
        result = await client.wait_result(sub.request_id, 20)
    klines = [r for r in exchange.log if r.path == "/api/v3/klines"]
    assert result.status is ResultStatus.EXPIRED, result
    # Ours over everyone's (theirs plus ours) stays within the cap: ours <= theirs / 3.
    assert Decimal("0.0005") <= result.filled_quantity <= Decimal("0.002") * 5 / 3
    assert 2 <= len(klines) <= 8  # asked about once a second, not at every pass
    assert all(r.params["interval"] == "1s" for r in klines)
