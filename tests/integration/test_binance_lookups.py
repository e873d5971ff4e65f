"""Looking a Binance order up (the order, then its trades) through the real python-binance
client against the local exchange: an order that trades between the two reads is read
again rather than counted as a broker failure, an order with more fills than one page of
myTrades is read page by page, and an order answered -1007 can appear seconds later."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.base import BrokerStatus, OrderNotFound, PermanentError, UnknownOutcome
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.circuit import CircuitBroker
from executor.safety.breaker import Breaker, BreakerSettings, CircuitState
from producer.client import OrderClient
from producer.contract import OrderSpec, OrderType, ReasonCode, ResultStatus, Side, WireDecimal
from producer.keys import Keys
from tests.fakes.binance import broker, exchange

from .conftest import replace, running
from .test_binance_worker import binance_settings, until

__all__ = ["broker", "exchange"]  # fixtures

D = WireDecimal
# Opens after three failures in a row, as the issue saw it.
TIGHT = BreakerSettings(consecutive_failures=3, window_ms=60_000, min_calls=10,
                        error_rate_percent=50, cooldown_ms=60_000)


def limit_buy(quantity: str = "0.010", price: str = "49000") -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=D(quantity), price=D(price))


def trades_between_reads(exchange: BinanceExchangeServer, cid: str, times: int) -> None:
    """Each of the next ``times`` reads of an order fills 0.001 more of ``cid`` right after
    Binance answered it: the trades read next show more than the order did."""
    def fill(_: dict[str, str]) -> None:
        exchange.exchange.fill("BTCUSDT", cid, Decimal("0.001"))
    exchange.after("GET", "/api/v3/order", fill, times=times)


async def test_an_order_that_trades_between_its_two_reads_is_read_again(
        exchange: BinanceExchangeServer, broker: BinanceBroker,
        redis_client: aioredis.Redis) -> None:
    breaker = Breaker(redis_client, Keys(), TIGHT)
    guarded = CircuitBroker(broker, breaker)
    await guarded.submit("moving-1", limit_buy())
    exchange.exchange.fill("BTCUSDT", "moving-1", Decimal("0.002"))
    for n in range(4):  # four such lookups opened the breaker before
        trades_between_reads(exchange, "moving-1", 1)
        found = await guarded.get_order("moving-1", "BTCUSDT")
        assert found.status is BrokerStatus.PARTIALLY_FILLED
        # The report is one consistent read: its fills add up to its filled quantity, which
        # includes the fill that happened between the first two reads.
        assert found.filled_quantity == Decimal("0.003") + Decimal("0.001") * n
        assert sum(f.quantity for f in found.fills) == found.filled_quantity
    verdict = await breaker.allow("bn")
    assert verdict.state is CircuitState.CLOSED and verdict.allowed
    reads = [r for r in exchange.log if r.path == "/api/v3/order" and r.method == "GET"]
    assert len(reads) == 8  # each lookup read the order twice


async def test_an_order_that_keeps_trading_is_left_for_later_without_opening_the_breaker(
        exchange: BinanceExchangeServer, broker: BinanceBroker,
        redis_client: aioredis.Redis) -> None:
    breaker = Breaker(redis_client, Keys(), TIGHT)
    guarded = CircuitBroker(broker, breaker)
    await guarded.submit("busy-1", limit_buy("0.100"))
    exchange.exchange.fill("BTCUSDT", "busy-1", Decimal("0.001"))
    for _ in range(4):
        trades_between_reads(exchange, "busy-1", 3)  # every read of the lookup
        try:
            await guarded.get_order("busy-1", "BTCUSDT")
        except Exception as exc:
            assert type(exc).__name__ == "InconsistentRead", exc
        else:
            raise AssertionError("the reads never agreed: no report can be made of them")
    assert (await breaker.allow("bn")).state is CircuitState.CLOSED


async def test_a_worker_whose_lookups_see_orders_trade_keeps_taking_orders(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    exchange.stream_enabled = False  # the tracker looks the order up every pass
    async with running(replace(binance_settings(redis_url, exchange), breaker=TIGHT)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.010", price="49000")
        first = await client.wait_result(sub.request_id, 10)
        assert first.status is ResultStatus.ACCEPTED, first
        cid = sub.client_order_id
        assert cid is not None
        # The next four reads of it each see it trade right after they were answered.
        hook = exchange.after("GET", "/api/v3/order", _filler(exchange, cid), times=4)

        async def moved() -> bool:
            return hook.times == 0
        await until(moved)
        market = await client.place("BTCUSDT", "buy", "market", "0.001")
        result = await client.wait_result(market.request_id, 10)
    assert result.reason_code != ReasonCode.CIRCUIT_OPEN, result
    assert result.status is ResultStatus.FILLED, result


def _filler(exchange: BinanceExchangeServer, cid: str) -> Any:
    def fill(_: dict[str, str]) -> None:
        exchange.exchange.fill("BTCUSDT", cid, Decimal("0.001"))
    return fill


async def test_an_order_with_more_fills_than_one_page_of_trades_resolves(
        exchange: BinanceExchangeServer, broker: BinanceBroker) -> None:
    exchange.exchange.market_fill_parts = 1500  # 0.015 BTC in fills of one step each
    order = OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                      quantity=D("0.015"))
    await broker.submit("many-1", order)
    found = await broker.get_order("many-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED
    assert len(found.fills) == 1500 == len({f.fill_id for f in found.fills})
    assert sum(f.quantity for f in found.fills) == found.filled_quantity == Decimal("0.015")
    pages = [r.params for r in exchange.log if r.path == "/api/v3/myTrades"]
    assert [(p["limit"], p["fromId"]) for p in pages][:1] == [("1000", "0")]
    assert len(pages) == 2  # the first full page of 1000, then the other 500


async def test_trades_are_read_to_the_end_when_the_server_pages_by_fewer(
        exchange: BinanceExchangeServer, broker: BinanceBroker) -> None:
    exchange.exchange.market_fill_parts = 25
    exchange.exchange.trades_page_max = 10
    order = OrderSpec(account="bn", symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET,
                      quantity=D("0.00025"))
    await broker.submit("pages-1", order)
    found = await broker.get_order("pages-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED and len(found.fills) == 25
    assert len([r for r in exchange.log if r.path == "/api/v3/myTrades"]) == 3


async def _appears(broker: BinanceBroker, cid: str, timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        try:
            return await broker.get_order(cid, "BTCUSDT")
        except OrderNotFound:
            await asyncio.sleep(0.05)
    raise AssertionError(f"order {cid} never appeared")


def market_buy() -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                     quantity=D("0.001"))


async def test_an_order_answered_1007_executes_later_and_a_resend_meanwhile_makes_two(
        exchange: BinanceExchangeServer, broker: BinanceBroker) -> None:
    """The local exchange's late execution: what a lookup window shorter than Binance's
    backend timeout runs into."""
    exchange.late_executions(1.0, 0.5)
    with pytest.raises(UnknownOutcome, match="-1007"):
        await broker.submit("late-1", market_buy())
    # Right after the answer, Binance does not know it ("Order does not exist")...
    with pytest.raises(OrderNotFound):
        await broker.get_order("late-1", "BTCUSDT")
    # ... and a second send is taken: a filled market order does not hold its client id.
    exchange.late_executions(0, 0)
    resent = await broker.submit("late-1", market_buy())
    assert resent.status is BrokerStatus.FILLED
    for _ in range(200):  # then the first send executes after all
        if exchange.late_executed["late-1"]:
            break
        await asyncio.sleep(0.05)
    assert exchange.late_executed["late-1"] == 1
    assert exchange.orders_for("late-1") == 2  # two orders for one client id
    found = await broker.get_order("late-1", "BTCUSDT")
    assert found.broker_order_id != resent.broker_order_id  # the latest of them


async def test_a_late_execution_appears_at_the_exchange_after_the_unknown_answer(
        exchange: BinanceExchangeServer, broker: BinanceBroker) -> None:
    exchange.late_executions(1.0, 0.3)
    with pytest.raises(UnknownOutcome):
        await broker.submit("late-2", limit_buy())
    found = await _appears(broker, "late-2")
    assert found.status is BrokerStatus.NEW and found.quantity == Decimal("0.010")
    assert exchange.received["late-2"] == 1 and exchange.orders_for("late-2") == 1
    # A refusal is answered at once, not late: nothing to find later.
    with pytest.raises(PermanentError, match="insufficient balance"):
        await broker.submit("late-3", OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY,
                                                type=OrderType.MARKET, quantity=D("90")))
