"""OANDA's native market_if_touched through a whole worker on the local OANDA venue: a buy
is sent as v20's MARKET_IF_TOUCHED at its stop_price, triggered on the mid, rests while
the mid is above it and fills at its boundary; one whose stop_price the mid has already
reached (v20 would take it as a stop the other way), and the conditional types v20 has no
entry order for, are refused before anything is sent."""

from __future__ import annotations

from decimal import Decimal

from devtools.oanda_exchange import OandaExchangeServer
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from tests.fakes.oanda import venue

from .conftest import running, until
from .test_oanda_worker import oanda_settings

__all__ = ["venue"]  # fixture
D = Decimal


async def test_a_market_if_touched_buy_fires_at_its_boundary(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    async with running(oanda_settings(redis_url, venue)):
        placed = await client.place("EUR_USD", "buy", "market_if_touched", "1000",
                                    stop_price="1.09")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED, accepted
        cid = placed.client_order_id
        [sent] = [r.body["order"] for r in venue.orders_sent()]
        assert {k: sent[k] for k in ("type", "units", "price", "triggerCondition",
                                     "timeInForce")} == {
            "type": "MARKET_IF_TOUCHED", "units": "1000", "price": "1.09000",
            "triggerCondition": "MID", "timeInForce": "GTC"}

        venue.set_price("EUR_USD", "1.09000", "1.09010")  # the ask touches; the mid not
        status = await client.order(cid)
        assert status is not None and status.state is OrderState.ACCEPTED
        venue.set_price("EUR_USD", "1.08995", "1.09005")  # the mid at 1.09: fired

        async def filled() -> bool:
            s = await client.order(cid)
            return s is not None and s.state is OrderState.FILLED
        await until(filled, 15)
        status = await client.order(cid)
        assert status is not None
        # Filled at market on its own side of the book: a buy at the ask.
        assert [(f.price, f.quantity) for f in status.fills] == [(D("1.09005"), D("1000"))]
    assert venue.orders_for(cid) == 1


async def test_touched_orders_oanda_would_take_otherwise_are_never_sent_natively(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    async with running(oanda_settings(redis_url, venue)):
        # The mid (1.10005) is below a buy's stop_price: ours would trigger at once.
        above = await client.place("EUR_USD", "buy", "market_if_touched", "1000",
                                   stop_price="1.2")
        refused = await client.wait_result(above.request_id, 10)
        assert refused.reason_code == "broker_rejected", refused
        assert refused.reason is not None and "stop_price" in refused.reason
        assert "trigger at once" in refused.reason
        emulated = [
            await client.place("EUR_USD", "buy", "limit_if_touched", "1000",
                               stop_price="1.09", price="1.0905"),
            await client.place("EUR_USD", "sell", "trailing_stop", "1000",
                               trailing_offset="0.001"),
        ]
        for placed in emulated:  # held by the worker's emulator, not sent
            result = await client.wait_result(placed.request_id, 10)
            assert result.status is ResultStatus.ACCEPTED and result.emulated, result
        ioc = await client.place("EUR_USD", "sell", "market_if_touched", "1000",
                                 stop_price="1.2", time_in_force="ioc")
        result = await client.wait_result(ioc.request_id, 10)
        assert result.reason_code == "invalid", result
        assert result.reason is not None and "time_in_force" in result.reason, result
    assert venue.orders_sent() == []


async def test_a_stop_limit_is_emulated_and_sent_as_a_limit_when_the_mid_falls_to_it(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    """v20 has no stop-limit: the worker holds a sell stop_limit (stop 1.09, limit 1.0895)
    and sends v20 a LIMIT at 1.0895 under the same client id once the mid reaches 1.09."""
    async with running(oanda_settings(redis_url, venue)):
        placed = await client.place("EUR_USD", "sell", "stop_limit", "1000",
                                    stop_price="1.09", price="1.0895")
        accepted = await client.wait_result(placed.request_id, 10)
        assert accepted.status is ResultStatus.ACCEPTED and accepted.emulated, accepted
        venue.set_price("EUR_USD", "1.09000", "1.09020")  # the mid 1.0901: above it
        status = await client.order(placed.client_order_id)
        assert status is not None and status.state is OrderState.ACCEPTED
        assert venue.orders_sent() == []
        venue.set_price("EUR_USD", "1.08990", "1.09010")  # the mid at 1.09: fired

        async def sent() -> bool:
            return len(venue.orders_sent()) == 1
        await until(sent, 15)
        [body] = [r.body["order"] for r in venue.orders_sent()]
        assert (body["type"], body["units"], body["price"]) == ("LIMIT", "-1000", "1.08950")
        assert body["clientExtensions"]["id"] == placed.client_order_id
