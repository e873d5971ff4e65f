"""OANDA's wire, without I/O: the OrderRequest of each order type and time in force, the
types and times in force v20 lacks refused naming the field, the instruments' precision and
size rules, reports from v20 transactions, and v20's errors in the broker taxonomy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from executor.brokers.base import (
    EMULATED,
    AuthenticationFailed,
    BrokerError,
    BrokerStatus,
    DuplicateClientId,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
)
from executor.brokers.oanda import instruments, wire
from executor.brokers.oanda.stream import parse_line
from producer.contract import ContractError, OrderSpec, OrderType, Side, TimeInForce, WireDecimal

D = WireDecimal
RULES = instruments.parse({"instruments": [
    {"name": "EUR_USD", "displayPrecision": 5, "tradeUnitsPrecision": 0,
     "minimumTradeSize": "1", "maximumOrderUnits": "100000000"},
    {"name": "XAU_USD", "displayPrecision": 3, "tradeUnitsPrecision": 2,
     "minimumTradeSize": "0.01", "maximumOrderUnits": "0"},
]})
EUR, XAU = RULES["EUR_USD"], RULES["XAU_USD"]


def spec(type: OrderType, quantity: str = "100", *, side: Side = Side.BUY,
         symbol: str = "EUR_USD", **kw: Any) -> OrderSpec:
    return OrderSpec(account="oa", symbol=symbol, side=side, type=type,
                     quantity=D(quantity), **kw)


def body(order: OrderSpec, inst: instruments.Instrument = EUR) -> dict[str, Any]:
    request = wire.order_request("cid-1", order, inst)
    assert set(request) == {"order"}
    sent: dict[str, Any] = request["order"]
    assert sent.pop("clientExtensions") == {"id": "cid-1"}
    assert sent.pop("tradeClientExtensions") == {"id": "cid-1"}
    assert sent.pop("positionFill") == ("REDUCE_ONLY" if order.reduce_only else "DEFAULT")
    return sent


@pytest.mark.parametrize(("order", "expected"), [
    (spec(OrderType.MARKET), {"type": "MARKET", "instrument": "EUR_USD", "units": "100",
                              "timeInForce": "FOK"}),
    (spec(OrderType.MARKET, side=Side.SELL, time_in_force=TimeInForce.FOK),
     {"type": "MARKET", "instrument": "EUR_USD", "units": "-100", "timeInForce": "FOK"}),
    (spec(OrderType.MARKET, time_in_force=TimeInForce.IOC),
     {"type": "MARKET", "instrument": "EUR_USD", "units": "100", "timeInForce": "IOC"}),
    (spec(OrderType.LIMIT, price=D("1.1")),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "100", "price": "1.10000",
      "timeInForce": "GTC"}),
    (spec(OrderType.LIMIT, price=D("1.1"), time_in_force=TimeInForce.IOC),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "100", "price": "1.10000",
      "timeInForce": "IOC"}),
    (spec(OrderType.LIMIT, price=D("1.1"), time_in_force=TimeInForce.FOK),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "100", "price": "1.10000",
      "timeInForce": "FOK"}),
    (spec(OrderType.LIMIT, price=D("1.12345"), time_in_force=TimeInForce.GTD,
          expire_at=1_767_225_600_005),
     {"type": "LIMIT", "instrument": "EUR_USD", "units": "100", "price": "1.12345",
      "timeInForce": "GTD", "gtdTime": "1767225600.005"}),
    (spec(OrderType.STOP, side=Side.SELL, stop_price=D("1.05")),
     {"type": "STOP", "instrument": "EUR_USD", "units": "-100", "price": "1.05000",
      "timeInForce": "GTC"}),
    (spec(OrderType.STOP, stop_price=D("1.2"), time_in_force=TimeInForce.GTD,
          expire_at=1_000),
     {"type": "STOP", "instrument": "EUR_USD", "units": "100", "price": "1.20000",
      "timeInForce": "GTD", "gtdTime": "1.000"}),
    (spec(OrderType.TAKE_PROFIT, side=Side.SELL, stop_price=D("1.3")),
     {"type": "MARKET_IF_TOUCHED", "instrument": "EUR_USD", "units": "-100",
      "price": "1.30000", "timeInForce": "GTC"}),
    (spec(OrderType.STOP, "1.5", symbol="XAU_USD", stop_price=D("2000")),
     {"type": "STOP", "instrument": "XAU_USD", "units": "1.50", "price": "2000.000",
      "timeInForce": "GTC"}),
])
def test_the_order_request_oanda_receives(order: OrderSpec, expected: dict[str, Any]) -> None:
    assert body(order, RULES[order.symbol]) == expected


def test_reduce_only_is_position_fill_reduce_only() -> None:
    assert "positionFill" not in body(spec(OrderType.MARKET, reduce_only=True))


@pytest.mark.parametrize(("order", "field"), [
    (spec(OrderType.LIMIT_MAKER, price=D("1.1")), "type"),
    (spec(OrderType.STOP_LIMIT, price=D("1.1"), stop_price=D("1.2")), "type"),
    (spec(OrderType.TAKE_PROFIT_LIMIT, price=D("1.1"), stop_price=D("1.2")), "type"),
    (spec(OrderType.OCO, price=D("1.1"), stop_price=D("1.2")), "type"),
    (spec(OrderType.STOP, stop_price=D("1.2"), time_in_force=TimeInForce.IOC),
     "time_in_force"),
    (spec(OrderType.STOP, stop_price=D("1.2"), time_in_force=TimeInForce.FOK),
     "time_in_force"),
    (spec(OrderType.TAKE_PROFIT, stop_price=D("1.2"), time_in_force=TimeInForce.FOK),
     "time_in_force"),
    (spec(OrderType.MARKET, time_in_force=TimeInForce.GTD, expire_at=1), "time_in_force"),
    (OrderSpec(account="oa", symbol="EUR_USD", side=Side.BUY, type=OrderType.MARKET,
               quantity=None, quote_quantity=D("100")), "quote_quantity"),
])
def test_what_v20_lacks_is_refused_naming_the_field(order: OrderSpec, field: str) -> None:
    with pytest.raises(ContractError) as info:
        wire.order_request("cid-1", order, EUR)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(("order", "field", "rule"), [
    (spec(OrderType.MARKET, "100.5"), "quantity", "tradeUnitsPrecision 0"),
    (spec(OrderType.MARKET, "0.001", symbol="XAU_USD"), "quantity", "tradeUnitsPrecision 2"),
    (spec(OrderType.MARKET, "0.5"), "quantity", "tradeUnitsPrecision 0"),
    (spec(OrderType.MARKET, "200000000"), "quantity", "maximumOrderUnits 100000000"),
    (spec(OrderType.LIMIT, price=D("1.123456")), "price", "displayPrecision 5"),
    (spec(OrderType.STOP, stop_price=D("1.123456")), "stop_price", "displayPrecision 5"),
    (spec(OrderType.LIMIT, "1", symbol="XAU_USD", price=D("2000.0001")), "price",
     "displayPrecision 3"),
])
def test_instrument_rules_name_the_field_and_the_rule(order: OrderSpec, field: str,
                                                      rule: str) -> None:
    with pytest.raises(ContractError) as info:
        instruments.check(order, RULES[order.symbol])
    assert info.value.field == field
    assert rule in str(info.value)


def test_the_minimum_size_and_what_passes() -> None:
    small = instruments.parse({"instruments": [
        {"name": "EUR_USD", "displayPrecision": 5, "tradeUnitsPrecision": 0,
         "minimumTradeSize": "1000"}]})["EUR_USD"]
    with pytest.raises(ContractError, match="minimumTradeSize 1000") as info:
        instruments.check(spec(OrderType.MARKET, "999"), small)
    assert info.value.field == "quantity"
    instruments.check(spec(OrderType.MARKET, "1000.000"), small)  # trailing zeros are fine
    instruments.check(spec(OrderType.LIMIT, "2.10", symbol="XAU_USD", price=D("2000.100")),
                      XAU)
    assert XAU.maximum_units is None  # "0": no maximum
    assert (EUR.base, EUR.quote) == ("EUR", "USD")


# -- reports ------------------------------------------------------------------------------

CREATED = {"id": "6", "type": "MARKET_ORDER", "instrument": "EUR_USD", "units": "-1000",
           "time": "1767225600.123456789", "reason": "CLIENT_ORDER"}
FILL = {"id": "7", "type": "ORDER_FILL", "orderID": "6", "units": "-1000",
        "price": "1.09990", "fullVWAP": "1.09985", "commission": "0.1000",
        "financing": "0.0000", "time": "1767225600.200000000"}


def test_a_filled_create_reply() -> None:
    report = wire.create_report("c1", {"orderCreateTransaction": CREATED,
                                       "orderFillTransaction": FILL}, "EUR")
    assert (report.status, report.broker_order_id, report.symbol) == (
        BrokerStatus.FILLED, "6", "EUR_USD")
    assert report.quantity == report.filled_quantity == Decimal(1000)
    [fill] = report.fills
    assert (fill.fill_id, fill.price, fill.quantity, fill.commission,
            fill.commission_asset, fill.at) == ("7", Decimal("1.09985"), Decimal(1000),
                                                Decimal("0.1"), "EUR", 1_767_225_600_200)
    assert report.updated_at == 1_767_225_600_200


@pytest.mark.parametrize(("reason", "status"), [
    ("CLIENT_REQUEST", BrokerStatus.CANCELLED),
    ("TIME_IN_FORCE_EXPIRED", BrokerStatus.EXPIRED),
    ("INSUFFICIENT_MARGIN", BrokerStatus.REJECTED),
    ("MARKET_HALTED", BrokerStatus.REJECTED),
])
def test_a_create_cancelled_at_once_is_a_201_told_by_its_reason(
        reason: str, status: BrokerStatus) -> None:
    cancel = {"id": "7", "type": "ORDER_CANCEL", "orderID": "6", "reason": reason,
              "time": "2026-01-01T00:00:00.250000000Z"}
    report = wire.create_report("c1", {"orderCreateTransaction": CREATED,
                                       "orderCancelTransaction": cancel}, "USD")
    assert report.status is status and report.filled_quantity == 0
    assert report.updated_at == 1_767_225_600_250
    assert (report.reason is None) == (status is BrokerStatus.CANCELLED)
    if status is BrokerStatus.REJECTED:
        assert report.reason == f"oanda: {reason}"


def test_an_order_lookup_with_its_fill_and_a_pending_one() -> None:
    order = {"id": "6", "instrument": "EUR_USD", "units": "-1000", "state": "FILLED",
             "fillingTransactionID": "7", "filledTime": "1767225600.2"}
    report = wire.order_report("c1", order, FILL, None, "USD")
    assert report.status is BrokerStatus.FILLED and report.filled_quantity == 1000
    pending = wire.order_report("c1", {**order, "state": "PENDING"}, None, None, "USD")
    assert pending.status is BrokerStatus.NEW and pending.fills == []


def test_the_mid_price() -> None:
    reply = {"prices": [{"instrument": "EUR_USD", "bids": [{"price": "1.10000"}],
                         "asks": [{"price": "1.10010"}]}]}
    assert wire.mid_price(reply, "EUR_USD") == Decimal("1.10005")
    assert wire.mid_price(reply, "USD_JPY") is None


def test_a_pricing_stream_line_has_the_same_mid_and_none_when_not_tradeable() -> None:
    line = parse_line(b'{"type":"PRICE","instrument":"EUR_USD","tradeable":true,'
                      b'"bids":[{"price":"1.10000","liquidity":1}],'
                      b'"asks":[{"price":"1.10010","liquidity":1}],'
                      b'"closeoutBid":"1.09990","closeoutAsk":"1.10020"}')
    assert line is not None
    assert wire.streamed_mid(line) == ("EUR_USD", Decimal("1.10005"))
    assert wire.streamed_mid(line) == ("EUR_USD", wire.mid_price({"prices": [line]},
                                                                 "EUR_USD"))
    assert wire.streamed_mid({**line, "tradeable": False}) == ("EUR_USD", None)
    assert wire.streamed_mid({**line, "bids": [], "closeoutBid": None}) == ("EUR_USD", None)
    assert wire.streamed_mid({**line, "bids": [{"price": "x"}]}) == ("EUR_USD", None)
    assert wire.streamed_mid({"type": "HEARTBEAT", "time": "1767225600.0"}) is None


def test_a_price_sent_as_a_json_number_is_read_exactly_never_as_a_float() -> None:
    line = parse_line(b'{"type":"PRICE","instrument":"USD_JPY","tradeable":true,'
                      b'"bids":[{"price":157.123}],"asks":[{"price":157.131}]}')
    assert line is not None
    assert isinstance(line["bids"][0]["price"], Decimal)
    assert wire.streamed_mid(line) == ("USD_JPY", Decimal("157.127"))


# -- errors -------------------------------------------------------------------------------

def _reject(reason: str) -> dict[str, Any]:
    return {"orderRejectTransaction": {"type": "MARKET_ORDER_REJECT", "rejectReason": reason},
            "errorCode": reason, "errorMessage": "refused"}


ERRORS: list[tuple[int, dict[str, Any], bool, type[BrokerError]]] = [
    (400, _reject("CLIENT_ORDER_ID_ALREADY_EXISTS"), True, DuplicateClientId),
    (400, _reject("CLIENT_TRADE_ID_ALREADY_EXISTS"), True, DuplicateClientId),
    (400, _reject("UNITS_MIMIMUM_NOT_MET"), True, PermanentError),
    (400, _reject("INSUFFICIENT_MARGIN"), True, PermanentError),
    (400, {"errorMessage": "Invalid value specified for 'instrument'"}, True, PermanentError),
    (404, {"errorCode": "ORDER_DOESNT_EXIST", "errorMessage": "no"}, False, OrderNotFound),
    (404, {"orderCancelRejectTransaction": {"rejectReason": "ORDER_DOESNT_EXIST"},
           "errorCode": "ORDER_DOESNT_EXIST"}, True, OrderNotFound),
    (401, {"errorMessage": "Insufficient authorization to perform request."}, True,
     AuthenticationFailed),
    (403, {"errorMessage": "The provided request was forbidden."}, False,
     AuthenticationFailed),
    (429, {"errorMessage": "Too many requests"}, True, RateLimited),
    (500, {}, True, UnknownOutcome),
    (503, {"errorMessage": "down"}, True, UnknownOutcome),
    (503, {"errorMessage": "down"}, False, RetryableError),
    (504, {}, False, RetryableError),
]


@pytest.mark.parametrize(("status", "body", "sends", "kind"), ERRORS)
def test_errors_in_the_taxonomy(status: int, body: dict[str, Any], sends: bool,
                                kind: type[BrokerError]) -> None:
    error = wire.map_error(status, body, sends=sends, retry_after=2.0)
    assert type(error) is kind, error
    assert f"HTTP {status}" in str(error)
    if kind is RateLimited:
        assert isinstance(error, RateLimited) and error.retry_after == 2.0


def test_a_5xx_on_a_submit_is_never_a_refusal() -> None:
    for status in (500, 502, 503, 504):
        error = wire.map_error(status, _reject("UNITS_INVALID"), sends=True)
        assert isinstance(error, UnknownOutcome) and not isinstance(error, PermanentError)


def test_transport_errors() -> None:

    import aiohttp

    assert type(wire.transport_error(TimeoutError(), sends=True)) is UnknownOutcome
    assert type(wire.transport_error(aiohttp.ServerDisconnectedError(), sends=True)) is (
        UnknownOutcome)
    assert type(wire.transport_error(TimeoutError(), sends=False)) is RetryableError



def test_day_is_oandas_good_for_the_day_and_a_market_order_has_none() -> None:
    """Our day is OANDA's GFD for the order types that take it; a market order is FOK or
    IOC only, and an auction (opg, cls) OANDA has not: refused naming the field."""
    for order in (spec(OrderType.LIMIT, price=D("1.1"), time_in_force=TimeInForce.DAY),
                  spec(OrderType.STOP, stop_price=D("1.2"), time_in_force=TimeInForce.DAY),
                  spec(OrderType.TAKE_PROFIT, stop_price=D("1.0"),
                       time_in_force=TimeInForce.DAY)):
        assert body(order)["timeInForce"] == "GFD"
    for order in (spec(OrderType.MARKET, time_in_force=TimeInForce.DAY),
                  spec(OrderType.LIMIT, price=D("1.1"), time_in_force=TimeInForce.OPG)):
        with pytest.raises(ContractError) as caught:
            wire.order_request("cid-1", order, EUR)
        assert caught.value.field == "time_in_force"


# -- market_if_touched: native; the other conditional types refused --------------------------

@pytest.mark.parametrize(("order", "tif"), [
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1.05")), {"timeInForce": "GTC"}),
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1.05"), time_in_force=TimeInForce.DAY),
     {"timeInForce": "GFD"}),
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1.05"), time_in_force=TimeInForce.GTD,
          expire_at=1_767_225_600_005),
     {"timeInForce": "GTD", "gtdTime": "1767225600.005"}),
])
def test_market_if_touched_is_v20s_triggered_on_the_mid(order: OrderSpec,
                                                        tif: dict[str, str]) -> None:
    assert body(order) == {"type": "MARKET_IF_TOUCHED", "instrument": "EUR_USD",
                           "units": "100", "price": "1.05000", "triggerCondition": "MID",
                           **tif}


@pytest.mark.parametrize(("order", "field", "words"), [
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1.05"), time_in_force=TimeInForce.IOC),
     "time_in_force", "gtc"),
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("1.05"), time_in_force=TimeInForce.FOK),
     "time_in_force", "gtc"),
    (spec(OrderType.MARKET_IF_TOUCHED), "stop_price", "required"),
    (spec(OrderType.LIMIT_IF_TOUCHED, stop_price=D("1.05"), price=D("1.06")), "type",
     EMULATED),
    (spec(OrderType.TRAILING_STOP, trailing_offset=D("0.001")), "type", EMULATED),
    (spec(OrderType.TRAILING_STOP_LIMIT, trailing_offset=D("0.001"), limit_offset=D("0")),
     "type", EMULATED),
])
def test_what_v20s_market_if_touched_is_not_is_refused(order: OrderSpec, field: str,
                                                       words: str) -> None:
    with pytest.raises(ContractError) as caught:
        body(order)
    assert caught.value.field == field
    assert words in str(caught.value)


@pytest.mark.parametrize(("side", "stop", "mid"), [
    (Side.BUY, "1.05", "1.05001"),  # a buy waits for a fall to stop_price
    (Side.SELL, "1.15", "1.14999"),  # a sell for a rise
])
def test_a_touched_order_on_its_side_of_the_market_is_sent(side: Side, stop: str,
                                                           mid: str) -> None:
    wire.check_touched(spec(OrderType.MARKET_IF_TOUCHED, side=side, stop_price=D(stop)),
                       Decimal(mid))


@pytest.mark.parametrize(("side", "stop", "mid"), [
    (Side.BUY, "1.05", "1.05"),  # at it: ours triggers at once
    (Side.BUY, "1.05", "1.04"),  # past it: v20 would take it as a stop upwards
    (Side.SELL, "1.15", "1.15"),
    (Side.SELL, "1.15", "1.2"),
])
def test_a_touched_order_already_met_is_refused_naming_stop_price(side: Side, stop: str,
                                                                  mid: str) -> None:
    order = spec(OrderType.MARKET_IF_TOUCHED, side=side, stop_price=D(stop))
    with pytest.raises(ContractError) as caught:
        wire.check_touched(order, Decimal(mid))
    assert caught.value.field == "stop_price"
    assert "trigger at once" in str(caught.value)


def test_other_types_are_not_checked_against_the_market() -> None:
    wire.check_touched(spec(OrderType.TAKE_PROFIT, side=Side.SELL, stop_price=D("1")),
                       Decimal("2"))
