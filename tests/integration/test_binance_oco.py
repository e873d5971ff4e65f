"""OCO orders on the local Binance exchange through the real python-binance client: one
request is one order list (listClientOrderId = our client id, legs' ids derived from it),
one order record and one result; fills of either leg, cancels and unknown outcomes all land
on that one record."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer, signing
from executor.brokers.base import (
    BrokerStatus,
    DuplicateClientId,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    UnknownOutcome,
)
from executor.brokers.binance import wire
from executor.brokers.binance.broker import BinanceBroker
from executor.safety.risk.limits import AccountLimits, RiskSettings
from producer.client import OrderClient, Submitted
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderState,
    OrderType,
    ResultStatus,
    Side,
    TimeInForce,
    WireDecimal,
)
from producer.keys import Keys
from tests.fakes.binance import SECRET, broker, exchange

from .conftest import replace, running, settings_for
from .test_binance_worker import _is, binance_settings, until
from .test_tracker import event_states

__all__ = ["broker", "exchange"]  # fixtures

D = WireDecimal
OCO_PATH = "/api/v3/orderList/oco"


def oco(side: Side = Side.SELL, price: str = "52000", stop: str = "48000",
        quantity: str = "0.01", **kw: Any) -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=side, type=OrderType.OCO,
                     quantity=D(quantity), price=D(price), stop_price=D(stop), **kw)


def sent_lists(server: BinanceExchangeServer) -> list[dict[str, str]]:
    out = []
    for sent in server.log:
        if sent.method != "POST" or sent.path != OCO_PATH:
            continue
        payload, signature = signing.rest_payload(sent.query, sent.body)
        assert signature is not None and signing.verify(SECRET, payload, signature)
        assert sent.headers["X-MBX-APIKEY"] == "test-api-key-0123456789"
        params = dict(sent.params)
        assert params.pop("signature") == signature
        assert params.pop("recvWindow") == "5000"
        assert params.pop("timestamp").isdigit()
        out.append(params)
    return out


# -- the request as Binance receives it ----------

async def test_a_sell_oco_is_one_signed_order_list(broker: BinanceBroker,
                                                    exchange: BinanceExchangeServer) -> None:
    order = oco(stop_limit_price=D("47900.5"), time_in_force=TimeInForce.GTC)
    assert broker.check(order) == order
    report = await broker.submit("s1-oco-1", order)
    assert sent_lists(exchange) == [{
        "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01",
        "listClientOrderId": "s1-oco-1", "newOrderRespType": "FULL",
        "aboveType": "LIMIT_MAKER", "aboveClientOrderId": "s1-oco-1-oA",
        "abovePrice": "52000",
        "belowType": "STOP_LOSS_LIMIT", "belowClientOrderId": "s1-oco-1-oB",
        "belowStopPrice": "48000", "belowPrice": "47900.5", "belowTimeInForce": "GTC",
    }]
    assert exchange.orders_sent() == []  # no single order
    assert report.client_order_id == "s1-oco-1"
    assert report.status is BrokerStatus.NEW
    assert report.broker_order_id.startswith("list:")
    assert report.quantity == Decimal("0.01") and report.filled_quantity == 0
    assert exchange.lists_for("s1-oco-1") == 1


async def test_a_buy_oco_puts_the_stop_above_and_the_limit_below(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("b-oco", oco(Side.BUY, price="48000", stop="52000"))
    params = sent_lists(exchange)[0]
    assert {k: v for k, v in params.items() if k.startswith(("above", "below"))} == {
        "aboveType": "STOP_LOSS", "aboveClientOrderId": "b-oco-oA", "aboveStopPrice": "52000",
        "belowType": "LIMIT_MAKER", "belowClientOrderId": "b-oco-oB", "belowPrice": "48000"}


def test_leg_ids_are_derived_and_fit_36_characters() -> None:
    assert wire.leg_ids("a") == ("a-oA", "a-oB")
    assert wire.leg_ids("x" * 33) == ("x" * 33 + "-oA", "x" * 33 + "-oB")
    long_a, long_b = wire.leg_ids("y" * 34)
    other_a, _ = wire.leg_ids("y" * 35)
    assert len(long_a) == len(long_b) == 36 and long_a.startswith("y" * 24 + "-")
    assert long_a != other_a  # the hash keeps two long ids with one prefix apart
    assert wire.leg_ids("y" * 34) == (long_a, long_b)  # deterministic


async def test_a_long_client_id_reaches_binance_within_its_limit(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    cid = "L" * 36
    report = await broker.submit(cid, oco())
    params = sent_lists(exchange)[0]
    assert params["listClientOrderId"] == cid
    assert len(params["aboveClientOrderId"]) == 36
    assert (await broker.get_order(cid, "BTCUSDT")).status is report.status


# -- lookups, fills, cancels ----------

async def test_one_leg_filling_fills_the_order_and_expires_the_other(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("fill-1", oco())
    exchange.set_price("BTCUSDT", "52000")  # the limit-maker leg fills
    # A fresh broker (a restart): nothing in memory, the list is found by our client id.
    found = await broker.get_order("fill-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED
    assert found.filled_quantity == Decimal("0.01")
    assert [(f.price, f.quantity, f.liquidity) for f in found.fills] == [
        (Decimal(52000), Decimal("0.01"), "maker")]
    legs = {o.client_order_id: o.status for o in exchange.exchange.orders.values()}
    assert legs == {"fill-1-oA": "FILLED", "fill-1-oB": "EXPIRED"}


async def test_the_stop_leg_triggering_fills_the_order(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("stop-1", oco())
    exchange.set_price("BTCUSDT", "47990")  # the stop-market leg triggers and fills
    found = await broker.get_order("stop-1", "BTCUSDT")
    assert found.status is BrokerStatus.FILLED
    assert [f.price for f in found.fills] == [Decimal("47990")]


async def test_a_partially_filled_leg_is_a_partially_filled_order(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("part-1", oco(quantity="0.05"))
    exchange.exchange.fill("BTCUSDT", "part-1-oA", Decimal("0.02"))
    found = await broker.get_order("part-1", "BTCUSDT")
    assert found.status is BrokerStatus.PARTIALLY_FILLED
    assert found.filled_quantity == Decimal("0.02")
    # The other leg expired at the first fill, as Binance does.
    assert exchange.exchange.find({"symbol": "BTCUSDT",
                                   "origClientOrderId": "part-1-oB"}).status == "EXPIRED"


async def test_cancel_cancels_the_list(broker: BinanceBroker,
                                       exchange: BinanceExchangeServer) -> None:
    await broker.submit("cxl-1", oco())
    report = await broker.cancel("cxl-1", "BTCUSDT")
    assert report.status is BrokerStatus.CANCELLED and report.client_order_id == "cxl-1"
    deletes = [r for r in exchange.log if r.method == "DELETE"]
    assert [(r.path, r.params["listClientOrderId"]) for r in deletes] == [
        ("/api/v3/orderList", "cxl-1")]
    assert exchange.exchange.open_orders("BTCUSDT") == []
    with pytest.raises(NotCancellable):
        await broker.cancel("cxl-1", "BTCUSDT")


async def test_cancel_after_a_restart_still_finds_the_list(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("cxl-2", oco())
    broker._lists.clear()
    broker._leg_owner.clear()
    report = await broker.cancel("cxl-2", "BTCUSDT")
    assert report.status is BrokerStatus.CANCELLED
    assert exchange.exchange.open_orders("BTCUSDT") == []


async def test_an_unknown_list_is_not_found(broker: BinanceBroker) -> None:
    with pytest.raises(OrderNotFound):
        await broker.get_order("no-such-oco", "BTCUSDT")


async def test_a_redelivered_oco_is_a_duplicate_client_id_while_the_list_is_open(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.submit("dup-1", oco())
    with pytest.raises(DuplicateClientId, match="Duplicate"):
        await broker.submit("dup-1", oco())
    assert exchange.lists_for("dup-1") == 1
    assert "dup-1" in broker._lists  # the refusal did not make it forget the open list


async def test_5xx_after_storing_is_an_unknown_outcome_found_by_lookup(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    exchange.inject("POST", OCO_PATH, 503, after=True)
    with pytest.raises(UnknownOutcome):
        await broker.submit("unk-1", oco())
    found = await broker.get_order("unk-1", "BTCUSDT")
    assert found.status is BrokerStatus.NEW and found.client_order_id == "unk-1"
    assert exchange.lists_for("unk-1") == 1


# -- refused before sending ----------

@pytest.mark.parametrize(("order", "field", "words"), [
    (oco(price="52000.001"), "price", "PRICE_FILTER"),
    (oco(stop="48000.001"), "stop_price", "PRICE_FILTER"),
    (oco(stop_limit_price=D("47900.001")), "stop_limit_price", "PRICE_FILTER"),
    (oco(quantity="0.000015"), "quantity", "LOT_SIZE"),
    (oco(quantity="0.00001", price="52000", stop="100"), "quantity", "NOTIONAL"),
])
async def test_filters_are_checked_for_both_legs_without_a_call(
        broker: BinanceBroker, exchange: BinanceExchangeServer, order: OrderSpec, field: str,
        words: str) -> None:
    with pytest.raises(ContractError) as caught:
        broker.check(order)
    assert caught.value.field == field and words in str(caught.value)
    with pytest.raises(PermanentError, match=words):
        await broker.submit("bad-1", order)
    assert sent_lists(exchange) == []


async def test_legs_that_do_not_bracket_the_last_price_are_refused_without_a_call(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.reference_price("BTCUSDT")  # 50000
    with pytest.raises(PermanentError, match="bracket the last price 50000"):
        await broker.submit("brk-1", oco(price="49000", stop="48000"))
    assert sent_lists(exchange) == []


# -- whole workers ----------

async def test_a_worker_places_an_oco_and_a_leg_filling_on_the_stream_fills_it(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    # Polling once a minute: within the test only the stream can tell the fill.
    async with running(binance_settings(redis_url, exchange, track_interval_ms=60_000)):
        sub = await client.place("BTCUSDT", "sell", "oco", "0.010", price="52000",
                                 stop_price="48000", stop_limit_price="47900")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status is ResultStatus.ACCEPTED, result
        cid = sub.client_order_id
        assert result.broker_order_id is not None and result.broker_order_id.startswith("list:")
        await until(lambda: _subscribed(exchange))
        requests_before = len(exchange.log)
        exchange.set_price("BTCUSDT", "52000")  # the limit-maker leg fills
        await until(lambda: _is(redis_client, cid, "filled"))
        assert not [r for r in exchange.log[requests_before:] if r.method == "GET"
                    and r.path in ("/api/v3/order", "/api/v3/orderList")]  # the stream told it
    legs = {o.client_order_id: o.status for o in exchange.exchange.orders.values()}
    assert legs == {f"{cid}-oA": "FILLED", f"{cid}-oB": "EXPIRED"}
    assert exchange.lists_for(cid) == 1 and exchange.lists_received[cid] == 1
    assert await event_states(redis_client, cid) == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
        OrderState.ACCEPTED, OrderState.FILLED]


async def _subscribed(server: BinanceExchangeServer) -> bool:
    return len(server.exchange.listeners) >= 1


async def accepted_oco(client: OrderClient, side: str = "sell") -> Submitted:
    """An OCO placed (sell: 52000 above, 48000 below; buy the reverse), and accepted."""
    low, high = "48000", "52000"
    sub = await client.place("BTCUSDT", side, "oco", "0.010",
                             price=high if side == "sell" else low,
                             stop_price=low if side == "sell" else high)
    assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
    return sub


async def test_a_worker_cancels_an_oco_by_cancelling_the_list(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await accepted_oco(client, "buy")
        cancel = await client.cancel(sub.client_order_id)
        result = await client.wait_result(cancel.request_id, 10)
    assert result.status is ResultStatus.CANCELLED, result
    deletes = [(r.path, r.params.get("listClientOrderId")) for r in exchange.log
               if r.method == "DELETE"]
    assert deletes == [("/api/v3/orderList", sub.client_order_id)]
    assert exchange.exchange.open_orders("BTCUSDT") == []
    assert await _is(redis_client, sub.client_order_id, "cancelled")


async def test_an_unknown_outcome_is_resolved_by_lookup_with_one_list_at_the_exchange(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    exchange.inject("POST", OCO_PATH, 503, after=True)  # stored, then "503"
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "sell", "oco", "0.010", price="52000",
                                 stop_price="48000")
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.ACCEPTED, result
    assert exchange.lists_for(sub.client_order_id) == 1
    assert exchange.lists_received[sub.client_order_id] == 1  # looked up, never sent again
    assert [r.params.get("origClientOrderId") for r in exchange.log
            if r.method == "GET" and r.path == "/api/v3/orderList"][:1] == [sub.client_order_id]


async def test_invalid_ocos_are_refused_without_a_call(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        # As a producer in another language may send it (our client refuses it itself).
        raw = await redis_client.xadd(Keys().pending, {"data": (
            b'{"client_order_id":"oco-bad-1","symbol":"BTCUSDT","side":"sell","type":"oco",'
            b'"quantity":"0.01","price":"48000","stop_price":"52000"}')})
        crossed = Submitted(raw.decode(), "oco-bad-1")
        tick = await client.place("BTCUSDT", "sell", "oco", "0.01", price="52000.001",
                                  stop_price="48000")
        outside = await client.place("BTCUSDT", "sell", "oco", "0.01", price="49000",
                                     stop_price="48000")
        results = [await client.wait_result(s.request_id, 10) for s in (crossed, tick, outside)]
    assert [r.reason_code for r in results] == ["invalid", "invalid", "broker_rejected"]
    assert results[0].reason is not None and "stop_price" in results[0].reason
    assert results[1].reason is not None and "PRICE_FILTER" in results[1].reason
    assert results[2].reason is not None and "bracket" in results[2].reason
    assert sent_lists(exchange) == []


async def test_cancel_all_reports_an_oco_as_one_order(broker: BinanceBroker) -> None:
    await broker.submit("all-oco", oco())
    await broker.submit("all-one", OrderSpec(account="bn", symbol="BTCUSDT", side=Side.BUY,
                                             type=OrderType.LIMIT, quantity=D("0.01"),
                                             price=D("40000")))
    reports = await broker.cancel_all("BTCUSDT")
    assert sorted((r.client_order_id, r.status) for r in reports) == [
        ("all-oco", BrokerStatus.CANCELLED), ("all-one", BrokerStatus.CANCELLED)]


async def test_the_stop_leg_and_partial_fills_on_the_stream(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange, track_interval_ms=60_000)):
        stop = await client.place("BTCUSDT", "sell", "oco", "0.010", price="52000",
                                  stop_price="48000")
        part = await client.place("BTCUSDT", "buy", "oco", "0.050", price="49000",
                                  stop_price="53000", stop_limit_price="53100")
        for sub in (stop, part):
            assert (await client.wait_result(sub.request_id, 10)).status is (
                ResultStatus.ACCEPTED)
        await until(lambda: _subscribed(exchange))
        exchange.exchange.fill("BTCUSDT", f"{part.client_order_id}-oB", Decimal("0.02"))
        await until(lambda: _is(redis_client, part.client_order_id, "partially_filled"))
        exchange.set_price("BTCUSDT", "47990")  # the sell's stop triggers; the buy's limit fills
        await until(lambda: _is(redis_client, stop.client_order_id, "filled"))
        await until(lambda: _is(redis_client, part.client_order_id, "filled"))
    assert (await event_states(redis_client, part.client_order_id))[-2:] == [
        OrderState.PARTIALLY_FILLED, OrderState.FILLED]


async def test_a_restart_finds_its_open_oco_and_cancels_an_orphan_list(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    async with running(binance_settings(redis_url, exchange)):
        sub = await accepted_oco(client)
    exchange.exchange.place_oco({  # a list no request of ours made
        "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01", "listClientOrderId": "stray",
        "aboveType": "LIMIT_MAKER", "abovePrice": "53000", "belowType": "STOP_LOSS",
        "belowStopPrice": "47000"})
    async with running(binance_settings(redis_url, exchange, orphans="cancel")) as worker:
        counted = worker.metrics.registry.get_sample_value(
            "orderstream_broker_orphans_total", {"account": "default", "action": "cancel"})
        assert counted == 1  # the stray list, once; our own list is known, not an orphan
        exchange.set_price("BTCUSDT", "52000")
        await until(lambda: _is(redis_client, sub.client_order_id, "filled"))
    stray = exchange.exchange.lists[exchange.exchange.lists_by_client["stray"]]
    assert stray.done
    assert {exchange.exchange.orders[oid].status for oid in stray.legs} == {"CANCELED"}


async def test_the_paper_exchange_takes_an_oco_natively_with_binances_price_rule(
        redis_url: str, client: OrderClient) -> None:
    """Accepted as one order resting both legs; a leg the price is already at is rejected,
    as Binance rejects it (limit above the last price above the stop, for a sell)."""
    async with running(settings_for(redis_url)):  # the paper broker, BTCUSDT at 50000
        sub = await client.place("BTCUSDT", "sell", "oco", "0.010", price="52000",
                                 stop_price="48000")
        result = await client.wait_result(sub.request_id, 10)
        late = await client.place("BTCUSDT", "sell", "oco", "0.010", price="49000",
                                  stop_price="48000")
        refused = await client.wait_result(late.request_id, 10)
    assert result.status is ResultStatus.ACCEPTED and not result.emulated, result
    assert refused.status is ResultStatus.REJECTED, refused
    assert refused.reason is not None and "would trigger immediately" in refused.reason


async def test_the_exchange_holds_an_ocos_balance_once(broker: BinanceBroker,
                                                        exchange: BinanceExchangeServer) -> None:
    balances = exchange.exchange.balances
    await broker.submit("bal-sell", oco(quantity="2"))
    assert balances["BTC"] == [Decimal(98), Decimal(2)]
    await broker.submit("bal-buy", oco(Side.BUY, price="48000", stop="52000", quantity="1"))
    assert balances["USDT"][1] == Decimal(52000)  # the dearer leg's amount
    exchange.set_price("BTCUSDT", "52000")  # the sell's limit leg fills, the buy's stop too
    assert balances["BTC"][1] == 0 and balances["USDT"][1] == 0
    assert balances["BTC"][0] == Decimal(99) - Decimal("0.001")  # 100 - 2 + 1 - the fee


async def test_risk_checks_value_an_oco_at_its_dearest_leg(
        redis_url: str, exchange: BinanceExchangeServer, client: OrderClient) -> None:
    settings = binance_settings(redis_url, exchange)
    limits = AccountLimits(max_notional=Decimal(500), price_band_pct=Decimal(10),
                           balance=Decimal(100_000), max_total_exposure=Decimal(100_000))
    async with running(replace(settings, risk=RiskSettings(defaults=limits))):
        # The limit leg is 0.01 x 48000 = 480, the stop leg 0.01 x 52000 = 520.
        dear = await client.place("BTCUSDT", "buy", "oco", "0.01", price="48000",
                                  stop_price="52000")
        cheap = await client.place("BTCUSDT", "buy", "oco", "0.009", price="48000",
                                   stop_price="52000")
        denied, accepted = [await client.wait_result(s.request_id, 10) for s in (dear, cheap)]
    assert denied.reason_code == "risk_denied:notional", denied
    assert denied.reason is not None and "520" in denied.reason
    assert accepted.status is ResultStatus.ACCEPTED, accepted
    assert [p["listClientOrderId"] for p in sent_lists(exchange)] == [cheap.client_order_id]
