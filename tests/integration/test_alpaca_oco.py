"""Alpaca's own oco order class for our reduce_only stock ``oco``, on the local Alpaca API:
the request as the server received it (order_class oco, take_profit, stop_loss, our client
id); each leg filling at its exact price while the other is cancelled, told as one order
of ours with the right quantity and average price (by lookups, by the trade_updates stream
and through a whole worker); a cancel that cancels both legs, also once the stop leg has
taken over; the 422s the local server answers where Alpaca refuses an oco; and a crypto
oco, which Alpaca's oco does not take, still emulated."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.base import BrokerOrder, BrokerStatus, NeedsEmulation
from executor.model.positions import decode_position, position_key
from producer.client import OrderClient, Submitted
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    Result,
    ResultStatus,
    Side,
    TimeInForce,
    WireDecimal,
)
from producer.keys import Keys
from tests.fakes.alpaca import KEY_ID, SECRET, alpaca, alpaca_broker
from tests.fakes.feeds import Feed

from .conftest import running, until
from .test_alpaca_conditional import alpaca_settings, sent_body
from .test_alpaca_stream import alpaca_settings as stream_settings
from .test_alpaca_stream import listening
from .test_lists import order_in

__all__ = ["alpaca", "alpaca_broker"]  # fixtures

D = Decimal
K = Keys()
CID = "E1-x1"


def oco(quantity: str = "5", price: str = "195", stop_price: str = "185", **kw: Any
        ) -> OrderSpec:
    """A sell exit of a long AAPL position (the market at 190): take profit at 195, stop
    at 185."""
    return OrderSpec(account="ap", symbol=kw.pop("symbol", "AAPL"), side=Side.SELL,
                     type=OrderType.OCO, quantity=WireDecimal(quantity),
                     price=WireDecimal(price), stop_price=WireDecimal(stop_price),
                     reduce_only=True, **kw)


async def holding(r: aioredis.Redis, symbol: str, quantity: str) -> None:
    """Until the positions fold shows the entry: a reduce_only exit is checked against it."""
    async def there() -> bool:
        raw = await r.hget(K.positions, position_key("default", symbol))
        return raw is not None and decode_position(raw).quantity == D(quantity)
    await until(there, 10)


async def exit_of_a_position(client: OrderClient, r: aioredis.Redis, symbol: str,
                             quantity: str, price: str, stop_price: str
                             ) -> tuple[Submitted, Result]:
    """A market buy of ``quantity``, filled and folded, then its exit: a reduce_only oco
    sell at ``price`` / ``stop_price``; the exit's submission and result."""
    entry = await client.place(symbol, "buy", "market", quantity)
    assert (await client.wait_result(entry.request_id, 15)).status is ResultStatus.FILLED
    await holding(r, symbol, quantity)
    placed = await client.place(symbol, "sell", "oco", quantity, price=price,
                                stop_price=stop_price, reduce_only=True)
    return placed, await client.wait_result(placed.request_id, 15)


def orders_of(server: AlpacaExchangeServer, cid: str) -> tuple[dict[str, Any],
                                                               dict[str, Any]]:
    """The oco's take-profit parent and stop leg, as the server holds them."""
    parent = server.engine.get_by_client_id(cid)
    [leg] = server.engine.get(parent["id"], nested=True)["legs"]
    return parent, leg


