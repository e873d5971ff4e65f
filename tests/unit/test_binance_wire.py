"""Binance wire translations: order parameters, reports from order objects and events,
and errors into the taxonomy (transport errors included)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException, BinanceRequestException

from executor.brokers.base import (
    AuthenticationFailed,
    Banned,
    BrokerError,
    BrokerStatus,
    DuplicateClientId,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
    Volume,
)
from executor.brokers.binance import wire
from producer.contract import OrderSpec, OrderType, Side, TimeInForce, WireDecimal


def api_error(status: int, code: int, msg: str = "x",
              headers: dict[str, str] | None = None) -> BinanceAPIException:
    response = SimpleNamespace(headers=headers or {}, request_info=None)
    return BinanceAPIException(response, status, f'{{"code": {code}, "msg": "{msg}"}}')


def test_order_params_never_use_exponents() -> None:
    order = OrderSpec(account="a", symbol="ETHUSDT", side=Side.SELL,
                      type=OrderType.STOP_LIMIT, quantity=WireDecimal(Decimal("1E-8")),
                      price=WireDecimal(Decimal("1.5E+3")), stop_price=WireDecimal("1500.10"),
                      time_in_force=TimeInForce.IOC)
    assert wire.order_params("c1", order) == {
        "symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT",
        "quantity": "0.00000001", "price": "1500", "stopPrice": "1500.10",
        "timeInForce": "IOC", "newClientOrderId": "c1", "newOrderRespType": "FULL"}


def test_report_of_an_order_object() -> None:
    found = wire.report({"symbol": "BTCUSDT", "orderId": 12, "clientOrderId": "cancel-9",
                         "origClientOrderId": "c1", "status": "CANCELED",
                         "origQty": "0.01000000", "executedQty": "0.00000000",
                         "transactTime": 5})
    assert (found.client_order_id, found.broker_order_id, found.status) == (
        "c1", "12", BrokerStatus.CANCELLED)
    assert str(found.quantity) == "0.01" and found.updated_at == 5


@pytest.mark.parametrize(("binance", "ours"), [
    ("NEW", BrokerStatus.NEW), ("PENDING_NEW", BrokerStatus.NEW),
    ("PARTIALLY_FILLED", BrokerStatus.PARTIALLY_FILLED), ("FILLED", BrokerStatus.FILLED),
    ("CANCELED", BrokerStatus.CANCELLED), ("REJECTED", BrokerStatus.REJECTED),
    ("EXPIRED", BrokerStatus.EXPIRED), ("EXPIRED_IN_MATCH", BrokerStatus.EXPIRED)])
def test_statuses(binance: str, ours: BrokerStatus) -> None:
    assert wire.STATUS[binance] is ours


def test_event_report_of_a_trade_and_of_a_cancel() -> None:
    trade: dict[str, Any] = {"e": "executionReport", "s": "BTCUSDT", "c": "c1", "C": "",
                             "x": "TRADE", "X": "PARTIALLY_FILLED", "i": 7, "q": "1.00000000",
                             "z": "0.40000000", "l": "0.40000000", "L": "50000.10000000",
                             "n": "0.00040000", "N": "BTC", "t": 99, "m": True, "T": 3}
    found = wire.event_report(trade)
    assert found.status is BrokerStatus.PARTIALLY_FILLED and found.filled_quantity == Decimal(
        "0.4")
    (fill,) = found.fills
    assert (fill.fill_id, str(fill.price), str(fill.quantity), fill.liquidity, fill.at) == (
        "99", "50000.1", "0.4", "maker", 3)
    cancel = {**trade, "x": "CANCELED", "X": "CANCELED", "c": "cancel-id", "C": "c1"}
    found = wire.event_report(cancel)
    assert (found.client_order_id, found.status, found.fills) == ("c1",
                                                                 BrokerStatus.CANCELLED, [])


@pytest.mark.parametrize(("exc", "sends", "kind"), [
    (api_error(400, -2010), True, PermanentError),
    (api_error(400, -2010, "Account has insufficient balance for requested action."), True,
     PermanentError),
    # An earlier send of ours landed: looked up, never rejected.
    (api_error(400, -2010, "Duplicate order sent."), True, DuplicateClientId),
    (api_error(400, -1013), True, PermanentError),
    (api_error(400, -1121), True, PermanentError),
    (api_error(400, -2011), True, OrderNotFound),
    (api_error(400, -2013), False, OrderNotFound),
    (api_error(400, -1022), True, AuthenticationFailed),
    (api_error(401, -2014), True, AuthenticationFailed),
    (api_error(401, -2015), False, AuthenticationFailed),
    (api_error(400, -1021), True, RetryableError),
    (api_error(429, -1003), True, RateLimited),
    (api_error(429, -1015), True, RateLimited),
    (api_error(400, -1015), True, RateLimited),
    (api_error(418, -1003), True, Banned),
    (api_error(500, 0), True, UnknownOutcome),
    (api_error(503, 0), False, RetryableError),
    (api_error(408, -1007), True, UnknownOutcome),
    (api_error(400, -1007), False, RetryableError),
    (api_error(400, -1006), True, UnknownOutcome),  # "Execution status unknown."
    (BinanceRequestException("not json"), True, UnknownOutcome),
    (TimeoutError(), True, UnknownOutcome),
    (TimeoutError(), False, RetryableError),
    (aiohttp.ServerDisconnectedError(), True, UnknownOutcome),
    (aiohttp.ClientOSError(104, "reset"), True, UnknownOutcome),
    (aiohttp.ClientConnectorError(SimpleNamespace(ssl=None, host="h", port=1),  # type: ignore[arg-type]
                                  OSError(111, "refused")), True, RetryableError),
])
def test_errors_map_into_the_taxonomy(exc: BaseException, sends: bool,
                                      kind: type[BrokerError]) -> None:
    mapped = wire.map_error(exc, sends=sends)
    assert type(mapped) is kind


def test_retry_after_comes_from_the_header() -> None:
    mapped = wire.map_error(api_error(429, -1003, headers={"Retry-After": "17"}), sends=True)
    assert isinstance(mapped, RateLimited) and mapped.retry_after == 17.0
    mapped = wire.map_error(api_error(418, -1003, headers={"Retry-After": "300"}), sends=False)
    assert isinstance(mapped, Banned) and mapped.retry_after == 300.0
    mapped = wire.map_error(api_error(429, -1003), sends=False)
    assert isinstance(mapped, RateLimited) and mapped.retry_after is None


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        wire.map_error(KeyError("bug"), sends=True)


def test_balances_below_our_positions_are_drift() -> None:
    from executor.brokers.binance.reconcile import Shortfall, shortfalls

    d = Decimal
    base = {"BTCUSDT": "BTC", "BTCEUR": "BTC", "ETHUSDT": "ETH", "BNBUSDT": "BNB"}
    balances = {"BTC": (d("0.3"), d("0.1")), "ETH": (d("5"), d(0))}
    # More held than recorded is fine (deposits, holdings from before); exactly equal too.
    assert shortfalls({"BTCUSDT": d("0.25"), "BTCEUR": d("0.15"), "ETHUSDT": d("2")},
                      balances, base) == []
    # Two symbols of one base asset add up; an asset Binance does not hold at all counts as
    # zero; unlisted symbols are skipped. A negative position is holdings from before sold:
    # not drift on the first pass, whatever is held.
    first = {"BTCUSDT": d("0.3"), "BTCEUR": d("0.15"), "ETHUSDT": d("-1"), "BNBUSDT": d("2"),
             "XYZUSDT": d("9")}
    assert shortfalls(first, balances, base) == [
        Shortfall("BNB", d(0), d("2"), ("BNBUSDT",), d("2")),
        Shortfall("BTC", d("0.4"), d("0.45"), ("BTCEUR", "BTCUSDT"), d("0.45")),
    ]
    assert shortfalls({"ETHUSDT": d("-4.5")}, {"ETH": (d("0.5"), d(0))}, base) == []


def test_later_passes_compare_against_the_balances_at_start() -> None:
    from executor.brokers.binance.reconcile import Shortfall, baseline, shortfalls

    d = Decimal
    base = {"BTCUSDT": "BTC", "ETHUSDT": "ETH"}
    # At start: 100 BTC held, of which our positions explain 2; ETH sold from before.
    start = baseline({"BTCUSDT": d("2"), "ETHUSDT": d("-3")},
                     {"BTC": (d("99"), d("1")), "ETH": (d("7"), d(0))}, base)
    assert start == {"BTC": d("98"), "ETH": d("10")}
    # Sold 1 BTC more (recorded, and gone from the balance), bought 1 ETH: consistent.
    assert shortfalls({"BTCUSDT": d("1"), "ETHUSDT": d("-2")},
                      {"BTC": (d("99"), d(0)), "ETH": (d("8"), d(0))}, base, start) == []
    # A fill recorded that did not happen (or 0.5 BTC withdrawn): short of 98 + 1.
    assert shortfalls({"BTCUSDT": d("1")}, {"BTC": (d("98.5"), d(0))}, base, start) == [
        Shortfall("BTC", d("98.5"), d("1"), ("BTCUSDT",), d("99"))]
    # The same balance on a first pass was no drift: it held more than we recorded.
    assert shortfalls({"BTCUSDT": d("1")}, {"BTC": (d("98.5"), d(0))}, base) == []


def test_what_an_open_record_adds_to_max_num_orders() -> None:
    from executor.brokers.binance.reconcile import Counted, counted
    from executor.model.order import Context, new_order, transition
    from producer.contract import OrderState

    ctx = Context(now=1, worker="t")

    def record(type: OrderType, account: str = "bn", state: OrderState | None = None) -> Any:
        spec = OrderSpec(account=account, symbol="BTCUSDT", side=Side.SELL, type=type,
                         quantity=WireDecimal("1"), price=WireDecimal("60000"),
                         stop_price=WireDecimal("40000") if type is OrderType.OCO else None)
        order, _ = new_order("c", "r", spec, ctx)
        if state is not None:
            transition(order, OrderState.SUBMITTED, ctx)
            transition(order, state, ctx)
        return order

    accepted = OrderState.ACCEPTED
    assert counted(record(OrderType.LIMIT, state=accepted), "bn") == Counted("BTCUSDT", 1, True)
    assert counted(record(OrderType.LIMIT, "other", accepted), "bn") == Counted(None, 0, True)
    # Not sent yet (it may be waiting for the rate limiter): not at Binance; read again.
    assert counted(record(OrderType.LIMIT), "bn") == Counted(None, 0, False)
    # Two legs at Binance until one trades (the other expires then); read again each time.
    assert counted(record(OrderType.OCO, state=accepted), "bn") == Counted("BTCUSDT", 2, False)
    assert counted(record(OrderType.OCO, state=OrderState.PARTIALLY_FILLED), "bn") == Counted(
        "BTCUSDT", 1, False)
    assert counted(record(OrderType.LIMIT, state=OrderState.CANCELLED), "bn").orders == 0
    assert counted(None, "bn") == Counted(None, 0, False)  # not written yet


# -- traded volume from klines ---------------------------------------------------------------

def kline(open_ms: int, volume: str) -> list[Any]:
    return [open_ms, "1.0", "1.0", "1.0", "1.0", volume, open_ms + 999, "0", 1, "0", "0", "0"]


def test_closed_volume_counts_closed_klines_exactly_and_leaves_the_last_open_one() -> None:
    rows = [kline(1_000, "0.10000001"), kline(2_000, "0.2"), kline(3_000, "5")]
    assert wire.closed_volume(rows, 1_000, now=3_999) == Volume(Decimal("0.30000001"), 3_000)
    assert wire.closed_volume(rows, 1_000, now=4_000) == Volume(Decimal("5.30000001"), 4_000)
    # A kline followed by another is closed whatever our estimate of the time says.
    assert wire.closed_volume(rows, 1_000, now=0) == Volume(Decimal("0.30000001"), 3_000)
    assert wire.closed_volume([], 1_500, now=9_999) == Volume(Decimal(0), 1_500)
    assert wire.closed_volume(rows[-1:], 3_000, now=3_500) == Volume(Decimal(0), 3_000)


def test_closed_volume_never_counts_a_kline_before_since_or_twice() -> None:
    # A server that ignored startTime, or answered overlapping klines.
    rows = [kline(0, "7"), kline(1_000, "1"), kline(1_000, "1"), kline(2_000, "2"),
            kline(3_000, "3")]
    assert wire.closed_volume(rows, 500, now=10_000) == Volume(Decimal(6), 4_000)
