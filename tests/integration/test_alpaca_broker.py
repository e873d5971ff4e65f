"""The Alpaca adapter, with its own aiohttp client, against the local Alpaca API: what each
order type looks like as the server received it, lookups and cancels by our client id, how
every error lands in the taxonomy (a duplicate client id or a 5xx after the order was
stored is resolved by a lookup, never by a second order), and the usage headers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca import wire
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.base import (
    AuthenticationFailed,
    BrokerStatus,
    DuplicateClientId,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
)
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, WireDecimal
from tests.fakes.alpaca import KEY_ID, SECRET, alpaca, alpaca_account, alpaca_broker

__all__ = ["alpaca", "alpaca_broker"]  # fixtures

D = WireDecimal


def spec(type: OrderType = OrderType.MARKET, quantity: str | None = "2", *,
         side: Side = Side.BUY, symbol: str = "AAPL", **kw: Any) -> OrderSpec:
    return OrderSpec(account="ap", symbol=symbol, side=side, type=type,
                     quantity=None if quantity is None else D(quantity), **kw)


def last_body(server: AlpacaExchangeServer) -> dict[str, Any]:
    sent = server.orders_sent()[-1]
    assert sent.headers["APCA-API-KEY-ID"] == KEY_ID
    assert sent.headers["APCA-API-SECRET-KEY"] == SECRET
    assert sent.headers["Content-Type"] == "application/json"
    body = dict(sent.body)
    assert body.pop("client_order_id")
    return body


CASES = [
    (spec(OrderType.MARKET, "2"),
     {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day", "qty": "2"}),
    (spec(OrderType.MARKET, "0.5", side=Side.SELL),
     {"symbol": "AAPL", "side": "sell", "type": "market", "time_in_force": "day",
      "qty": "0.5"}),
    (spec(OrderType.MARKET, None, quote_quantity=D("100.50")),
     {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day",
      "notional": "100.50"}),
    (spec(OrderType.MARKET, "1", time_in_force=TimeInForce.IOC),
     {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "ioc", "qty": "1"}),
    (spec(OrderType.LIMIT, "3", price=D("150.25")),
     {"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "gtc", "qty": "3",
      "limit_price": "150.25"}),
    (spec(OrderType.LIMIT, "3", price=D("150.25"), time_in_force=TimeInForce.FOK),
     {"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "fok", "qty": "3",
      "limit_price": "150.25"}),
    (spec(OrderType.STOP, "1", side=Side.SELL, stop_price=D("180")),
     {"symbol": "AAPL", "side": "sell", "type": "stop", "time_in_force": "gtc", "qty": "1",
      "stop_price": "180"}),
    (spec(OrderType.STOP_LIMIT, "1", side=Side.SELL, stop_price=D("180"), price=D("179.5")),
     {"symbol": "AAPL", "side": "sell", "type": "stop_limit", "time_in_force": "gtc",
      "qty": "1", "limit_price": "179.5", "stop_price": "180"}),
    (spec(OrderType.MARKET, "0.001", symbol="BTC/USD"),
     {"symbol": "BTC/USD", "side": "buy", "type": "market", "time_in_force": "gtc",
      "qty": "0.001"}),
]


@pytest.mark.parametrize(("order", "expected"), CASES)
async def test_each_order_type_as_the_server_received_it(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer, order: OrderSpec,
        expected: dict[str, Any]) -> None:
    found = await alpaca_broker.submit("cid-1", order)
    assert last_body(alpaca) == expected
    assert alpaca.orders_sent()[-1].body["client_order_id"] == "cid-1"
    assert found.client_order_id == "cid-1" and found.symbol == order.symbol
    assert alpaca.received["cid-1"] == 1


async def test_a_market_order_fills_with_its_fill_and_a_limit_rests(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    filled = await alpaca_broker.submit("m-1", spec(OrderType.MARKET, "2"))
    assert filled.status is BrokerStatus.FILLED and filled.filled_quantity == 2
    [fill] = filled.fills
    assert (fill.price, fill.quantity) == (Decimal("190"), Decimal("2"))
    assert fill.fill_id == f"{filled.broker_order_id}:2"
    resting = await alpaca_broker.submit("l-1", spec(OrderType.LIMIT, "2", price=D("180")))
    assert resting.status is BrokerStatus.NEW and resting.fills == []


async def test_partial_fills_are_told_once_each_and_add_up_to_the_average(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await alpaca_broker.submit("p-1", spec(OrderType.LIMIT, "4", price=D("180")))
    alpaca.engine.fill("p-1", Decimal("1"), Decimal("180"))
    first = await alpaca_broker.get_order("p-1", "AAPL")
    assert first.status is BrokerStatus.PARTIALLY_FILLED
    assert [(f.quantity, f.price) for f in first.fills] == [(1, 180)]
    alpaca.engine.fill("p-1", None, Decimal("170"))
    again = await alpaca_broker.get_order("p-1", "AAPL")
    assert again.status is BrokerStatus.FILLED
    assert [(f.quantity, f.price) for f in again.fills] == [(1, 180), (3, 170)]
    assert again.fills[0] == first.fills[0]  # the same fill, the same id: applied once


async def test_lookup_and_cancel_by_client_id(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    placed = await alpaca_broker.submit("c-1", spec(OrderType.LIMIT, "1", price=D("100")))
    found = await alpaca_broker.get_order("c-1", "AAPL")
    assert (found.broker_order_id, found.status) == (placed.broker_order_id, BrokerStatus.NEW)
    lookups = [r for r in alpaca.log if r.path == "/v2/orders:by_client_order_id"]
    assert lookups[-1].query == {"client_order_id": "c-1"}

    cancelled = await alpaca_broker.cancel("c-1", "AAPL")
    assert cancelled.status is BrokerStatus.CANCELLED
    deletes = [r for r in alpaca.log if r.method == "DELETE"]
    assert [r.path for r in deletes] == ["/v2/orders/{order_id}"]
    # Cancelled already (a cancel whose answer was lost): told as it is, no second DELETE.
    assert (await alpaca_broker.cancel("c-1", "AAPL")).status is BrokerStatus.CANCELLED
    assert len([r for r in alpaca.log if r.method == "DELETE"]) == 1

    await alpaca_broker.submit("c-2", spec(OrderType.MARKET, "1"))  # filled at once
    with pytest.raises(NotCancellable):
        await alpaca_broker.cancel("c-2", "AAPL")
    with pytest.raises(OrderNotFound):
        await alpaca_broker.get_order("nobody", "AAPL")
    with pytest.raises(OrderNotFound):
        await alpaca_broker.cancel("nobody", "AAPL")


async def test_a_cancel_racing_a_fill_is_not_cancellable(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    await alpaca_broker.submit("r-1", spec(OrderType.LIMIT, "1", price=D("100")))
    alpaca.inject("DELETE", "/v2/orders/{order_id}", 422, code=42210000,
                  message="order status is not cancelable")
    with pytest.raises(NotCancellable):
        await alpaca_broker.cancel("r-1", "AAPL")


async def test_a_long_client_id_is_shortened_the_same_way_for_sends_and_lookups(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    ours = "strategy-alpha-" + "x" * 60
    placed = await alpaca_broker.submit(ours, spec(OrderType.LIMIT, "1", price=D("100")))
    sent = alpaca.orders_sent()[-1].body["client_order_id"]
    assert sent == wire.client_id(ours) and len(sent) == wire.MAX_CLIENT_ID
    assert placed.client_order_id == ours
    found = await alpaca_broker.get_order(ours, "AAPL")
    assert (found.client_order_id, found.broker_order_id) == (ours, placed.broker_order_id)
    assert (await alpaca_broker.cancel(ours, "AAPL")).status is BrokerStatus.CANCELLED


async def test_a_duplicate_client_id_is_resolved_by_lookup_without_a_second_order(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    first = await alpaca_broker.submit("d-1", spec())
    with pytest.raises(DuplicateClientId) as caught:
        await alpaca_broker.submit("d-1", spec())
    assert "client_order_id must be unique" in str(caught.value)
    assert isinstance(caught.value, UnknownOutcome)  # never "rejected": looked up
    found = await alpaca_broker.get_order("d-1", "AAPL")
    assert found.broker_order_id == first.broker_order_id
    assert found.status is BrokerStatus.FILLED
    assert alpaca.orders_for("d-1") == 1


async def test_a_5xx_after_the_order_was_stored_is_unknown_then_found(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.inject("POST", "/v2/orders", 503, after=True)
    with pytest.raises(UnknownOutcome) as caught:
        await alpaca_broker.submit("u-1", spec())
    assert not isinstance(caught.value, DuplicateClientId)
    found = await alpaca_broker.get_order("u-1", "AAPL")
    assert found.status is BrokerStatus.FILLED and found.filled_quantity == 2
    assert alpaca.orders_for("u-1") == 1 and alpaca.received["u-1"] == 1


async def test_a_dropped_connection_on_a_send_is_unknown_and_on_a_read_retryable(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.drop("POST", "/v2/orders", after=True)
    with pytest.raises(UnknownOutcome):
        await alpaca_broker.submit("x-1", spec())
    assert alpaca.orders_for("x-1") == 1 and alpaca.received["x-1"] == 1  # never resent
    # aiohttp sends an idempotent request again once on a connection that dropped: twice.
    alpaca.drop("GET", "/v2/orders:by_client_order_id", times=2)
    with pytest.raises(RetryableError):
        await alpaca_broker.get_order("x-1", "AAPL")
    assert (await alpaca_broker.get_order("x-1", "AAPL")).status is BrokerStatus.FILLED


async def test_a_late_fill_is_seen_by_a_later_lookup(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.engine.hold_fills = True
    placed = await alpaca_broker.submit("late-1", spec())
    assert placed.status is BrokerStatus.NEW and placed.fills == []
    alpaca.engine.fill("late-1")
    found = await alpaca_broker.get_order("late-1", "AAPL")
    assert found.status is BrokerStatus.FILLED and len(found.fills) == 1


async def test_errors_land_in_the_taxonomy(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.inject("POST", "/v2/orders", 429, code=42910000, message="rate limit exceeded")
    with pytest.raises(RateLimited) as limited:
        await alpaca_broker.submit("e-1", spec())
    assert limited.value.retry_after is not None and 0 <= limited.value.retry_after <= 60
    alpaca.inject("POST", "/v2/orders", 500)
    with pytest.raises(UnknownOutcome):
        await alpaca_broker.submit("e-2", spec())
    alpaca.inject("GET", "/v2/orders:by_client_order_id", 502)
    with pytest.raises(RetryableError):
        await alpaca_broker.get_order("e-2", "AAPL")
    # 403 with a code is Alpaca refusing the order, not our key.
    alpaca.engine.buying_power = Decimal("10")
    with pytest.raises(PermanentError) as refused:
        await alpaca_broker.submit("e-3", spec())
    assert not isinstance(refused.value, AuthenticationFailed)
    assert "40310000" in str(refused.value)
    assert dict(alpaca.received) == {"e-3": 1}  # the faults answered before counting


async def test_wrong_or_missing_keys_fail_authentication_without_the_secret(
        alpaca: AlpacaExchangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.alpaca import SECRET_ENV
    monkeypatch.setenv(SECRET_ENV, "not-the-secret-but-still-secret")
    broker = AlpacaBroker("ap", alpaca_account(alpaca))
    with pytest.raises(AuthenticationFailed) as caught:
        await broker.start()
    assert "403" in str(caught.value) and "not-the-secret" not in str(caught.value)
    monkeypatch.setenv(SECRET_ENV, "   ")
    with pytest.raises(AuthenticationFailed) as blank:
        await AlpacaBroker("ap", alpaca_account(alpaca)).start()
    assert SECRET_ENV in str(blank.value)
    # 401: no key at all reached the server.
    assert wire.map_error(401, {"message": "unauthorized."}, wire.Call.SUBMIT).__class__ is (
        AuthenticationFailed)


async def test_a_401_from_the_server_is_authentication_failed(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.inject("GET", "/v2/orders:by_client_order_id", 401, message="unauthorized.")
    with pytest.raises(AuthenticationFailed) as caught:
        await alpaca_broker.get_order("a-1", "AAPL")
    assert str(caught.value) == "alpaca HTTP 401: unauthorized."


async def test_start_reads_assets_and_check_refuses_before_sending(
        alpaca: AlpacaExchangeServer) -> None:
    broker = AlpacaBroker("ap", alpaca_account(alpaca, symbols=["AAPL", "GME", "NOPE"]))
    await broker.start()
    try:
        assert set(broker.assets) == {"AAPL", "GME"}
        from producer.contract import ContractError
        for order, field in [
                (spec(symbol="NOPE"), "symbol"), (spec(symbol="MSFT"), "symbol"),
                (spec(quantity="0.5", symbol="GME"), "quantity"),
                (spec(OrderType.LIMIT_MAKER, price=D("1")), "type"),
                (spec(time_in_force=TimeInForce.GTD), "time_in_force")]:
            with pytest.raises(ContractError) as caught:
                broker.check(order)
            assert caught.value.field == field, order
            with pytest.raises(PermanentError):
                await broker.submit("never", order)
        assert alpaca.orders_sent() == []
    finally:
        await broker.close()


async def test_usage_follows_the_rate_limit_headers(
        alpaca_broker: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    used = alpaca._minute[1]
    assert alpaca_broker.usage() == {"weight_1m": used}
    await alpaca_broker.ping()
    assert alpaca_broker.usage() == {"weight_1m": used + 1}
    assert alpaca.log[-1].headers["APCA-API-KEY-ID"] == KEY_ID
    # A quote from the market data API: its rate limit is not the trading API's.
    assert await alpaca_broker.reference_price("AAPL") == Decimal("190.00")
    assert alpaca_broker.usage() == {"weight_1m": used + 1}
    assert (alpaca_broker.base_asset("AAPL"), alpaca_broker.quote_asset("AAPL")) == (
        "AAPL", "USD")
    assert (alpaca_broker.base_asset("BTC/USD"), alpaca_broker.quote_asset("BTC/USD")) == (
        "BTC", "USD")
    assert SECRET not in repr(alpaca_broker)


async def test_reference_prices_are_the_latest_quotes_mid_reused_for_a_while(
        alpaca: AlpacaExchangeServer, alpaca_broker: AlpacaBroker) -> None:
    """A stock's from /v2/stocks/{symbol}/quotes/latest on the account's feed, a crypto
    pair's from /v1beta3/crypto/us/latest/quotes; asked again only after price_cache_ms;
    a symbol the account does not trade, or no quote, is None (risk then denies)."""
    assert await alpaca_broker.reference_price("AAPL") == Decimal("190.00")
    assert await alpaca_broker.reference_price("BTC/USD") == Decimal("60000")
    alpaca.set_price("AAPL", "191.50")
    assert await alpaca_broker.reference_price("AAPL") == Decimal("190.00")  # cached
    asked = [(r.path, r.query) for r in alpaca.log if "quote" in r.path]
    assert asked == [("/v2/stocks/{symbol}/quotes/latest", {"feed": "iex"}),
                     ("/v1beta3/crypto/us/latest/quotes", {"symbols": "BTC/USD"})]
    assert all(r.headers.get("APCA-API-KEY-ID") == KEY_ID for r in alpaca.log)
    assert await alpaca_broker.reference_price("TSLA") is None  # not the account's
    alpaca.engine.prices.pop("MSFT")
    assert await alpaca_broker.reference_price("MSFT") is None  # the API has no quote

    fresh = AlpacaBroker("ap2", alpaca_account(alpaca, price_cache_ms=1, feed="sip"))
    await fresh.start()
    try:
        assert await fresh.reference_price("AAPL") == Decimal("191.50")
    finally:
        await fresh.close()
    assert alpaca.log[-1].query == {"feed": "sip"}
