"""Alpaca's native trailing stop through a whole worker on the local Alpaca API: a trailing
sell stop is sent as Alpaca's trailing_stop with the right trail field, follows a rise
(the local Alpaca's hwm), sits through a small dip, fires on a drop past the trail and its
fill reaches the result and the record; what Alpaca's trailing_stop is not (an activation
price, the other conditional types) is emulated: held by the worker, sent when touched."""

from __future__ import annotations

from decimal import Decimal

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.config import Settings
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from tests.fakes.alpaca import alpaca, alpaca_account

from .conftest import replace, running, settings_for, until

__all__ = ["alpaca"]  # fixture
D = Decimal


def alpaca_settings(redis_url: str, server: AlpacaExchangeServer) -> Settings:
    return replace(settings_for(redis_url, track_interval_ms=100),
                   accounts={"default": alpaca_account(server)})


def sent_body(server: AlpacaExchangeServer, client_order_id: str) -> dict[str, object]:
    [body] = [r.body for r in server.orders_sent()
              if r.body.get("client_order_id") == client_order_id]
    return dict(body)


async def test_a_trailing_sell_stop_follows_a_rise_and_fires_past_its_trail(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    async with running(alpaca_settings(redis_url, alpaca)):
        placed = await client.place("AAPL", "sell", "trailing_stop", "5",
                                    trailing_offset="2.50")
        accepted = await client.wait_result(placed.request_id, 15)
        assert accepted.status is ResultStatus.ACCEPTED, accepted
        cid = placed.client_order_id
        body = sent_body(alpaca, cid)
        assert body["type"] == "trailing_stop" and body["trail_price"] == "2.50"
        assert "trail_percent" not in body and "stop_price" not in body
        assert body["time_in_force"] == "gtc" and body["qty"] == "5"
        at_alpaca = alpaca.engine.get_by_client_id(cid)
        assert (at_alpaca["hwm"], at_alpaca["stop_price"]) == ("190", "187.5")

        alpaca.set_price("AAPL", "196")  # a rise: the stop follows, to 193.5
        alpaca.set_price("AAPL", "194")  # a small dip, above it
        at_alpaca = alpaca.engine.get_by_client_id(cid)
        assert (at_alpaca["status"], at_alpaca["hwm"], at_alpaca["stop_price"]) == (
            "new", "196", "193.5")
        status = await client.order(cid)
        assert status is not None and status.state is OrderState.ACCEPTED

        alpaca.set_price("AAPL", "193.4")  # past the trail: a market order, filled

        async def filled() -> bool:
            s = await client.order(cid)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 15)
        status = await client.order(cid)
        assert status is not None
        assert [(f.price, f.quantity) for f in status.fills] == [(D("193.4"), D("5"))]
        assert status.filled_quantity == D("5") and status.average_price == D("193.4")
        assert status.spec.trailing_offset == D("2.50")
    assert alpaca.orders_for(cid) == 1


async def test_a_trailing_buy_stop_in_basis_points_is_a_trail_percent(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    async with running(alpaca_settings(redis_url, alpaca)):
        placed = await client.place("AAPL", "buy", "trailing_stop", "2", trailing_offset="50",
                                    trailing_offset_type="bps", time_in_force="day")
        accepted = await client.wait_result(placed.request_id, 15)
        assert accepted.status is ResultStatus.ACCEPTED, accepted
        body = sent_body(alpaca, placed.client_order_id)
        assert (body["trail_percent"], body["time_in_force"]) == ("0.5", "day")
        assert "trail_price" not in body
        alpaca.set_price("AAPL", "180")  # a fall: the buy's stop follows, to 180.9
        alpaca.set_price("AAPL", "180.9")  # up past it: fired

        async def filled() -> bool:
            s = await client.order(placed.client_order_id)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 15)
        status = await client.order(placed.client_order_id)
        assert status is not None and status.average_price == D("180.9")


