"""Native contingent lists at Binance (``native_lists = true``): an entry with take_profit
and stop_loss goes out as one orderList/otoco (one level: /oto) through the real
python-binance client, so the local exchange places the exit the moment the entry has fully
filled; the workers' exit ``<entry>-x1`` is then taken as those orders (adopted), never
sent a second time; a capped exit replaces them; an entry cancelled after a part fill gets
its exit from the workers; reconciliation takes the pending orders for the entry's; a
worker SIGKILLed between the fill and the adoption leaves one exit, adopted by its heir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer, signing
from devtools.binance_exchange.engine import ApiError
from executor.brokers.base import BrokerStatus
from executor.brokers.binance import oto
from executor.brokers.binance.broker import BinanceBroker
from executor.config import Settings
from executor.model.lists import exit_request
from executor.model.order import spec_from_request
from producer.client import OrderClient
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    ResultStatus,
    Side,
    WireDecimal,
)
from producer.keys import Keys
from tests.fakes.binance import KEY, KEY_ENV, SECRET, SECRET_ENV, account_for, exchange, in_thread

from .conftest import running
from .native_heir import killed_before_adoption
from .test_binance_worker import binance_settings
from .test_lists import list_over, order_in

__all__ = ["exchange"]  # fixture

K = Keys()
D = WireDecimal
LIST_PATHS = ("/api/v3/orderList/oto", "/api/v3/orderList/otoco", "/api/v3/orderList/oco")


@pytest.fixture
async def native(exchange: BinanceExchangeServer) -> AsyncIterator[BinanceBroker]:
    b = BinanceBroker("bn", account_for(exchange, native_lists=True))
    await b.start()
    yield b
    await b.close()


def entry(quantity: str = "0.01", price: str | None = "49900", *,
          tp: str | None = "51000", sl: str | None = "49000", **kw: Any) -> OrderSpec:
    fields: dict[str, Any] = {"type": OrderType.LIMIT, "oto_trigger": OtoTrigger.FULL,
                              "price": None if price is None else D(price), **kw}
    return OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY, quantity=D(quantity),
                     take_profit=None if tp is None else D(tp),
                     stop_loss=None if sl is None else D(sl), **fields)


def exit_of(cid: str, spec: OrderSpec, quantity: str, n: int = 1) -> OrderSpec:
    return spec_from_request(exit_request(cid, spec, Decimal(quantity), n), "bn")


def sent(server: BinanceExchangeServer, *paths: str) -> list[tuple[str, dict[str, str]]]:
    """The signed list requests the exchange received, without the signature's fields."""
    out = []
    for r in server.log:
        if r.method != "POST" or r.path not in (paths or LIST_PATHS):
            continue
        payload, signature = signing.rest_payload(r.query, r.body)
        assert signature is not None and signing.verify(SECRET, payload, signature)
        params = dict(r.params)
        for key in ("signature", "recvWindow", "timestamp"):
            params.pop(key)
        out.append((r.path, params))
    return out


def status_at(server: BinanceExchangeServer, cid: str) -> str:
    return server.exchange.find({"symbol": "BTCUSDT", "origClientOrderId": cid}).status


def unwatched(redis_url: str, server: BinanceExchangeServer, **account: Any) -> Settings:
    """Worker settings with native lists and the lists watcher all but stopped (a pass a
    minute): what Binance does alone between an entry's fill and the exit's adoption."""
    settings = binance_settings(redis_url, server, native_lists=True, **account)
    settings.worker.emulator_interval_ms = 60_000
    return settings


async def filled_natively(client: OrderClient, server: BinanceExchangeServer,
                          cid: str) -> None:
    """A bracket entry placed (as an orderList/otoco) and filled whole."""
    sub = await client.place("BTCUSDT", "buy", "limit", "0.01", price="49900",
                             client_order_id=cid, take_profit="51000", stop_loss="49000")
    result = await client.wait_result(sub, timeout=20)
    assert result.status is ResultStatus.ACCEPTED and result.native_exits
    server.set_price("BTCUSDT", "49900")
    await order_in(client, cid, OrderState.FILLED, timeout=20)


