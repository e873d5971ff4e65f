"""The OANDA adapter against the local v20 venue: each order type as the venue received it,
cancel and lookup by ``@<client id>``, a duplicate client id or a 5xx after the order was
stored resolved by lookup without a second order, and errors in the taxonomy."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.base import (
    AuthenticationFailed,
    BrokerStatus,
    DuplicateClientId,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RetryableError,
    UnknownOutcome,
)
from executor.brokers.oanda.broker import OandaBroker
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, WireDecimal
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, TOKEN_ENV, account_for, oanda, venue

__all__ = ["oanda", "venue"]  # fixtures

D = WireDecimal


def spec(type: OrderType = OrderType.MARKET, quantity: str = "1000", *,
         side: Side = Side.BUY, symbol: str = "EUR_USD", **kw: Any) -> OrderSpec:
    return OrderSpec(account="oa", symbol=symbol, side=side, type=type, quantity=D(quantity),
                     **kw)


def last_order(server: OandaExchangeServer) -> dict[str, Any]:
    sent = server.orders_sent()[-1]
    assert sent.path == f"/v3/accounts/{ACCOUNT_ID}/orders"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept-Datetime-Format"] == "UNIX"
    assert set(sent.body) == {"order"}
    order: dict[str, Any] = sent.body["order"]
    return order


def ids(cid: str) -> dict[str, Any]:
    return {"clientExtensions": {"id": cid}, "tradeClientExtensions": {"id": cid}}


CASES = [
    (spec(OrderType.MARKET, "1000"),
     {"type": "MARKET", "instrument": "EUR_USD", "units": "1000", "timeInForce": "FOK",
      "positionFill": "DEFAULT"}, BrokerStatus.FILLED),
    (spec(OrderType.MARKET, "250", side=Side.SELL, time_in_force=TimeInForce.IOC,
          reduce_only=True),
     {"type": "MARKET", "instrument": "EUR_USD", "units": "-250", "timeInForce": "IOC",
      "positionFill": "REDUCE_ONLY"}, BrokerStatus.FILLED),
    (spec(OrderType.LIMIT, "1000", price=D("1.0950")),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "1000", "price": "1.09500",
      "timeInForce": "GTC", "positionFill": "DEFAULT"}, BrokerStatus.NEW),
    (spec(OrderType.LIMIT, "1000", price=D("1.09"), time_in_force=TimeInForce.GTD,
          expire_at=4_102_444_800_250),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "1000", "price": "1.09000",
      "timeInForce": "GTD", "gtdTime": "4102444800.250", "positionFill": "DEFAULT"},
     BrokerStatus.NEW),
    (spec(OrderType.LIMIT, "5", symbol="USD_JPY", side=Side.SELL, price=D("151"),
          time_in_force=TimeInForce.FOK),
     {"type": "LIMIT", "instrument": "USD_JPY", "units": "-5", "price": "151.000",
      "timeInForce": "FOK", "positionFill": "DEFAULT"}, BrokerStatus.EXPIRED),
    (spec(OrderType.STOP, "0.5", symbol="XAU_USD", side=Side.SELL, stop_price=D("1990.5")),
     {"type": "STOP", "instrument": "XAU_USD", "units": "-0.50", "price": "1990.500",
      "timeInForce": "GTC", "positionFill": "DEFAULT"}, BrokerStatus.NEW),
    (spec(OrderType.TAKE_PROFIT, "1000", side=Side.SELL, stop_price=D("1.2")),
     {"type": "MARKET_IF_TOUCHED", "instrument": "EUR_USD", "units": "-1000",
      "price": "1.20000", "timeInForce": "GTC", "positionFill": "DEFAULT"},
     BrokerStatus.NEW),
]


@pytest.mark.parametrize(("order", "expected", "status"), CASES,
                         ids=[f"{c[1]['type']}-{c[1]['timeInForce']}" for c in CASES])
async def test_each_order_type_as_the_venue_receives_it(
        oanda: OandaBroker, venue: OandaExchangeServer, order: OrderSpec,
        expected: dict[str, Any], status: BrokerStatus) -> None:
    cid = f"c-{expected['type']}-{expected['timeInForce']}".lower()
    oanda.check(order)
    report = await oanda.submit(cid, order)
    assert last_order(venue) == {**expected, **ids(cid)}
    assert report.status is status, report
    assert report.client_order_id == cid and report.broker_order_id.isdigit()
    assert report.quantity == order.quantity
    # Its connections were opened through the pacer (OANDA: 2 new connections a second).
    assert oanda.connections.started >= 1


async def test_a_market_fill_carries_price_units_and_commission(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    venue.venue.commission_per_unit = Decimal("0.0001")
    report = await oanda.submit("m-1", spec(quantity="2000"))
    assert report.status is BrokerStatus.FILLED
    assert report.filled_quantity == Decimal("2000")
    [fill] = report.fills
    assert (fill.price, fill.quantity, fill.commission, fill.commission_asset) == (
        Decimal("1.10010"), Decimal("2000"), Decimal("0.2"), "USD")
    looked_up = await oanda.get_order("m-1", "EUR_USD")
    assert looked_up.fills == report.fills and looked_up.status is BrokerStatus.FILLED


async def test_cancel_and_lookup_by_client_id(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    await oanda.submit("l-1", spec(OrderType.LIMIT, price=D("1.05")))
    found = await oanda.get_order("l-1", "EUR_USD")
    assert (found.status, found.filled_quantity) == (BrokerStatus.NEW, 0)
    cancelled = await oanda.cancel("l-1", "EUR_USD")
    assert cancelled.status is BrokerStatus.CANCELLED and cancelled.reason is None
    paths = [(r.method, r.path) for r in venue.log if r.name in ("get_order", "cancel")]
    base = f"/v3/accounts/{ACCOUNT_ID}/orders/@l-1"
    assert paths[:2] == [("GET", base), ("PUT", base + "/cancel")]
    with pytest.raises(NotCancellable):
        await oanda.cancel("l-1", "EUR_USD")
    with pytest.raises(OrderNotFound):
        await oanda.get_order("never-sent", "EUR_USD")
    with pytest.raises(OrderNotFound):
        await oanda.cancel("never-sent", "EUR_USD")


async def test_a_resting_limit_fills_when_the_price_crosses(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    await oanda.submit("l-2", spec(OrderType.LIMIT, price=D("1.09")))
    venue.set_price("EUR_USD", "1.08990", "1.09000")
    found = await oanda.get_order("l-2", "EUR_USD")
    assert found.status is BrokerStatus.FILLED
    assert [(f.price, f.quantity) for f in found.fills] == [(Decimal("1.09"), Decimal(1000))]


async def test_a_duplicate_client_id_is_looked_up_not_sent_twice(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    first = await oanda.submit("d-1", spec(OrderType.LIMIT, price=D("1.05")))
    with pytest.raises(DuplicateClientId):
        await oanda.submit("d-1", spec(OrderType.LIMIT, price=D("1.05")))
    assert venue.orders_for("d-1") == 1
    found = await oanda.get_order("d-1", "EUR_USD")
    assert found.broker_order_id == first.broker_order_id


async def test_a_5xx_after_the_order_was_stored_is_an_unknown_outcome_found_by_lookup(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    venue.inject("create", 503, after=True)
    with pytest.raises(UnknownOutcome) as info:
        await oanda.submit("u-1", spec())
    assert not isinstance(info.value, DuplicateClientId)
    found = await oanda.get_order("u-1", "EUR_USD")
    assert found.status is BrokerStatus.FILLED and found.filled_quantity == 1000
    assert venue.orders_for("u-1") == 1 and venue.received["u-1"] == 1


async def test_a_dropped_connection_on_submit_is_an_unknown_outcome(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    venue.inject("create", drop=True, after=True)
    with pytest.raises(UnknownOutcome):
        await oanda.submit("u-2", spec())
    assert venue.orders_for("u-2") == 1
    venue.inject("get_order", 502)
    with pytest.raises(RetryableError):  # a lookup that failed says nothing of the order
        await oanda.get_order("u-2", "EUR_USD")
    assert (await oanda.get_order("u-2", "EUR_USD")).status is BrokerStatus.FILLED


async def test_a_late_execution_appears_after_the_unknown_outcome(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    import asyncio

    venue.inject("create", 504, late_s=0.2)
    with pytest.raises(UnknownOutcome):
        await oanda.submit("u-3", spec())
    with pytest.raises(OrderNotFound):
        await oanda.get_order("u-3", "EUR_USD")
    for _ in range(100):
        if venue.orders_for("u-3"):
            break
        await asyncio.sleep(0.05)
    assert (await oanda.get_order("u-3", "EUR_USD")).status is BrokerStatus.FILLED


async def test_a_refusal_by_oanda_is_permanent_with_its_reason(
        oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    venue.venue.instruments["EUR_USD"]["minimumTradeSize"] = "5000"  # changed since start
    with pytest.raises(PermanentError) as info:
        await oanda.submit("r-1", spec())
    assert "HTTP 400 UNITS_MIMIMUM_NOT_MET" in str(info.value)
    assert not isinstance(info.value, UnknownOutcome)


async def test_a_bad_token_is_authentication_failed_and_never_shown(
        venue: OandaExchangeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-secret-value")
    broker = OandaBroker("oa", account_for(venue))
    with pytest.raises(AuthenticationFailed) as info:
        await broker.start()
    assert "HTTP 401" in str(info.value)
    assert "Insufficient authorization" in str(info.value)
    assert venue.statuses[401] == 1
    told = str(info.value) + repr(broker) + caplog.text
    assert "wrong-token-secret-value" not in told and ACCOUNT_ID not in told


async def test_reference_price_assets_and_ping(oanda: OandaBroker,
                                               venue: OandaExchangeServer) -> None:
    assert await oanda.reference_price("EUR_USD") == Decimal("1.10005")
    assert (oanda.base_asset("EUR_USD"), oanda.quote_asset("EUR_USD")) == ("EUR", "USD")
    assert oanda.quote_asset("GBP_USD") is None
    assert await oanda.reference_price("GBP_USD") is None
    await oanda.ping()
    pricing = [r for r in venue.log if r.name == "pricing"]
    assert [r.query for r in pricing] == [{"instruments": "EUR_USD"}]


async def test_the_token_is_in_no_log_line(
        venue: OandaExchangeServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        broker = OandaBroker("oa", account_for(venue))
        await broker.start()
        try:
            await broker.submit("t-1", spec())
            venue.inject("create", 500)
            with pytest.raises(UnknownOutcome) as info:
                await broker.submit("t-2", spec())
        finally:
            await broker.close()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("executor")]
    assert ours and not [m for m in ours if TOKEN in m or ACCOUNT_ID in m]
    assert TOKEN not in str(info.value) and ACCOUNT_ID not in str(info.value)
