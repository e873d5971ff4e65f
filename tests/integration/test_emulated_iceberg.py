"""Icebergs at brokers without them (OANDA, Alpaca), through whole workers on the local
venues: a limit order with ``display_quantity`` is a parent at no broker; the worker shows
``display_quantity`` at a time, as limit orders at its price, the next once the last has
filled; the parent's one result comes when it is filled or cancelled, and the venue never
holds more than the part shown."""

from __future__ import annotations

from decimal import Decimal

from devtools.alpaca_exchange import AlpacaExchangeServer
from devtools.oanda_exchange import OandaExchangeServer
from executor.config import Settings
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from tests.fakes.alpaca import alpaca, alpaca_account
from tests.fakes.oanda import venue

from .conftest import replace, running, settings_for, until
from .test_lists import order_in
from .test_oanda_worker import oanda_settings

__all__ = ["alpaca", "venue"]  # fixtures
D = Decimal


def fast(settings: Settings) -> Settings:
    return replace(settings, worker=replace(settings.worker, emulator_interval_ms=50,
                                            track_interval_ms=100))


async def test_an_oanda_iceberg_shows_one_part_at_a_time_until_filled(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    async with running(fast(oanda_settings(redis_url, venue))):
        sub = await client.place("EUR_USD", "buy", "limit", "2500", price="1.08",
                                 display_quantity="1000", client_order_id="IC1")
        await order_in(client, "IC1-E1", OrderState.ACCEPTED, timeout=10)
        parent = await order_in(client, "IC1", OrderState.ACCEPTED)
        assert parent.spec.algo is not None and parent.spec.algo.strategy == "iceberg"
        [shown] = [r.body["order"] for r in venue.orders_sent()]
        assert (shown["type"], shown["units"], shown["price"]) == ("LIMIT", "1000",
                                                                   "1.08000")
        venue.set_price("EUR_USD", "1.07990", "1.08000")  # the ask reaches it
        parent = await order_in(client, "IC1", OrderState.FILLED, timeout=20)
        result = await client.wait_result(sub, 10)
    sent = [r.body["order"] for r in venue.orders_sent()]
    assert [o["units"] for o in sent] == ["1000", "1000", "500"]
    assert all(o["price"] == "1.08000" and o["type"] == "LIMIT" for o in sent)
    assert (result.status, result.filled_quantity, result.average_price) == (
        ResultStatus.FILLED, D("2500"), D("1.08"))
    assert parent.filled_quantity == D("2500")


async def test_an_alpaca_iceberg_cancelled_cancels_its_shown_part(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    settings = fast(replace(settings_for(redis_url),
                            accounts={"default": alpaca_account(alpaca)}))
    async with running(settings):
        sub = await client.place("AAPL", "buy", "limit", "30", price="150",
                                 display_quantity="10", client_order_id="IC2")
        await order_in(client, "IC2-E1", OrderState.ACCEPTED, timeout=10)
        alpaca.engine.fill("IC2-E1")  # one part filled: the next is shown
        await order_in(client, "IC2-E2", OrderState.ACCEPTED, timeout=10)
        cancel = await client.wait_result(await client.cancel("IC2"), 10)
        assert cancel.order_state is OrderState.PENDING_CANCEL
        result = await client.wait_result(sub, 15)
        second = await order_in(client, "IC2-E2", OrderState.CANCELLED)

        async def three() -> bool:
            return await client.order("IC2-E3") is None
        await until(three, 1)
    assert [r.body["qty"] for r in alpaca.orders_sent()] == ["10", "10"]
    assert all(r.body["limit_price"] == "150" for r in alpaca.orders_sent())
    assert second.filled_quantity == 0
    assert (result.status, result.filled_quantity) == (ResultStatus.CANCELLED, D("10"))
    assert "cancelled with 20 left" in (result.reason or "")


async def test_an_iceberg_of_another_type_is_refused_naming_the_field(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    async with running(oanda_settings(redis_url, venue)):
        sub = await client.place("EUR_USD", "buy", "limit", "2500", price="1.08",
                                 display_quantity="1000", time_in_force="ioc")
        refused = await client.wait_result(sub, 10)
    assert (refused.status, refused.reason_code) == (ResultStatus.FAILED, "invalid")
    assert "gtc or gtd" in (refused.reason or "") and venue.orders_sent() == []
