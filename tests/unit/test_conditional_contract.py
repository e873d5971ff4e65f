"""Conditional order types on the wire (trailing stops, if-touched orders): the contract's
rules (each refusal names its field), the schema, events that old readers and new ones
both decode, and the brokers that refuse the types before anything is sent."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from devtools.binance_exchange.engine import Exchange
from executor.brokers.alpaca import wire as alpaca_wire
from executor.brokers.base import NeedsEmulation
from executor.brokers.binance import filters
from executor.brokers.oanda import instruments
from executor.brokers.oanda import wire as oanda_wire
from producer.contract import (
    CONDITIONAL_TYPES,
    ContractError,
    Event,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    TrailingOffsetType,
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
                            "quantity": "0.01"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def refused(data: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_request(decode_request(data))
    return caught.value


@pytest.mark.parametrize("data", [
    request("trailing_stop", trailing_offset="100"),
    request("trailing_stop", trailing_offset="99.99", trailing_offset_type="percent",
            activation_price="51000"),
    request("trailing_stop", trailing_offset="9999", trailing_offset_type="bps"),
    request("trailing_stop_limit", trailing_offset="50", limit_offset="0"),
    request("trailing_stop_limit", trailing_offset="50", limit_offset="10",
            time_in_force="gtd", expire_at=10**13),
    request("market_if_touched", stop_price="52000"),
    request("limit_if_touched", stop_price="52000", price="51990"),
])
def test_well_formed_conditional_orders_pass(data: bytes) -> None:
    check_request(decode_request(data))


@pytest.mark.parametrize(("data", "field", "words"), [
    (request("trailing_stop"), "trailing_offset", "required"),
    (request("trailing_stop", trailing_offset="0"), "trailing_offset", "positive"),
    (request("trailing_stop", trailing_offset="100", trailing_offset_type="percent"),
     "trailing_offset", "below 100"),
    (request("trailing_stop", trailing_offset="10000", trailing_offset_type="bps"),
     "trailing_offset", "below 10000"),
    (request("trailing_stop", trailing_offset="1", trailing_offset_type="ticks"),
     "trailing_offset_type", "ticks"),
    (request("trailing_stop", trailing_offset="1", activation_price="0"), "activation_price",
     "positive"),
    (request("trailing_stop", trailing_offset="1", stop_price="50000"), "stop_price",
     "not allowed"),
    (request("trailing_stop", trailing_offset="1", price="50000"), "price", "not allowed"),
    (request("trailing_stop", trailing_offset="1", limit_offset="1"), "limit_offset",
     "trailing_stop_limit"),
    (request("trailing_stop_limit", trailing_offset="1"), "limit_offset", "required"),
    (request("trailing_stop_limit", trailing_offset="1", limit_offset="-1"), "limit_offset",
     "decimal"),
    (request("stop", stop_price="1", trailing_offset="1"), "trailing_offset", "only allowed"),
    (request("limit", price="1", trailing_offset_type="bps"), "trailing_offset_type",
     "only allowed"),
    (request("market", activation_price="1"), "activation_price", "only allowed"),
    (request("stop_limit", price="1", stop_price="1", limit_offset="1"), "limit_offset",
     "only allowed"),
    (request("market_if_touched"), "stop_price", "required"),
    (request("market_if_touched", stop_price="1", price="1"), "price", "not allowed"),
    (request("limit_if_touched", price="1"), "stop_price", "required"),
    (request("limit_if_touched", stop_price="1"), "price", "required"),
    (request("market_if_touched", stop_price="1", trailing_offset="1"), "trailing_offset",
     "only allowed"),
    (request("trailing_stop", trailing_offset="1", quote_quantity="10", quantity=None),
     "quote_quantity", "market"),
])
def test_each_refusal_names_its_field(data: bytes, field: str, words: str) -> None:
    error = refused(data)
    assert error.field == field and words in str(error)


@pytest.mark.parametrize("name", ["trailing_offset", "trailing_offset_type",
                                  "activation_price", "limit_offset"])
def test_cancel_and_amend_refuse_the_trailing_fields(name: str) -> None:
    value = "bps" if name == "trailing_offset_type" else "1"
    cancel = json.dumps({"action": "cancel", "client_order_id": "c1", name: value}).encode()
    assert refused(cancel).field == name
    amend = json.dumps({"action": "amend", "client_order_id": "c1", "quantity": "1",
                        name: value}).encode()
    assert refused(amend).field == name


def test_the_schema_knows_the_types_and_their_fields() -> None:
    schema = generate("request")
    assert set(CONDITIONAL_TYPES) <= set(schema["$defs"]["OrderType"]["enum"])
    props = schema["$defs"]["Request"]["properties"]
    for name in ("trailing_offset", "trailing_offset_type", "activation_price", "limit_offset"):
        assert name in props
    assert {"if": {"required": ["limit_offset"]},
            "then": {"properties": {"type": {"const": "trailing_stop_limit"}},
                     "required": ["type"]}} in schema["allOf"]


def test_the_created_event_carries_the_trailing_fields_and_old_events_still_decode() -> None:
    spec = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL,
                     type=OrderType.TRAILING_STOP_LIMIT, quantity=D("0.01"),
                     trailing_offset=D("0.5"), trailing_offset_type=TrailingOffsetType.PERCENT,
                     activation_price=D("51000"), limit_offset=D("10"))
    event = Event(client_order_id="c1", seq=1, state=OrderState.CREATED, at=1, order=spec)
    data = encode(event)
    assert b'"trailing_offset":"0.5","trailing_offset_type":"percent"' in data
    assert decode_event(data).order == spec
    old = (b'{"client_order_id":"c0","seq":1,"state":"created","at":1,"order":{"account":"a",'
           b'"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"2"}}')
    order = decode_event(old).order
    assert order is not None and order.trailing_offset is None
    assert b"trailing" not in encode(order)  # and a plain order writes none of them


# -- brokers without the types ---------------------------------------------------------------

def spec_of(type: OrderType, symbol: str, **kw: Any) -> OrderSpec:
    return OrderSpec(account="x", symbol=symbol, side=Side.SELL, type=type,
                     quantity=D("1"), **kw)


def conditional(symbol: str) -> list[OrderSpec]:
    return [
        spec_of(OrderType.TRAILING_STOP, symbol, trailing_offset=D("1")),
        spec_of(OrderType.TRAILING_STOP_LIMIT, symbol, trailing_offset=D("1"),
                limit_offset=D("0")),
        spec_of(OrderType.MARKET_IF_TOUCHED, symbol, stop_price=D("2")),
        spec_of(OrderType.LIMIT_IF_TOUCHED, symbol, stop_price=D("2"), price=D("2")),
    ]


def assert_refused(call: Any, order: OrderSpec, broker: str) -> None:
    with pytest.raises(NeedsEmulation) as caught:  # a ContractError: invalid without it
        call(order)
    assert caught.value.field == "type"
    assert str(caught.value) == (f"type {order.type} is not supported natively by {broker} "
                                 "accounts (emulated unless [worker] emulate is off)")


def test_binance_refuses_what_it_cannot_take_exactly_before_sending() -> None:
    """Binance takes a trailing stop in whole bips and the if-touched types natively
    (test_binance_conditional.py); a price offset and a trailing stop limit are refused,
    naming the field, by check (the worker's, before persisting) and submit's."""
    rules = filters.parse(Exchange().exchange_info({}))["BTCUSDT"]
    trailing, trailing_limit, *touched = conditional("BTCUSDT")
    for order, field in ((trailing, "trailing_offset_type"), (trailing_limit, "type")):
        for kw in ({}, {"reference": Decimal("50000"), "open_orders": 0}):
            with pytest.raises(NeedsEmulation) as caught:
                filters.check(order, rules, **kw)  # type: ignore[arg-type]
            assert caught.value.field == field
            assert str(caught.value).endswith("emulated unless [worker] emulate is off)")
    for order in touched:
        order = msgspec.structs.replace(order, quantity=D("10"))  # NOTIONAL: at least 5
        assert filters.check(order, rules) == order


@pytest.mark.parametrize("order", [o for o in conditional("EUR_USD")
                                   if o.type is not OrderType.MARKET_IF_TOUCHED],
                         ids=lambda o: str(o.type))
def test_oanda_refuses_them_before_sending(order: OrderSpec) -> None:
    # market_if_touched is native (tests/unit/test_oanda_wire.py).
    inst = instruments.parse({"instruments": [
        {"name": "EUR_USD", "displayPrecision": 5, "tradeUnitsPrecision": 0,
         "minimumTradeSize": "1", "maximumOrderUnits": "100000000"}]})["EUR_USD"]
    assert_refused(lambda o: oanda_wire.order_request("cid", o, inst), order, "oanda")


@pytest.mark.parametrize("symbol", ["AAPL", "BTC/USD"])
def test_alpaca_refuses_them_before_sending(symbol: str) -> None:
    # trailing_stop is native on stocks (tests/unit/test_alpaca_wire.py).
    for order in conditional(symbol):
        if order.type is not OrderType.TRAILING_STOP:
            assert_refused(alpaca_wire.check, order, "alpaca")
