"""Icebergs (``display_quantity``): the contract's rules (each refusal names its field), the
schema, events old and new, Binance's ``icebergQty`` and its checks before sending, the
local exchange's answers as errors.md words them, and the brokers that refuse it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from devtools.binance_exchange.engine import ApiError, Exchange
from executor.brokers.alpaca import wire as alpaca_wire
from executor.brokers.base import NeedsSlicing
from executor.brokers.binance import filters, wire
from executor.brokers.oanda import instruments
from executor.brokers.oanda import wire as oanda_wire
from executor.model.schedules import RETRY_MS, Child, Due, iceberg_due, iceberg_parent
from producer.contract import (
    Algo,
    AlgoStrategy,
    ContractError,
    Event,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    WireDecimal,
    decode_event,
    decode_request,
    encode,
)
from producer.schema import generate
from producer.validation import check_request

D = WireDecimal


def request(type: str, **fields: Any) -> bytes:
    base: dict[str, Any] = {"symbol": "BTCUSDT", "side": "sell", "type": type,
                            "quantity": "0.05", "price": "51000"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def refused(data: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_request(decode_request(data))
    return caught.value


@pytest.mark.parametrize("data", [
    request("limit", display_quantity="0.01"),
    request("limit_maker", display_quantity="0.049"),
    request("stop_limit", stop_price="49500", display_quantity="0.01"),
    request("take_profit_limit", stop_price="51500", display_quantity="0.01"),
])
def test_an_iceberg_on_a_limit_type_passes(data: bytes) -> None:
    check_request(decode_request(data))


@pytest.mark.parametrize(("data", "words"), [
    (request("market", price=None, display_quantity="0.01"), "not market"),
    (request("stop", price=None, stop_price="49000", display_quantity="0.01"), "not stop"),
    (request("limit_if_touched", stop_price="52000", display_quantity="0.01"),
     "not limit_if_touched"),
    (request("oco", price="52000", stop_price="49000", display_quantity="0.01"), "not oco"),
    (request("trailing_stop", price=None, trailing_offset="10", display_quantity="0.01"),
     "not trailing_stop"),
    (request("market", price=None, quantity=None, quote_quantity="100",
             display_quantity="0.01"), "quote_quantity"),
    (request("limit", display_quantity="0.05"), "must be below quantity 0.05"),
    (request("limit", display_quantity="0.06"), "must be below quantity 0.05"),
    (request("limit", display_quantity="0"), "must be positive"),
    (request("limit", display_quantity="-0.01"), "got '-0.01'"),
])
def test_each_refusal_names_display_quantity(data: bytes, words: str) -> None:
    error = refused(data)
    assert error.field == "display_quantity"
    assert words in str(error)


@pytest.mark.parametrize("action", ["cancel", "amend", "cancel_all"])
def test_other_actions_refuse_it(action: str) -> None:
    data = {"action": action, "display_quantity": "0.01"}
    if action != "cancel_all":
        data["client_order_id"] = "c1"
    error = refused(json.dumps(data).encode())
    assert error.field == "display_quantity"


def test_the_schema_has_the_field_and_its_rule() -> None:
    schema = generate("request")
    assert "display_quantity" in schema["$defs"]["Request"]["properties"]
    assert {"if": {"required": ["display_quantity"]}, "then": {
        "properties": {"type": {"enum": ["limit", "limit_maker", "stop_limit",
                                         "take_profit_limit"]}},
        "required": ["type"], "not": {"required": ["quote_quantity"]}}} in schema["allOf"]


def test_the_created_event_carries_it_and_old_events_still_decode() -> None:
    spec = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL, type=OrderType.LIMIT,
                     quantity=D("0.05"), price=D("51000"), display_quantity=D("0.01"))
    data = encode(Event(client_order_id="c1", seq=1, state=OrderState.CREATED, at=1,
                        order=spec))
    assert b'"display_quantity":"0.01"' in data
    assert decode_event(data).order == spec
    old = (b'{"client_order_id":"c0","seq":1,"state":"created","at":1,"order":{"account":"a",'
           b'"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"2"}}')
    order = decode_event(old).order
    assert order is not None and order.display_quantity is None
    assert b"display_quantity" not in encode(order)


# -- Binance ---------------------------------------------------------------------------------

RULES = filters.parse(Exchange().exchange_info({}))
BTC = RULES["BTCUSDT"]  # LOT_SIZE step 0.00001, ICEBERG_PARTS 10


def iceberg(type: OrderType = OrderType.LIMIT, shown: str = "0.01", qty: str = "0.05",
            **kw: Any) -> OrderSpec:
    if type in (OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
        kw.setdefault("stop_price", D("51500" if type is OrderType.TAKE_PROFIT_LIMIT
                                      else "49500"))
    return OrderSpec(account="bn", symbol="BTCUSDT", side=Side.SELL, type=type,
                     quantity=D(qty), price=D("51000"), display_quantity=D(shown), **kw)


def binance_refusal(order: OrderSpec, rules: filters.Rules = BTC) -> ContractError:
    with pytest.raises(ContractError) as caught:
        filters.check(order, rules, reference=D("50000"))
    return caught.value


@pytest.mark.parametrize(("type", "kind"), [
    (OrderType.LIMIT, "LIMIT"), (OrderType.LIMIT_MAKER, "LIMIT_MAKER"),
    (OrderType.STOP_LIMIT, "STOP_LOSS_LIMIT"), (OrderType.TAKE_PROFIT_LIMIT,
                                                "TAKE_PROFIT_LIMIT")])
def test_binance_gets_it_as_iceberg_qty(type: OrderType, kind: str) -> None:
    order = filters.check(iceberg(type), BTC, reference=D("50000"))
    params = wire.order_params("cid-1", order)
    assert params["type"] == kind and params["icebergQty"] == "0.01"
    assert params["quantity"] == "0.05"
    assert params.get("timeInForce", "GTC") == "GTC"
    Exchange().validate(params)  # and the local exchange takes it as sent


def test_a_plain_order_sends_no_iceberg_qty() -> None:
    order = msgspec.structs.replace(iceberg(), display_quantity=None)
    assert "icebergQty" not in wire.order_params("cid-1", order)


def test_binance_refuses_an_iceberg_the_symbol_does_not_allow() -> None:
    rules = msgspec.structs.replace(BTC, iceberg=False)
    error = binance_refusal(iceberg(), rules)
    assert error.field == "display_quantity" and "icebergAllowed is false" in str(error)


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_binance_refuses_an_iceberg_that_is_not_gtc(tif: TimeInForce) -> None:
    error = binance_refusal(iceberg(time_in_force=tif))
    assert error.field == "time_in_force" and "an iceberg needs gtc" in str(error)


def test_binance_refuses_too_many_iceberg_parts() -> None:
    assert filters.check(iceberg(shown="0.005"), BTC) is not None  # 10 parts: the limit
    error = binance_refusal(iceberg(shown="0.0049"))  # 11 parts
    assert error.field == "display_quantity"
    assert str(error) == ("Binance filter ICEBERG_PARTS: display_quantity 0.0049 splits "
                          "quantity 0.05 into 11 parts, more than the limit 10")


def test_binance_refuses_a_display_quantity_off_the_lot_step() -> None:
    error = binance_refusal(iceberg(shown="0.010005"))
    assert error.field == "display_quantity" and "Binance filter LOT_SIZE" in str(error)


def test_the_iceberg_parts_filter_is_read_from_exchange_info() -> None:
    assert BTC.iceberg and BTC.iceberg_parts == 10
    assert RULES["ETHUSDT"].iceberg_parts is None


# -- the local exchange ----------------------------------------------------------------------

def placed(ex: Exchange, **params: str) -> dict[str, Any]:
    base = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.05", "price": "51000", "newClientOrderId": "i1",
            "newOrderRespType": "FULL"}
    return ex.place({k: v for k, v in (base | params).items() if v})


def exchange_refusal(ex: Exchange, **params: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        placed(ex, **params)
    return caught.value


def test_the_local_exchange_reports_the_iceberg() -> None:
    ex = Exchange()
    events: list[dict[str, Any]] = []
    ex.listeners.append(events.append)
    placed(ex, icebergQty="0.01")
    view = ex.find({"symbol": "BTCUSDT", "origClientOrderId": "i1"}).view()
    assert Decimal(view["icebergQty"]) == Decimal("0.01") and view["status"] == "NEW"
    report = next(e for e in events if e["e"] == "executionReport")
    assert Decimal(report["F"]) == Decimal("0.01")


@pytest.mark.parametrize(("params", "code", "msg"), [
    ({"timeInForce": "IOC"}, -2010, "Unsupported order combination"),
    ({"type": "MARKET", "timeInForce": "", "price": ""}, -2010,
     "Unsupported order combination"),
    ({"icebergQty": "0.05"}, -2010, "IcebergQty exceeds QTY."),
    ({"icebergQty": "0.0049"}, -1013, "Filter failure: ICEBERG_PARTS"),
    ({"icebergQty": "0.010005"}, -1013, "Filter failure: LOT_SIZE"),
])
def test_the_local_exchange_refuses_as_binance_words_it(params: dict[str, str], code: int,
                                                        msg: str) -> None:
    error = exchange_refusal(Exchange(), **({"icebergQty": "0.01"} | params))
    assert (error.code, error.msg) == (code, msg)


def test_the_local_exchange_refuses_an_iceberg_where_the_symbol_has_none() -> None:
    ex = Exchange()
    ex.listings["BTCUSDT"].iceberg_allowed = False
    assert ex.exchange_info({})["symbols"][0]["icebergAllowed"] is False
    error = exchange_refusal(ex, icebergQty="0.01")
    assert (error.code, error.msg) == (-2010, "Iceberg orders are not supported for this "
                                              "symbol.")


# -- brokers without it ----------------------------------------------------------------------

OANDA_EUR = instruments.parse({"instruments": [
    {"name": "EUR_USD", "displayPrecision": 5, "tradeUnitsPrecision": 0,
     "minimumTradeSize": "1", "maximumOrderUnits": "100000000"}]})["EUR_USD"]


def test_oanda_leaves_a_limit_iceberg_to_the_worker_and_refuses_others() -> None:
    order = OrderSpec(account="o", symbol="EUR_USD", side=Side.SELL, type=OrderType.LIMIT,
                      quantity=D("100"), price=D("1.1"), display_quantity=D("10"))
    with pytest.raises(NeedsSlicing) as caught:
        oanda_wire.order_request("cid", order, OANDA_EUR)
    assert caught.value.field == "display_quantity" and "oanda has no icebergs" in str(
        caught.value)
    stop = msgspec.structs.replace(order, type=OrderType.STOP_LIMIT, stop_price=D("1.2"))
    with pytest.raises(ContractError) as refused:
        oanda_wire.order_request("cid", stop, OANDA_EUR)
    assert not isinstance(refused.value, NeedsSlicing)
    assert refused.value.field == "display_quantity" and "stop_limit" in str(refused.value)


@pytest.mark.parametrize("symbol", ["AAPL", "BTC/USD"])
def test_alpaca_leaves_a_limit_iceberg_to_the_worker(symbol: str) -> None:
    order = OrderSpec(account="a", symbol=symbol, side=Side.SELL, type=OrderType.LIMIT,
                      quantity=D("10"), price=D("100"), display_quantity=D("1"))
    with pytest.raises(NeedsSlicing) as caught:
        alpaca_wire.check(order)
    assert caught.value.field == "display_quantity"


def oanda_check(spec: OrderSpec) -> None:
    """The OANDA adapter's check (broker.py), without its instrument lookup."""
    instruments.check(spec, OANDA_EUR)
    oanda_wire.order_request("check", spec, OANDA_EUR)


