"""The Binance adapter, through the real python-binance client, against the local exchange:
what each order type looks like on the wire, how every error lands in the taxonomy, and
the usage headers the shared rate limiter reads."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from devtools.binance_exchange import BinanceExchangeServer, signing
from executor.brokers.base import (
    AuthenticationFailed,
    Banned,
    BrokerStatus,
    DuplicateClientId,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
)
from executor.brokers.binance.broker import BinanceBroker
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, WireDecimal
from tests.fakes.binance import SECRET, account_for, broker, exchange

__all__ = ["broker", "exchange"]  # fixtures

D = WireDecimal


def spec(type: OrderType = OrderType.MARKET, quantity: str = "0.01", *, side: Side = Side.BUY,
         symbol: str = "BTCUSDT", **kw: Any) -> OrderSpec:
    return OrderSpec(account="bn", symbol=symbol, side=side, type=type, quantity=D(quantity),
                     **kw)


def last_order(server: BinanceExchangeServer) -> dict[str, str]:
    sent = server.orders_sent()[-1]
    params = dict(sent.params)
    # Signed as Binance checks it: the raw body as it arrived, minus the signature.
    payload, signature = signing.rest_payload(sent.query, sent.body)
    assert signature is not None and signing.verify(SECRET, payload, signature)
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.headers["X-MBX-APIKEY"] == "test-api-key-0123456789"
    assert params.pop("signature") == signature
    assert params.pop("recvWindow") == "5000"  # the account's, not python-binance's 10000
    assert params.pop("timestamp").isdigit()
    return params


# -- each order type as Binance receives it --------------------------------------------------

CASES = [
    (spec(OrderType.MARKET, "0.00100"),
     {"type": "MARKET", "quantity": "0.00100"}),
    (spec(OrderType.LIMIT, "0.010", price=D("49000.50")),
     {"type": "LIMIT", "quantity": "0.010", "price": "49000.50", "timeInForce": "GTC"}),
    (spec(OrderType.LIMIT, "0.5", price=D("51000"), time_in_force=TimeInForce.IOC),
     {"type": "LIMIT", "quantity": "0.5", "price": "51000", "timeInForce": "IOC"}),
    (spec(OrderType.LIMIT, "0.5", price=D("51000"), time_in_force=TimeInForce.FOK),
     {"type": "LIMIT", "quantity": "0.5", "price": "51000", "timeInForce": "FOK"}),
    (spec(OrderType.LIMIT_MAKER, "1", price=D("40000")),
     {"type": "LIMIT_MAKER", "quantity": "1", "price": "40000"}),
    (spec(OrderType.STOP, "0.2", side=Side.SELL, stop_price=D("45000")),
     {"type": "STOP_LOSS", "quantity": "0.2", "stopPrice": "45000", "side": "SELL"}),
    (spec(OrderType.STOP_LIMIT, "0.2", side=Side.SELL, price=D("44900"),
          stop_price=D("45000")),
     {"type": "STOP_LOSS_LIMIT", "quantity": "0.2", "price": "44900", "stopPrice": "45000",
      "timeInForce": "GTC", "side": "SELL"}),
    (spec(OrderType.TAKE_PROFIT, "0.2", side=Side.SELL, stop_price=D("55000")),
     {"type": "TAKE_PROFIT", "quantity": "0.2", "stopPrice": "55000", "side": "SELL"}),
    (spec(OrderType.TAKE_PROFIT_LIMIT, "0.2", side=Side.SELL, price=D("55100"),
          stop_price=D("55000"), time_in_force=TimeInForce.GTC),
     {"type": "TAKE_PROFIT_LIMIT", "quantity": "0.2", "price": "55100", "stopPrice": "55000",
      "timeInForce": "GTC", "side": "SELL"}),
]


@pytest.mark.parametrize(("order", "expected"), CASES, ids=[c[1]["type"] + "-" + str(i)
                                                            for i, c in enumerate(CASES)])
async def test_each_order_type_reaches_binance_as_binance_expects(
        broker: BinanceBroker, exchange: BinanceExchangeServer, order: OrderSpec,
        expected: dict[str, str]) -> None:
    broker.check(order)
    report = await broker.submit("cid-type-1", order)
    want = {"symbol": "BTCUSDT", "side": "BUY", "newClientOrderId": "cid-type-1",
            "newOrderRespType": "FULL", **expected}
    assert last_order(exchange) == want
    assert report.client_order_id == "cid-type-1"
    assert report.broker_order_id.isdigit()
    assert report.quantity == order.quantity


async def test_amounts_are_sent_in_fixed_point_never_with_an_exponent(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    # Decimal("4.9E+4") and Decimal("1.0E-3") print with exponents; Binance refuses those
    # (-1100), so they must go out as "49000" and "0.0010".
    order = msgspec.structs.replace(spec(OrderType.LIMIT, "1", price=D("1")),
                                    quantity=D(Decimal("1.0E-3")), price=D(Decimal("4.9E+4")))
    await broker.submit("cid-exp", order)
    params = last_order(exchange)
    assert (params["quantity"], params["price"]) == ("0.0010", "49000")


async def test_market_fill_comes_back_with_its_fills(broker: BinanceBroker) -> None:
    report = await broker.submit("cid-mkt", spec(OrderType.MARKET, "0.02"))
    assert report.status is BrokerStatus.FILLED
    assert report.filled_quantity == Decimal("0.02")
    assert [(f.price, f.quantity) for f in report.fills] == [(Decimal(50000), Decimal("0.02"))]
    assert str(report.fills[0].price) == "50000"  # Binance's "50000.00000000", tidied
    assert report.fills[0].commission_asset == "BTC"


async def test_get_order_and_cancel_by_client_id(broker: BinanceBroker,
                                                 exchange: BinanceExchangeServer) -> None:
    await broker.submit("cid-rest", spec(OrderType.LIMIT, "0.01", price=D("40000")))
    found = await broker.get_order("cid-rest", "BTCUSDT")
    assert found.status is BrokerStatus.NEW
    assert exchange.log[-1].params["origClientOrderId"] == "cid-rest"
    exchange.exchange.fill("BTCUSDT", "cid-rest", Decimal("0.004"))
    cancelled = await broker.cancel("cid-rest", "BTCUSDT")
    assert cancelled.status is BrokerStatus.CANCELLED
    assert cancelled.client_order_id == "cid-rest"
    # The fill before the cancel comes with it (myTrades), so it is never lost.
    assert [f.quantity for f in cancelled.fills] == [Decimal("0.004")]
    with pytest.raises(NotCancellable):
        await broker.cancel("cid-rest", "BTCUSDT")


async def test_unknown_orders(broker: BinanceBroker) -> None:
    with pytest.raises(OrderNotFound):
        await broker.get_order("nope", "BTCUSDT")
    with pytest.raises(OrderNotFound):
        await broker.cancel("nope", "BTCUSDT")


async def test_open_orders(broker: BinanceBroker) -> None:
    await broker.submit("cid-o1", spec(OrderType.LIMIT, "0.01", price=D("40000")))
    await broker.submit("cid-o2", spec(OrderType.LIMIT, "0.1", price=D("2500"),
                                       symbol="ETHUSDT"))
    assert {o.client_order_id for o in await broker.open_orders()} == {"cid-o1", "cid-o2"}
    assert [o.client_order_id for o in await broker.open_orders("ETHUSDT")] == ["cid-o2"]


async def test_reference_price_is_cached_briefly(broker: BinanceBroker,
                                                 exchange: BinanceExchangeServer) -> None:
    assert await broker.reference_price("BTCUSDT") == Decimal(50000)
    exchange.set_price("BTCUSDT", "51000")
    assert await broker.reference_price("BTCUSDT") == Decimal(50000)  # cached
    assert await broker.reference_price("NOPE") is None


async def test_usage_headers_feed_the_limiter(broker: BinanceBroker) -> None:
    await broker.submit("cid-u1", spec())
    await broker.submit("cid-u2", spec())
    usage = broker.usage()
    assert usage["orders_10s"] == 2
    assert usage["orders_1d"] == 2
    assert usage["weight_1m"] >= 22  # exchangeInfo 20, two orders
    assert broker.weights["get_order"] == 4
    assert broker.weights["open_orders_all"] == 80


async def test_filters_that_need_the_market_are_checked_at_submit_without_a_call(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    far = spec(OrderType.LIMIT, "0.01", price=D("9000"))  # under 0.2x the price
    assert broker.check(far) is far  # check answers the same for every redelivery
    await broker.reference_price("BTCUSDT")
    with pytest.raises(PermanentError, match="PERCENT_PRICE_BY_SIDE") as caught:
        await broker.submit("cid-far", far)
    assert "10000 to 250000" in str(caught.value)
    assert exchange.orders_sent() == []


async def test_ping(broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await broker.ping()
    await exchange.close()
    with pytest.raises(RetryableError):
        await broker.ping()


# -- errors into the taxonomy ----------------------------------------------------------------

@pytest.mark.parametrize(("status", "code", "msg", "kind"), [
    (400, -2010, "Account has insufficient balance for requested action.", PermanentError),
    (400, -1013, "Filter failure: LOT_SIZE", PermanentError),
    (400, -1121, "Invalid symbol.", PermanentError),
    (400, -1022, "Signature for this request is not valid.", AuthenticationFailed),
    (401, -2014, "API-key format invalid.", AuthenticationFailed),
    (401, -2015, "Invalid API-key, IP, or permissions for action.", AuthenticationFailed),
    (429, -1003, "Too much request weight used", RateLimited),
    (429, -1015, "Too many new orders.", RateLimited),
    (418, -1003, "Way too much request weight used; IP banned", Banned),
    (503, -1000, "Service unavailable", UnknownOutcome),
    (408, -1007, "Timeout waiting for response from backend server.", UnknownOutcome),
])
async def test_submit_errors_map_into_the_taxonomy(
        broker: BinanceBroker, exchange: BinanceExchangeServer, status: int, code: int,
        msg: str, kind: type[Exception]) -> None:
    exchange.inject("POST", "/api/v3/order", status, code=code, msg=msg, retry_after=7)
    with pytest.raises(kind) as caught:
        await broker.submit("cid-err", spec())
    assert type(caught.value) is kind
    assert str(code) in str(caught.value) and "signature" not in str(caught.value)
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 7.0
    assert exchange.orders_for("cid-err") == 0


async def test_5xx_after_the_order_was_stored_is_an_unknown_outcome(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    exchange.inject("POST", "/api/v3/order", 503, after=True)
    with pytest.raises(UnknownOutcome):
        await broker.submit("cid-5xx", spec())
    assert exchange.orders_for("cid-5xx") == 1
    assert (await broker.get_order("cid-5xx", "BTCUSDT")).status is BrokerStatus.FILLED


async def test_5xx_on_a_lookup_is_retryable(broker: BinanceBroker,
                                            exchange: BinanceExchangeServer) -> None:
    exchange.inject("GET", "/api/v3/order", 502)
    with pytest.raises(RetryableError):
        await broker.get_order("x", "BTCUSDT")


async def test_real_matching_engine_rejections(broker: BinanceBroker,
                                               exchange: BinanceExchangeServer) -> None:
    with pytest.raises(PermanentError, match="unknown symbol 'DOGEUSDT'"):
        await broker.submit("cid-sym", spec(symbol="DOGEUSDT"))
    assert exchange.orders_sent() == []  # refused before sending
    with pytest.raises(PermanentError, match="would immediately match"):
        await broker.submit("cid-lm", spec(OrderType.LIMIT_MAKER, "0.01", price=D("51000")))
    with pytest.raises(PermanentError, match="insufficient balance"):
        await broker.submit("cid-bal", spec(OrderType.MARKET, "90"))
    first = await broker.submit("cid-dup", spec(OrderType.LIMIT, "0.01", price=D("40000")))
    # "Duplicate order sent.": an earlier send of ours landed. Never a rejection: the order
    # is looked up, and it is that one.
    with pytest.raises(DuplicateClientId, match="Duplicate order sent"):
        await broker.submit("cid-dup", spec(OrderType.LIMIT, "0.01", price=D("40000")))
    assert exchange.orders_for("cid-dup") == 1
    assert exchange.received["cid-dup"] == 2
    found = await broker.get_order("cid-dup", "BTCUSDT")
    assert found.broker_order_id == first.broker_order_id


async def test_timestamp_outside_the_window_resyncs_the_clock_and_retries_once(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    exchange.exchange.offset_ms = 30_000  # the exchange's clock jumps 30 s ahead
    report = await broker.submit("cid-ts", spec())
    assert report.status is BrokerStatus.FILLED
    sent = [r for r in exchange.orders_sent() if r.params["newClientOrderId"] == "cid-ts"]
    assert len(sent) == 2  # refused (-1021), then accepted
    assert exchange.orders_for("cid-ts") == 1


async def test_bad_credentials_fail_with_one_clear_log_line(
        exchange: BinanceExchangeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WRONG_SECRET", "not-the-secret")
    b = BinanceBroker("bn", account_for(exchange).__class__(
        api_key_env="ORDERSTREAM_TEST_BINANCE_KEY", api_secret_env="WRONG_SECRET",
        testnet=False, base_url=exchange.url))
    await b.start()  # public endpoints only
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(AuthenticationFailed, match="-1022"):
            await b.submit("cid-auth", spec())
    finally:
        await b.close()
    lines = [r.getMessage() for r in caplog.records if "AUTHENTICATION FAILED" in r.getMessage()]
    assert len(lines) == 1
    assert "not-the-secret" not in caplog.text and "signature=" not in caplog.text


async def test_connection_refused_is_retryable_for_a_submit(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    await exchange.close()
    # The first call may meet a pooled connection the server closed: whether it was sent
    # is unknown. Once the pool is empty, the refused connection certainly sent nothing.
    with pytest.raises((UnknownOutcome, RetryableError)):
        await broker.submit("cid-down", spec())
    with pytest.raises(RetryableError) as caught:
        await broker.submit("cid-down", spec())
    assert "unreachable" in str(caught.value)


async def test_a_start_that_fails_after_connecting_closes_its_session(
        exchange: BinanceExchangeServer) -> None:
    exchange.inject("GET", "/api/v3/exchangeInfo", 503)
    b = BinanceBroker("bn", account_for(exchange))
    with pytest.raises(RetryableError):
        await b.start()
    assert b.client is None  # closed (an open aiohttp session would warn, and fail here)


async def test_an_unreachable_server_fails_start_as_retryable(
        exchange: BinanceExchangeServer) -> None:
    await exchange.close()
    b = BinanceBroker("bn", account_for(exchange))
    with pytest.raises(RetryableError, match="unreachable"):
        await b.start()
    await b.close()


async def test_a_burst_over_the_weight_cap_gets_429_then_418(
        broker: BinanceBroker, exchange: BinanceExchangeServer) -> None:
    # Two lookups of 4 + 4: a broker without a record store cannot tell an OCO from a single
    # order, so a client id Binance does not know is also looked up as an order list.
    exchange.weight_limit = broker.usage()["weight_1m"] + 16
    exchange.ban_after = 2
    for _ in range(2):
        with pytest.raises(OrderNotFound):
            await broker.get_order("x", "BTCUSDT")
    for _ in range(3):
        with pytest.raises(RateLimited) as caught:
            await broker.get_order("x", "BTCUSDT")
        assert type(caught.value) is RateLimited
        assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 60
    with pytest.raises(Banned) as banned:
        await broker.get_order("x", "BTCUSDT")
    assert banned.value.retry_after == 120
    assert exchange.statuses[429] == 3 and exchange.statuses[418] == 1