# -- the request as Binance receives it ----------

async def test_a_bracket_entry_is_one_otoco_with_the_exits_ids(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    report = await native.submit("E1", entry())
    assert sent(exchange) == [("/api/v3/orderList/otoco", {
        "symbol": "BTCUSDT", "listClientOrderId": "E1-x1", "newOrderRespType": "FULL",
        "workingType": "LIMIT", "workingSide": "BUY", "workingClientOrderId": "E1",
        "workingPrice": "49900", "workingQuantity": "0.01", "workingTimeInForce": "GTC",
        "pendingSide": "SELL", "pendingQuantity": "0.01",
        "pendingAboveType": "LIMIT_MAKER", "pendingAboveClientOrderId": "E1-x1-oA",
        "pendingAbovePrice": "51000",
        "pendingBelowType": "STOP_LOSS", "pendingBelowClientOrderId": "E1-x1-oB",
        "pendingBelowStopPrice": "49000"})]
    assert exchange.orders_sent() == []
    # The entry's report is the entry alone: its own order id, quantity and status.
    assert (report.client_order_id, report.status, report.quantity) == (
        "E1", BrokerStatus.NEW, Decimal("0.01"))
    assert report.broker_order_id.isdigit() and report.native_exits
    looked = await native.get_order("E1", "BTCUSDT")
    assert (looked.broker_order_id, looked.status) == (report.broker_order_id,
                                                      BrokerStatus.NEW)
    assert status_at(exchange, "E1-x1-oA") == status_at(exchange, "E1-x1-oB") == "PENDING_NEW"


@pytest.mark.parametrize(("tp", "sl", "pending"), [
    ("51000", None, {"pendingType": "LIMIT", "pendingPrice": "51000",
                     "pendingTimeInForce": "GTC"}),
    (None, "49000", {"pendingType": "STOP_LOSS", "pendingStopPrice": "49000"}),
])
async def test_one_level_is_an_oto_whose_pending_order_is_the_exit(
        native: BinanceBroker, exchange: BinanceExchangeServer, tp: str | None,
        sl: str | None, pending: dict[str, str]) -> None:
    await native.submit("E2", entry(type=OrderType.LIMIT_MAKER, tp=tp, sl=sl))
    assert sent(exchange) == [("/api/v3/orderList/oto", {
        "symbol": "BTCUSDT", "listClientOrderId": "E2-xL", "newOrderRespType": "FULL",
        "workingType": "LIMIT_MAKER", "workingSide": "BUY", "workingClientOrderId": "E2",
        "workingPrice": "49900", "workingQuantity": "0.01",
        "pendingSide": "SELL", "pendingQuantity": "0.01",
        "pendingClientOrderId": "E2-x1", **pending})]


@pytest.mark.parametrize(("spec", "last"), [
    (entry(type=OrderType.MARKET, price=None), "50000"),  # Binance's working order: a limit
    (entry(oto_trigger=OtoTrigger.PARTIAL), "50000"),  # an exit per part: the workers'
    (entry(), "51500"),  # the exit's legs would not bracket the last price
], ids=["market", "partial", "unbracketed"])
async def test_what_binance_cannot_hold_goes_as_a_plain_entry(
        native: BinanceBroker, exchange: BinanceExchangeServer, spec: OrderSpec,
        last: str) -> None:
    exchange.set_price("BTCUSDT", last)
    await native.reference_price("BTCUSDT")
    report = await native.submit("E3", spec)
    assert sent(exchange) == [] and len(exchange.orders_sent()) == 1
    assert not report.native_exits


async def test_off_by_default_and_where_the_symbol_does_not_allow_oto(
        exchange: BinanceExchangeServer) -> None:
    plain = BinanceBroker("bn", account_for(exchange))
    await plain.start()
    try:
        await plain.submit("E4", entry())
    finally:
        await plain.close()
    exchange.exchange.listings["BTCUSDT"].oto_allowed = False
    refused = BinanceBroker("bn", account_for(exchange, native_lists=True))
    await refused.start()
    try:
        await refused.submit("E5", entry())
    finally:
        await refused.close()
    assert sent(exchange) == [] and len(exchange.orders_sent()) == 2


async def test_the_local_exchange_refuses_oto_as_binance_does(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    x = exchange.exchange
    base = {"symbol": "BTCUSDT", "workingSide": "BUY", "workingPrice": "49900",
            "workingQuantity": "0.01", "workingTimeInForce": "GTC", "pendingSide": "SELL",
            "pendingQuantity": "0.01", "pendingType": "LIMIT", "pendingPrice": "51000",
            "pendingTimeInForce": "GTC"}
    with pytest.raises(ApiError, match="Invalid orderType") as caught:
        x.place_oto({**base, "workingType": "MARKET"})
    assert caught.value.code == -1116
    with pytest.raises(ApiError, match="exactly one STOP_LOSS"):
        x.place_otoco({**base, "workingType": "LIMIT", "pendingAboveType": "LIMIT_MAKER",
                       "pendingAbovePrice": "51000", "pendingBelowType": "LIMIT_MAKER",
                       "pendingBelowPrice": "49000"})
    x.listings["BTCUSDT"].oto_allowed = False
    with pytest.raises(ApiError, match="OTO orders are not supported") as caught:
        x.place_oto({**base, "workingType": "LIMIT"})
    assert caught.value.code == -2010


# -- adoption: the workers' exit is what Binance placed ----------

async def test_the_exit_is_taken_as_the_orders_binance_placed_never_sent_again(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    spec = entry()
    await native.submit("E6", spec)
    exchange.set_price("BTCUSDT", "49900")  # fully filled: Binance places the exit
    assert status_at(exchange, "E6-x1-oA") == "NEW"
    assert (await native.get_order("E6", "BTCUSDT")).status is BrokerStatus.FILLED
    report = await native.submit("E6-x1", exit_of("E6", spec, "0.01"))
    assert (report.client_order_id, report.status, report.quantity) == (
        "E6-x1", BrokerStatus.NEW, Decimal("0.01"))
    assert report.broker_order_id.startswith("list:")
    assert [p for p, _ in sent(exchange)] == ["/api/v3/orderList/otoco"]
    assert exchange.lists_for("E6-x1") == 1 and exchange.exchange.duplicates == {}
    exchange.set_price("BTCUSDT", "50999.99")  # a tick short of the take-profit
    assert (await native.get_order("E6-x1", "BTCUSDT")).status is BrokerStatus.NEW
    exchange.set_price("BTCUSDT", "51000")  # the take-profit, exactly at its price
    filled = await native.get_order("E6-x1", "BTCUSDT")
    assert (filled.status, filled.filled_quantity) == (BrokerStatus.FILLED, Decimal("0.01"))
    assert status_at(exchange, "E6-x1-oB") == "EXPIRED"


async def test_the_native_stop_fires_exactly_at_its_trigger(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    spec = entry()
    await native.submit("E10", spec)
    exchange.set_price("BTCUSDT", "49900")
    await native.submit("E10-x1", exit_of("E10", spec, "0.01"))
    exchange.set_price("BTCUSDT", "49000.01")  # a tick above the stop
    assert status_at(exchange, "E10-x1-oB") == "NEW"
    exchange.set_price("BTCUSDT", "49000")
    stopped = await native.get_order("E10-x1", "BTCUSDT")
    assert (stopped.status, stopped.filled_quantity) == (BrokerStatus.FILLED, Decimal("0.01"))
    assert status_at(exchange, "E10-x1-oA") == "EXPIRED"
    assert [p for p, _ in sent(exchange)] == ["/api/v3/orderList/otoco"]


async def test_a_capped_exit_replaces_the_larger_native_one(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    spec = entry()
    await native.submit("E7", spec)
    exchange.set_price("BTCUSDT", "49900")
    report = await native.submit("E7-x1", exit_of("E7", spec, "0.006"))
    assert status_at(exchange, "E7-x1-oA") == "NEW"  # the new oco's legs
    old = [o for o in exchange.exchange.orders.values()
           if o.client_order_id.startswith("E7-x1-")]
    assert sorted((o.status, o.qty) for o in old) == [
        ("CANCELED", Decimal("0.01")), ("CANCELED", Decimal("0.01")),
        ("NEW", Decimal("0.006")), ("NEW", Decimal("0.006"))]
    assert [p for p, _ in sent(exchange)] == ["/api/v3/orderList/otoco",
                                              "/api/v3/orderList/oco"]
    assert report.quantity == Decimal("0.006") and report.status is BrokerStatus.NEW
    exchange.set_price("BTCUSDT", "49000")  # the stop, exactly at its trigger
    assert (await native.get_order("E7-x1", "BTCUSDT")).filled_quantity == Decimal("0.006")


async def test_an_entry_cancelled_after_a_part_fill_gets_the_workers_exit(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    spec = entry()
    await native.submit("E8", spec)
    exchange.exchange.fill("BTCUSDT", "E8", Decimal("0.004"))
    cancelled = await native.cancel("E8", "BTCUSDT")
    assert (cancelled.status, cancelled.filled_quantity) == (BrokerStatus.CANCELLED,
                                                             Decimal("0.004"))
    # Binance never places the pending orders of a working order not fully filled.
    assert status_at(exchange, "E8-x1-oA") == "EXPIRED"
    report = await native.submit("E8-x1", exit_of("E8", spec, "0.004"))
    assert report.status is BrokerStatus.NEW and report.quantity == Decimal("0.004")
    assert [p for p, _ in sent(exchange)][-1] == "/api/v3/orderList/oco"
    assert status_at(exchange, "E8-x1-oA") == "NEW"


async def test_a_later_exit_cancels_a_native_one_first(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    """The first exit refused before it reached Binance (trading halted, say): the next
    one must not stand beside the native one."""
    spec = entry(sl=None)
    await native.submit("E9", spec)
    exchange.set_price("BTCUSDT", "49900")
    assert status_at(exchange, "E9-x1") == "NEW"
    await native.submit("E9-x2", exit_of("E9", spec, "0.01", n=2))
    assert (status_at(exchange, "E9-x1"), status_at(exchange, "E9-x2")) == ("CANCELED",
                                                                            "NEW")


# -- through workers ----------

async def test_exits_work_at_binance_before_any_watcher_pass_and_are_adopted_once(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """The watcher stopped (no emulator pass for a minute): the entry fills and Binance
    holds its exit at once. Then a worker with the watcher on publishes the exit, which is
    taken as what Binance placed: one list at the exchange; it closes at take-profit."""
    exchange.exchange.fee_asset = "BNB"  # the position is the whole fill
    async with running(unwatched(redis_url, exchange)):
        await filled_natively(client, exchange, "W1")
        assert status_at(exchange, "W1-x1-oA") == status_at(exchange, "W1-x1-oB") == "NEW"
        assert await client.order("W1-x1") is None
    async with running(binance_settings(redis_url, exchange, native_lists=True)):
        exit_ = await order_in(client, "W1-x1", OrderState.ACCEPTED, timeout=20)
        assert exit_.spec.quantity == Decimal("0.01")
        assert exchange.lists_for("W1-x1") == 1 and exchange.lists_received["W1-x1"] == 1
        exchange.set_price("BTCUSDT", "51000")
        await order_in(client, "W1-x1", OrderState.FILLED)
    assert [p for p, _ in sent(exchange)] == ["/api/v3/orderList/otoco"]


async def test_a_list_that_ends_without_an_exit_of_ours_cancels_the_native_one(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """The entry filled natively, then cancelled by its id before any watcher pass (which
    cancels its list, and so its exits): the watcher never publishes an exit, so the
    orders Binance placed are cancelled before the list ends, never left there
    untracked."""
    async with running(unwatched(redis_url, exchange)):
        await filled_natively(client, exchange, "C1")
        cancel = await client.cancel("C1")
        assert (await client.wait_result(cancel, timeout=10)).status is ResultStatus.FAILED
    assert status_at(exchange, "C1-x1-oA") == "NEW"
    async with running(binance_settings(redis_url, exchange, native_lists=True)):
        await list_over(redis_client, "C1")
    assert status_at(exchange, "C1-x1-oA") == status_at(exchange, "C1-x1-oB") == "CANCELED"
    assert await client.order("C1-x1") is None


async def test_cancel_all_of_a_working_entry_cancels_its_whole_list(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """A cancel_all (as `orderstream kill` sends) of a native entry still working cancels
    it at Binance, which takes its pending orders with it: the entry's record is
    cancelled, its list ends, no exit is ever published or left at Binance."""
    async with running(binance_settings(redis_url, exchange, native_lists=True)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.01", price="49900",
                                 client_order_id="A1", take_profit="51000",
                                 stop_loss="49000")
        assert (await client.wait_result(sub, timeout=10)).native_exits
        done = await client.cancel_all(account="default")
        assert (await client.wait_result(done, timeout=10)).status is ResultStatus.CANCELLED
        await order_in(client, "A1", OrderState.CANCELLED)
        await list_over(redis_client, "A1")
        assert await client.order("A1-x1") is None
    assert status_at(exchange, "A1") == "CANCELED"
    assert {status_at(exchange, c) for c in ("A1-x1-oA", "A1-x1-oB")} <= {"CANCELED",
                                                                         "EXPIRED"}
    assert exchange.exchange.open_orders("BTCUSDT") == []


async def test_end_native_exits_cancels_only_what_is_open(
        native: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    assert await native.end_native_exits("N1", "BTCUSDT", True)  # none: nothing to do
    await native.submit("N1", entry(sl=None))
    exchange.set_price("BTCUSDT", "49900")
    assert await native.end_native_exits("N1", "BTCUSDT", False)
    assert status_at(exchange, "N1-x1") == "CANCELED"
    assert await native.end_native_exits("N1", "BTCUSDT", False)  # ended: nothing more


async def test_reconciliation_takes_the_pending_orders_for_the_entrys(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    exchange.exchange.fee_asset = "BNB"
    async with running(unwatched(redis_url, exchange, orphans="cancel")):
        await filled_natively(client, exchange, "R1")
        assert await client.order("R1-x1") is None  # no watcher pass yet: no record
        broker = BinanceBroker("default", account_for(exchange, native_lists=True,
                                                      orphans="cancel"), redis_client, K)
        await broker.start()  # reconciles: nothing is an orphan, nothing cancelled
        try:
            assert broker.store is not None
            drift = await broker.reconcile(broker.store)
        finally:
            await broker.close()
        assert drift.orphans == []
        assert status_at(exchange, "R1-x1-oA") == "NEW"


async def test_a_worker_killed_between_the_fill_and_the_adoption_leaves_one_exit(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = BinanceExchangeServer(KEY, SECRET)
    server.exchange.fee_asset = "BNB"
    client = OrderClient(redis_client)
    with in_thread(server):
        config = (f'[accounts.default]\nbroker = "binance"\n'
                  f'api_key_env = "{KEY_ENV}"\napi_secret_env = "{SECRET_ENV}"\n'
                  f'testnet = true\nbase_url = "{server.url}"\nnative_lists = true\n')

        async def fill(_: OrderClient) -> None:
            await filled_natively(client, server, "K1")
            assert status_at(server, "K1-x1-oA") == "NEW"
        exit_ = await killed_before_adoption(
            redis_url, redis_client, tmp_path, config, fill,
            binance_settings(redis_url, server, native_lists=True))
        assert exit_.spec.quantity == Decimal("0.01")
    assert server.lists_for("K1-x1") == 1 and server.lists_received["K1-x1"] == 1


def test_pending_ids_fit_binance_and_are_the_exits() -> None:
    long = "E" * 36
    ids = oto.pending_ids(long)
    assert all(len(i) <= 36 for i in ids) and oto.first_exit_id(long) in ids
    assert oto.pending_ids("E1") == {"E1-x1", "E1-x1-oA", "E1-x1-oB"}
    assert len(oto.oto_list_id(long)) <= 36


def test_every_exit_of_a_list_is_looked_for_and_nothing_else() -> None:
    spec = entry()
    assert oto.entry_of(exit_of("E1", spec, "0.01")) == "E1"
    assert oto.entry_of(exit_of("E1", spec, "0.01", n=2)) == "E1"
    assert oto.entry_of(spec) is None