async def test_an_oco_as_the_server_received_it(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    placed = await alpaca_broker.submit(CID, oco())
    [sent] = alpaca.orders_sent()
    assert sent.body == {"symbol": "AAPL", "side": "sell", "type": "limit",
                         "time_in_force": "gtc", "client_order_id": CID, "qty": "5",
                         "order_class": "oco", "take_profit": {"limit_price": "195"},
                         "stop_loss": {"stop_price": "185"}}
    assert sent.headers["APCA-API-KEY-ID"] == KEY_ID
    parent, leg = orders_of(alpaca, CID)
    assert (parent["type"], parent["limit_price"], parent["status"]) == ("limit", "195", "new")
    assert (leg["type"], leg["stop_price"], leg["status"]) == ("stop", "185", "held")
    assert leg["client_order_id"] != CID  # Alpaca's own: our id is the parent's
    assert (placed.client_order_id, placed.broker_order_id, placed.status) == (
        CID, parent["id"], BrokerStatus.NEW)
    # A stop-limit leg: its limit in stop_loss.
    await alpaca_broker.submit("E2-x1", oco(stop_limit_price=WireDecimal("184.5")))
    assert alpaca.orders_sent()[-1].body["stop_loss"] == {"stop_price": "185",
                                                          "limit_price": "184.5"}
    assert orders_of(alpaca, "E2-x1")[1]["type"] == "stop_limit"


async def test_the_take_profit_fills_at_its_price_exactly_and_the_stop_is_cancelled(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await alpaca_broker.submit(CID, oco())
    alpaca.set_price("AAPL", "194.99")
    assert (await alpaca_broker.get_order(CID, "AAPL")).status is BrokerStatus.NEW
    alpaca.set_price("AAPL", "195")
    parent, leg = orders_of(alpaca, CID)
    assert (parent["status"], leg["status"]) == ("filled", "canceled")
    before = len(alpaca.log)
    found = await alpaca_broker.get_order(CID, "AAPL")
    assert (found.status, found.filled_quantity, found.quantity) == (BrokerStatus.FILLED, 5, 5)
    assert [(f.fill_id, f.quantity, f.price) for f in found.fills] == [
        (f"{parent['id']}:5", 5, 195)]
    # By our client id (the parent alone), then nested by Alpaca's id (with its leg).
    assert [(r.path, r.query) for r in alpaca.log[before:]] == [
        ("/v2/orders:by_client_order_id", {"client_order_id": CID}),
        ("/v2/orders/{order_id}", {"nested": "true"})]


async def test_the_stop_fills_at_its_stop_exactly_and_the_take_profit_is_cancelled(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await alpaca_broker.submit(CID, oco())
    alpaca.set_price("AAPL", "185.01")
    assert orders_of(alpaca, CID)[1]["status"] == "held"
    alpaca.set_price("AAPL", "185")
    parent, leg = orders_of(alpaca, CID)
    assert (parent["status"], leg["status"]) == ("canceled", "filled")
    found = await alpaca_broker.get_order(CID, "AAPL")
    assert (found.status, found.filled_quantity) == (BrokerStatus.FILLED, 5)
    assert [(f.fill_id, f.quantity, f.price) for f in found.fills] == [
        (f"{leg['id']}:5", 5, 185)]
    assert found.broker_order_id == parent["id"]


async def test_a_partial_take_profit_leaves_the_stop_the_rest_and_both_fills_count(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    """Two at the take-profit (195.10), then the stop leg, given the three left as Alpaca
    adjusts it, fills at 185: five in all, at their average 189.04."""
    await alpaca_broker.submit(CID, oco())
    alpaca.engine.fill(CID, D("2"), D("195.10"))
    part = await alpaca_broker.get_order(CID, "AAPL")
    assert (part.status, part.filled_quantity) == (BrokerStatus.PARTIALLY_FILLED, 2)
    assert orders_of(alpaca, CID)[1]["qty"] == "3"
    alpaca.set_price("AAPL", "185")
    done = await alpaca_broker.get_order(CID, "AAPL")
    assert (done.status, done.filled_quantity) == (BrokerStatus.FILLED, 5)
    assert [(f.quantity, f.price) for f in done.fills] == [(2, D("195.10")), (3, 185)]
    assert done.fills[0] == part.fills[0]  # told once
    spent = sum((f.quantity * f.price for f in done.fills), D(0))
    assert spent / done.filled_quantity == D("189.04")


async def test_a_cancel_cancels_both_legs(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await alpaca_broker.submit(CID, oco())
    cancelled = await alpaca_broker.cancel(CID, "AAPL")
    assert cancelled.status is BrokerStatus.CANCELLED and cancelled.fills == []
    parent, leg = orders_of(alpaca, CID)
    assert (parent["status"], leg["status"]) == ("canceled", "canceled")
    deletes = [r for r in alpaca.log if r.method == "DELETE"]
    assert len(deletes) == 1  # the parent's: Alpaca cancels the rest of the group
    # Cancelled already (an earlier answer lost): told as it is, nothing sent again.
    assert (await alpaca_broker.cancel(CID, "AAPL")).status is BrokerStatus.CANCELLED
    assert len([r for r in alpaca.log if r.method == "DELETE"]) == 1
    # Nothing moves once cancelled: neither leg fills at its price.
    alpaca.set_price("AAPL", "185")
    alpaca.set_price("AAPL", "195")
    assert (await alpaca_broker.get_order(CID, "AAPL")).filled_quantity == 0


async def test_a_cancel_once_the_stop_has_taken_over_cancels_the_stop_leg(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    """The stop leg filled two of five (the take-profit is ended by it): the cancel
    goes to the leg, and the oco is cancelled with its two filled."""
    await alpaca_broker.submit(CID, oco())
    _, leg = orders_of(alpaca, CID)
    alpaca.engine.fill(leg["client_order_id"], D("2"), D("184.90"))
    parent, leg = orders_of(alpaca, CID)
    assert (parent["status"], leg["status"]) == ("canceled", "partially_filled")
    cancelled = await alpaca_broker.cancel(CID, "AAPL")
    assert (cancelled.status, cancelled.filled_quantity) == (BrokerStatus.CANCELLED, 2)
    assert [(f.quantity, f.price) for f in cancelled.fills] == [(2, D("184.90"))]
    assert orders_of(alpaca, CID)[1]["status"] == "canceled"
    assert len([r for r in alpaca.log if r.method == "DELETE"]) == 1  # the leg's


async def test_the_updates_of_either_leg_are_told_as_the_oco(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    """The stop leg's updates carry Alpaca's client id, not ours: each is told as our
    oco, looked up nested; the last says it filled at the stop."""
    feed = Feed(alpaca_broker)
    try:
        await until(lambda: listening(alpaca))
        await alpaca_broker.submit(CID, oco())
        alpaca.set_price("AAPL", "185")
        reports: list[BrokerOrder] = []
        while not reports or reports[-1].status is not BrokerStatus.FILLED:
            reports.append(await feed.next())
    finally:
        await feed.stop()
    assert {r.client_order_id for r in reports} == {CID}
    assert [(f.quantity, f.price) for f in reports[-1].fills] == [(5, 185)]


async def test_the_local_alpaca_refuses_an_oco_as_alpaca_does(
        alpaca: AlpacaExchangeServer) -> None:
    good = {"symbol": "AAPL", "side": "sell", "type": "limit", "time_in_force": "gtc",
            "qty": "5", "order_class": "oco", "take_profit": {"limit_price": "195"},
            "stop_loss": {"stop_price": "185"}}
    bad: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "take_profit"},
         "oco orders require take_profit.limit_price"),
        ({k: v for k, v in good.items() if k != "stop_loss"},
         "oco orders require stop_loss.stop_price"),
        ({**good, "stop_loss": {"limit_price": "184"}},
         "oco orders require stop_loss.stop_price"),
        ({**good, "type": "market"}, "oco orders must be limit orders"),
        ({**good, "time_in_force": "ioc"}, "oco orders take time_in_force day or gtc"),
        ({**good, "qty": "0.5"}, "oco orders take a qty of whole shares"),
        ({**good, "symbol": "BTC/USD", "qty": "1"},
         "crypto orders support the simple order class only"),
        ({**good, "stop_loss": {"stop_price": "189.995"}},
         "stop_price must be at least 0.01 below the base price 190"),
    ]
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET}
    async with aiohttp.ClientSession(headers=headers) as session:
        for i, (body, message) in enumerate(bad):
            async with session.post(f"{alpaca.url}/v2/orders",
                                    json={**body, "client_order_id": f"bad-{i}"}) as reply:
                assert reply.status == 422, body
                answer = await reply.json()
            assert answer["message"] == message and answer["code"] in (40010001, 42210000)
        async with session.post(f"{alpaca.url}/v2/orders", json=good) as reply:
            assert reply.status == 200
            placed = await reply.json()
    assert placed["order_class"] == "oco" and len(placed["legs"]) == 1
    assert len(alpaca.engine.orders) == 2  # nothing of the refused ones


async def test_an_oco_exit_goes_natively_through_a_worker_and_fills_at_its_stop(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    async with running(alpaca_settings(redis_url, alpaca)):
        placed, result = await exit_of_a_position(client, redis_client, "AAPL",
                                                  "5", "195", "185")
        assert result.status is ResultStatus.ACCEPTED and not result.emulated, result
        cid = placed.client_order_id or ""
        body = sent_body(alpaca, cid)
        assert (body["order_class"], body["take_profit"], body["stop_loss"]) == (
            "oco", {"limit_price": "195"}, {"stop_price": "185"})
        alpaca.set_price("AAPL", "185")
        status = await order_in(client, cid, OrderState.FILLED, timeout=15)
        assert not status.emulated
        assert (status.filled_quantity, status.average_price) == (D("5"), D("185"))
        assert [(f.quantity, f.price) for f in status.fills] == [(D("5"), D("185"))]
    assert alpaca.orders_for(cid) == 1


async def test_with_polling_slowed_the_stream_tells_the_take_profits_fill(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    # Polling once a minute: within the test only the stream (and the lookups its
    # updates lead to) can tell the fill.
    async with running(stream_settings(redis_url, alpaca, track_interval_ms=60_000)):
        await until(lambda: listening(alpaca))
        placed, result = await exit_of_a_position(client, redis_client, "AAPL",
                                                  "5", "195", "185")
        assert result.status is ResultStatus.ACCEPTED and not result.emulated, result
        alpaca.set_price("AAPL", "195")
        status = await order_in(client, placed.client_order_id or "", OrderState.FILLED,
                                timeout=15)
        assert (status.filled_quantity, status.average_price) == (D("5"), D("195"))


async def test_a_crypto_oco_stays_emulated_and_sends_only_the_leg_reached(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    """Alpaca's crypto takes no order class: the emulator holds the oco (nothing sent)
    and sends its stop leg as a market sell when the price falls to the stop."""
    async with running(alpaca_settings(redis_url, alpaca)):
        placed, result = await exit_of_a_position(client, redis_client, "BTC/USD",
                                                  "0.1", "61000", "59000")
        assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        cid = placed.client_order_id or ""
        assert alpaca.orders_for(cid) == 0
        alpaca.set_price("BTC/USD", "59000")
        status = await order_in(client, cid, OrderState.FILLED, timeout=15)
        assert status.emulated and status.average_price == D("59000")
        body = sent_body(alpaca, cid)
        assert (body["type"], body["side"], body["qty"]) == ("market", "sell", "0.1")
        assert "order_class" not in body


async def test_what_alpacas_oco_cannot_say_is_left_to_the_emulator(
        alpaca_broker: AlpacaBroker) -> None:
    """A stop-limit leg's ioc, an oco that may open a position, a crypto pair."""
    for order, field in [
            (oco(stop_limit_price=WireDecimal("184"), time_in_force=TimeInForce.IOC),
             "time_in_force"),
            (msgspec.structs.replace(oco(), reduce_only=False), "reduce_only"),
            (oco("0.1", "61000", "59000", symbol="BTC/USD"), "type")]:
        with pytest.raises(NeedsEmulation) as caught:
            alpaca_broker.check(order)
        assert caught.value.field == field
