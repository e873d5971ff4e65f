"""The wire contract: strict decoding with errors that name the field, fixed-point decimals,
the per-action rules, and the committed JSON Schema in step with the types."""

from __future__ import annotations

import copy
import json
import pickle
from decimal import Decimal

import jsonschema
import pytest

from producer import schema
from producer.contract import (
    Action,
    ContractError,
    Fill,
    OrderType,
    Request,
    Result,
    ResultStatus,
    WireDecimal,
    decode_request,
    decode_result,
    encode,
    parse_decimal,
    plus,
    wire,
    zero,
)
from producer.validation import check_request

LIMIT = (
    '{"action":"place","client_order_id":"s1-0001","symbol":"BTCUSDT","side":"buy",'
    '"type":"limit","quantity":"0.010","price":"50000","time_in_force":"gtc"}'
)


def test_architecture_example_decodes_exactly() -> None:
    req = decode_request(LIMIT)
    assert req.action is Action.PLACE
    assert req.type is OrderType.LIMIT
    assert req.quantity == Decimal("0.010") and isinstance(req.quantity, Decimal)
    assert str(req.quantity) == "0.010"  # the producer's precision is kept
    check_request(req)


def test_numbers_are_read_exactly_never_through_float() -> None:
    req = decode_request(
        '{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":0.1,'
        '"price":12345678901234567.123456789}'
    )
    assert req.quantity == Decimal("0.1")
    assert req.price == Decimal("12345678901234567.123456789")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1","colour":"red"}',
         "colour"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":true}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1e5"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":" 1"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"NaN"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"-1"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"hold","type":"market","quantity":"1"}', "side"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
         '"client_order_id":"has space"}', "client_order_id"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
         '"client_order_id":"' + "x" * 37 + '"}', "client_order_id"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1","deadline":"soon"}',
         "deadline"),
        ('[1,2]', "data"),
        ('not json', "data"),
    ],
)
def test_decode_errors_name_the_field(data: str, field: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_request(data)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"side":"buy","type":"market","quantity":"1"}', "symbol"),
        ('{"symbol":"BTCUSDT","type":"market","quantity":"1"}', "side"),
        ('{"symbol":"BTCUSDT","side":"buy","quantity":"1"}', "type"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"0"}', "quantity"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1"}', "price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1","price":"5"}',
         "price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"stop","quantity":"1"}', "stop_price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"stop_limit","quantity":"1",'
         '"stop_price":"5"}', "price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"take_profit","quantity":"1","price":"5",'
         '"stop_price":"5"}', "price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"0"}',
         "price"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"5",'
         '"time_in_force":"gtd"}', "expire_at"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"5",'
         '"expire_at":99}', "expire_at"),
        ('{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
         '"time_in_force":"gtd","expire_at":9999999999999}', "time_in_force"),
        ('{"action":"cancel"}', "client_order_id"),
        ('{"action":"cancel","client_order_id":"a","quantity":"1"}', "quantity"),
        ('{"action":"cancel_all","client_order_id":"a"}', "client_order_id"),
    ],
)
def test_rules_per_action_and_type_name_the_field(data: str, field: str) -> None:
    req = decode_request(data)
    with pytest.raises(ContractError) as info:
        check_request(req, now_ms=1_000)
    assert info.value.field == field
    assert field in str(info.value)


def test_gtd_expire_at_must_be_in_the_future() -> None:
    req = decode_request(
        '{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":"5",'
        '"time_in_force":"gtd","expire_at":5000}'
    )
    check_request(req, now_ms=4_999)
    with pytest.raises(ContractError, match="expire_at"):
        check_request(req, now_ms=5_000)


@pytest.mark.parametrize(
    ("value", "text"),
    [("0.00001", "0.00001"), ("1E-7", "0.0000001"), ("1E+3", "1000"), ("50000.10", "50000.10")],
)
def test_decimals_are_encoded_in_fixed_point(value: str, text: str) -> None:
    fill = Fill(fill_id="f1", price=WireDecimal(value), quantity=wire(Decimal(value)))
    encoded = json.loads(encode(fill))
    assert encoded["price"] == text and encoded["quantity"] == text


def test_copies_of_decimals_keep_their_fixed_point_text() -> None:
    value = WireDecimal("1E-7")
    for copied in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        fill = Fill(fill_id="f1", price=copied, quantity=zero())
        assert json.loads(encode(fill))["price"] == "0.0000001"