def test_an_emulated_iceberg_is_a_parent_checked_as_its_children() -> None:
    order = OrderSpec(account="o", symbol="EUR_USD", side=Side.SELL, type=OrderType.LIMIT,
                      quantity=D("100"), price=D("1.1"), display_quantity=D("10"))
    parent = iceberg_parent(oanda_check, order, D("1"))
    assert parent.algo == Algo(strategy=AlgoStrategy.ICEBERG)
    assert (parent.display_quantity, parent.quantity) == (D("10"), D("100"))
    gtd = msgspec.structs.replace(order, time_in_force=TimeInForce.GTD, expire_at=10**13)
    assert iceberg_parent(oanda_check, gtd, D("1")).expire_at == 10**13
    for bad, field, words in [
            (msgspec.structs.replace(order, time_in_force=TimeInForce.IOC), "time_in_force",
             "gtc or gtd"),
            (msgspec.structs.replace(order, quantity=D("100.5")), "quantity", "step 1"),
            (msgspec.structs.replace(order, price=D("1.123456")), "price", "")]:
        with pytest.raises(ContractError) as caught:
            iceberg_parent(oanda_check, bad, D("1"))
        assert caught.value.field == field and words in str(caught.value), caught.value


def test_an_iceberg_shows_its_part_once_the_last_has_ended() -> None:
    q, shown = D("25"), D("10")
    assert iceberg_due(q, shown, [], 0) == Due(quantity=D("10"), slice=0)
    working = [Child(0, D("10"), 0)]
    assert iceberg_due(q, shown, working, 50_000) == Due()  # one at a time
    one = [Child(0, D("10"), 0, D("10"), over=True)]
    assert iceberg_due(q, shown, one, 1) == Due(quantity=D("10"), slice=1)
    two = [*one, Child(1, D("10"), 1, D("10"), over=True)]
    assert iceberg_due(q, shown, two, 2) == Due(quantity=D("5"), slice=2)  # what is left
    refused = [*two, Child(2, D("5"), 3, over=True, refused=True)]
    assert iceberg_due(q, shown, refused, 3 + RETRY_MS - 1) == Due()
    assert iceberg_due(q, shown, refused, 3 + RETRY_MS) == Due(quantity=D("5"), slice=3)
    short = [*two, Child(2, D("5"), 3, D("2"), over=True)]  # cancelled at the broker
    assert iceberg_due(q, shown, short, 4) == Due(quantity=D("3"), slice=3)
    assert iceberg_due(q, shown, [*two, Child(2, D("5"), 3, D("5"), over=True)], 5) == Due(
        done=True)
    assert iceberg_due(q, shown, two, 6, ended=True) == Due(done=True, left=D("5"))
