"""MAX_NUM_ORDERS, checked before sending, counts the open orders of the symbol from the
records every worker shares (and the orphans reconciliation leaves open), not what one
process placed: two workers' orders add up, and orders that ended elsewhere stop counting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers.base import BrokerOrder, PermanentError
from executor.brokers.binance.broker import BinanceBroker
from executor.infra.store import NewOrder, Outcome, Store
from executor.model.order import Context, apply_report, new_order, transition
from producer.contract import OrderSpec, OrderState, OrderType, Side, WireDecimal
from producer.keys import Keys
from tests.fakes.binance import account_for, exchange

__all__ = ["exchange"]  # fixture

K = Keys()
CTX = Context(now=1, worker="test")


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> Store:
    return Store(redis_client, K, results_maxlen=100, order_ttl_ms=60_000)


@pytest.fixture
async def two(exchange: BinanceExchangeServer, redis_client: aioredis.Redis
              ) -> AsyncIterator[tuple[BinanceBroker, BinanceBroker]]:
    """Two workers' brokers of one account; BTCUSDT allows two open orders."""
    [f] = [f for f in exchange.exchange.listings["BTCUSDT"].filters
           if f["filterType"] == "MAX_NUM_ORDERS"]
    f["maxNumOrders"] = 2
    a = BinanceBroker("default", account_for(exchange), redis_client, K)
    b = BinanceBroker("default", account_for(exchange), redis_client, K)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


def resting(price: str = "40000") -> OrderSpec:
    return OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal("0.01"), price=WireDecimal(price))


async def place(store: Store, broker: BinanceBroker, cid: str) -> BrokerOrder:
    """What a worker does: the record first (pending_submit), then the send, then the
    outcome (a refusal: rejected)."""
    order, events = new_order(cid, f"req-{cid}", resting(), CTX)
    await store.begin([NewOrder(order, events)])
    try:
        report = await broker.submit(cid, order.spec)
    except PermanentError as exc:
        seq = order.seq
        ended = transition(order, OrderState.REJECTED, CTX, reason_code="broker_rejected",
                           reason=str(exc))
        assert await store.finish([Outcome(cid, None, order, seq, [ended])]) == []
        raise
    await record(store, cid, report)
    return report


async def record(store: Store, cid: str, report: BrokerOrder) -> None:
    (order,) = await store.load_orders([cid])
    assert order is not None
    seq = order.seq
    events = apply_report(order, report, CTX)
    assert await store.finish([Outcome(cid, None, order, seq, events)]) == []


def sent(exchange: BinanceExchangeServer) -> int:
    return len(exchange.orders_sent())


async def test_the_orders_of_two_workers_add_up(
        two: tuple[BinanceBroker, BinanceBroker], store: Store,
        exchange: BinanceExchangeServer) -> None:
    a, b = two
    await place(store, a, "mx-1")
    await place(store, b, "mx-2")  # the other worker's
    before = sent(exchange)
    with pytest.raises(PermanentError, match=r"refused before sending to Binance.*"
                                             r"MAX_NUM_ORDERS.*2 orders are open"):
        await place(store, a, "mx-3")
    assert sent(exchange) == before  # never reached Binance


async def test_orders_that_ended_elsewhere_stop_counting(
        two: tuple[BinanceBroker, BinanceBroker], store: Store,
        exchange: BinanceExchangeServer) -> None:
    a, b = two
    await place(store, a, "end-1")
    await place(store, a, "end-2")
    # The other worker cancels both (a cancel request it took) and records it.
    for cid in ("end-1", "end-2"):
        await record(store, cid, await b.cancel(cid, "BTCUSDT"))
    report = await place(store, a, "end-3")
    assert report.broker_order_id and exchange.exchange.open_orders("BTCUSDT")


async def test_orphans_left_open_count_until_they_end(
        two: tuple[BinanceBroker, BinanceBroker], store: Store,
        exchange: BinanceExchangeServer) -> None:
    a, _ = two
    # Placed by hand in Binance's interface: open there, no record of ours.
    exchange.exchange.place({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                             "timeInForce": "GTC", "quantity": "0.01", "price": "39000",
                             "newClientOrderId": "by-hand"})
    await a.reconcile(store)  # reported, left open
    await place(store, a, "orph-1")
    before = sent(exchange)
    with pytest.raises(PermanentError, match=r"refused before sending.*MAX_NUM_ORDERS"):
        await place(store, a, "orph-2")
    assert sent(exchange) == before
    exchange.exchange.cancel({"symbol": "BTCUSDT", "origClientOrderId": "by-hand"})
    await a.reconcile(store)
    await place(store, a, "orph-3")
    assert len(exchange.exchange.open_orders("BTCUSDT")) == 2
    assert Decimal(exchange.exchange.open_orders("BTCUSDT")[0]["origQty"]) == Decimal("0.01")