@pytest.mark.parametrize("amount", ["0.001", "5", "1E+1", "1E-7", "0.010"])
def test_plus_from_zero_is_the_amount_with_the_same_text_as_the_sum(amount: str) -> None:
    value = WireDecimal(amount)
    assert plus(zero(), value) is value
    summed = plus(WireDecimal(0), value)  # an equal zero that is not the shared one
    assert summed == value and summed is not value
    assert json.loads(encode(Fill(fill_id="f", price=summed, quantity=value))) == json.loads(
        encode(Fill(fill_id="f", price=value, quantity=summed)))


def test_parse_decimal_refuses_what_is_not_a_plain_decimal() -> None:
    assert parse_decimal("0.010") == Decimal("0.010")
    assert parse_decimal(7) == Decimal(7)
    for bad in ("1e5", "+1", "1.", ".5", "", "1,5", True, 1.5, None, "Infinity"):
        with pytest.raises(ValueError):
            parse_decimal(bad)


def test_result_round_trips() -> None:
    result = Result(request_id="1-0", action=Action.PLACE, status=ResultStatus.FILLED,
                    client_order_id="a", filled_quantity=WireDecimal("0.010"),
                    average_price=WireDecimal("50000.5"))
    back = decode_result(encode(result))
    assert back == result
    assert back.ok
    failed = Result(request_id="1-0", action=Action.PLACE, status=ResultStatus.FAILED,
                    reason_code="invalid", reason="x")
    assert not failed.ok


@pytest.mark.parametrize("name", sorted(schema.SCHEMAS))
def test_committed_schema_matches_the_types(name: str) -> None:
    assert schema.committed(name) == schema.render(name), (
        f"producer/schema/{name}.schema.json is stale: run `orderstream schema --write`"
    )


@pytest.mark.parametrize("name", ["event", "result"])  # those with docstrings of many lines
def test_schema_does_not_depend_on_how_msgspec_renders_docstrings(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec before 0.23 copied docstrings with their source indentation, 0.23 dedents
    them: the rendering is the same either way."""
    def indented(node: object) -> object:
        if isinstance(node, dict):
            return {k: v.replace("\n", "\n    ") if k == "description" and isinstance(v, str)
                    else indented(v) for k, v in node.items()}
        if isinstance(node, list):
            return [indented(item) for item in node]
        return node

    expected = schema.render(name)
    real = schema.json_schema
    monkeypatch.setattr(schema, "json_schema", lambda tp: indented(real(tp)))
    assert "\\n    " in json.dumps(schema.json_schema(schema.SCHEMAS[name]))
    assert schema.render(name) == expected


def test_schema_accepts_valid_and_refuses_invalid_requests() -> None:
    validator = jsonschema.Draft202012Validator(schema.generate("request"))
    valid = [
        json.loads(LIMIT),
        {"symbol": "EUR_USD", "side": "sell", "type": "market", "quantity": 1000},
        {"symbol": "BTCUSDT", "side": "buy", "type": "stop_limit", "quantity": "1",
         "price": "5", "stop_price": "6"},
        {"action": "cancel", "client_order_id": "abc"},
        {"action": "cancel_all"},
    ]
    invalid = [
        {"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "1"},
        {"symbol": "BTCUSDT", "side": "buy", "type": "market", "quantity": "1", "price": "5"},
        {"symbol": "BTCUSDT", "side": "buy", "type": "market", "quantity": "1e5"},
        {"symbol": "BTCUSDT", "side": "buy", "type": "market", "quantity": "1", "x": 1},
        {"action": "cancel"},
        {"side": "buy", "type": "market", "quantity": "1"},
    ]
    for doc in valid:
        assert not list(validator.iter_errors(doc)), doc
        check_request(decode_request(json.dumps(doc)))
    for doc in invalid:
        assert list(validator.iter_errors(doc)), doc
        with pytest.raises(ContractError):
            check_request(decode_request(json.dumps(doc)))


def test_request_defaults_are_omitted_on_the_wire() -> None:
    req = Request(action=Action.CANCEL, client_order_id="abc")
    assert json.loads(encode(req)) == {"action": "cancel", "client_order_id": "abc"}