async def test_what_alpaca_has_no_native_order_for_is_emulated_and_sent_when_touched(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    """An activation price, a trailing limit and an if-touched order are held by the
    worker's emulator: nothing reaches Alpaca until the quote's mid touches the buy's stop,
    then a plain market order goes under the same client id and fills. A time in force
    Alpaca's trailing stop refuses is still refused, naming the field."""
    async with running(alpaca_settings(redis_url, alpaca)):
        held = [
            await client.place("AAPL", "sell", "trailing_stop", "5", trailing_offset="1",
                               activation_price="200"),
            await client.place("AAPL", "sell", "trailing_stop_limit", "5",
                               trailing_offset="1", limit_offset="0.5"),
        ]
        touched = await client.place("AAPL", "buy", "market_if_touched", "5",
                                     stop_price="180")
        refused = await client.place("AAPL", "sell", "trailing_stop", "5",
                                     trailing_offset="1", time_in_force="ioc")
        for placed in [*held, touched]:
            result = await client.wait_result(placed.request_id, 15)
            assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        result = await client.wait_result(refused.request_id, 15)
        assert result.reason_code == "invalid", result
        assert result.reason is not None and "time_in_force" in result.reason, result
        assert alpaca.orders_sent() == []

        alpaca.set_price("AAPL", "180")  # the buy's stop, exactly: it fires

        async def filled() -> bool:
            s = await client.order(touched.client_order_id)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 15)
        body = sent_body(alpaca, touched.client_order_id or "")
        assert (body["type"], body["side"], body["qty"]) == ("market", "buy", "5")
        status = await client.order(touched.client_order_id)
        assert status is not None and status.emulated and status.average_price == D("180")
        # The trailing limit sell (trigger 189 from 190) fired on the same fall: a limit
        # at 189 - 0.5, resting above the market.
        async def sent() -> bool:
            return len(alpaca.orders_sent()) == 2
        await until(sent, 15)
        limit = sent_body(alpaca, held[1].client_order_id or "")
        assert (limit["type"], limit["side"], limit["limit_price"]) == ("limit", "sell", "188.50")
    # The one with an activation price (200, never reached) was never sent.
    assert {r.body.get("client_order_id") for r in alpaca.orders_sent()} == {
        touched.client_order_id, held[1].client_order_id}


async def test_a_take_profit_alpaca_has_no_type_for_is_emulated(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    """A sell take_profit at 195 (Alpaca has none): held until the mid reaches 195, then a
    market sell under the same client id."""
    async with running(alpaca_settings(redis_url, alpaca)):
        placed = await client.place("AAPL", "sell", "take_profit", "5", stop_price="195")
        result = await client.wait_result(placed.request_id, 15)
        assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        alpaca.set_price("AAPL", "194.99")
        status = await client.order(placed.client_order_id)
        assert status is not None and status.state is OrderState.ACCEPTED
        assert alpaca.orders_sent() == []
        alpaca.set_price("AAPL", "195")

        async def sent() -> bool:
            return len(alpaca.orders_sent()) == 1
        await until(sent, 15)
        body = sent_body(alpaca, placed.client_order_id or "")
        assert (body["type"], body["side"], body["qty"]) == ("market", "sell", "5")


async def test_with_emulation_off_what_alpaca_lacks_is_refused_naming_the_field(
        redis_url: str, alpaca: AlpacaExchangeServer, client: OrderClient) -> None:
    settings = replace(settings_for(redis_url, track_interval_ms=100, emulate="false"),
                       accounts={"default": alpaca_account(alpaca)})
    async with running(settings):
        placed = await client.place("AAPL", "buy", "market_if_touched", "5", stop_price="180")
        result = await client.wait_result(placed.request_id, 15)
    assert result.reason_code == "invalid", result
    assert result.reason is not None and "emulate is off" in result.reason
    assert "type" in result.reason and alpaca.orders_sent() == []
