"""The wire contract: strict decoding with errors that name the field, fixed-point decimals,
the per-action rules, and the committed JSON Schema in step with the types."""

from __future__ import annotations

import copy
import json
import pickle
import re
from decimal import Decimal

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer import contract, schema
from producer.contract import (
    Action,
    ContractError,
    Fill,
    OrderType,
    Request,
    Result,
    ResultStatus,
    WireDecimal,
    bounded_number,
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


def test_a_decimal_text_read_again_is_the_same_decimal_and_a_bad_one_still_refused() -> None:
    first = parse_decimal("0.0130")
    assert parse_decimal("0.0130") is first  # made once, shared: it never changes
    assert parse_decimal("0.013") is not first  # another text, its own fixed-point text
    fill = json.loads(encode(Fill(fill_id="f", price=first, quantity=parse_decimal("0.013"))))
    assert (fill["price"], fill["quantity"]) == ("0.0130", "0.013")
    for bad in ("1e5", "-0.0130", "0.0130 "):  # near a known text: checked all the same
        with pytest.raises(ValueError):
            parse_decimal(bad)


def test_the_decimals_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "_PARSED", {})
    monkeypatch.setattr(contract, "_PARSED_MOST", 100)
    values = [parse_decimal(f"{i}.5") for i in range(1000)]
    assert len(contract._PARSED) <= 100
    assert values == [Decimal(f"{i}.5") for i in range(1000)]


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


# -- bounds: nesting, digits and exponents, checked before anything is built ---------------

PLACE = '{"symbol":"BTCUSDT","side":"buy","type":"market",'


def nest(levels: int, open_: str = "[", close: str = "]") -> str:
    return open_ * levels + close * levels


@pytest.mark.parametrize(
    ("data", "field"),
    [
        # The request object is level 1, metadata's object level 2.
        (PLACE + '"quantity":"1","metadata":{"a":' + nest(31) + "}}", "metadata"),
        (PLACE + '"quantity":"1","metadata":' + '{"a":' * 1100 + "1" + "}" * 1101, "metadata"),
        (nest(33), "data"),
        ("[" * 100_000, "data"),  # not even closed
        (PLACE + '"quantity":' + nest(40) + "}", "quantity"),
        ('{"nope":' + nest(40) + "}", "data"),  # a key that is no field of the request
    ],
)
def test_nesting_deeper_than_the_limit_is_refused_naming_the_field(data: str, field: str
                                                                    ) -> None:
    with pytest.raises(ContractError, match=f"`{field}` nests .* deeper than 32") as info:
        decode_request(data.encode())
    assert info.value.field == field


def test_nesting_up_to_the_limit_is_a_request_and_strings_do_not_count() -> None:
    at_limit = decode_request(PLACE + '"quantity":"1","metadata":{"a":' + nest(30) + "}}")
    assert at_limit.metadata == {"a": json.loads(nest(30))}
    # Brackets inside strings (escaped quotes included) are text, not nesting.
    text = '[{\\"' * 50
    inside = decode_request(PLACE + f'"quantity":"1","metadata":{{"t":"{text}"}}}}')
    assert inside.metadata == {"t": text.replace("\\", "")}


@pytest.mark.parametrize(
    ("number", "accepted"),
    [
        ("1.5e3", "1500"), ("12345678901234567890", "12345678901234567890"),
        ("0.00000000000000000001", "0.00000000000000000001"), ("1e19", "10000000000000000000"),
        ("100e-20", "0.00000000000000000100"), ("0e999999", "0"),
        ("12345678901234567890.12345678901234567890", None),
    ],
)
def test_numbers_within_the_decimal_bounds_are_read_exactly(number: str,
                                                            accepted: str | None) -> None:
    req = decode_request(PLACE + f'"quantity":{number}}}')
    assert req.quantity is not None
    assert json.loads(encode(req))["quantity"] == (accepted or number)


@pytest.mark.parametrize(
    "number",
    ["123456789012345678901", "1e20", "1.5e20", "0.000000000000000000001", "1e-21",
     "1.0000000000000000000000", "1e9999999999", "1e-9999999999", "0e-21",
     "1" * 5000, "1e" + "9" * 5000, "-1e25"],
)
def test_numbers_beyond_the_decimal_bounds_are_invalid(number: str) -> None:
    places = [f'"quantity":{number}}}']
    if not number.isdigit() or len(number) > 4300:
        # Anywhere, numbers with a fraction or exponent; integers elsewhere than in decimal
        # fields cost nothing to read and keep the decoder's bound (4,300 digits).
        places.append(f'"quantity":"1","metadata":{{"x":[{number}]}}}}')
    for where in places:
        with pytest.raises(ContractError, match=r"at most 20 integer and 20 fraction|Integer "
                                                r"value out of range|integer digits") as info:
            decode_request(PLACE + where)
        assert info.value.field in ("quantity", "metadata")


def test_a_huge_exponent_is_refused_before_its_digits_are_made() -> None:
    import tracemalloc

    data = (PLACE + '"quantity":1e99999999}').encode()  # 100 MB of digits in fixed point
    tracemalloc.start()
    try:
        with pytest.raises(ContractError, match="quantity"):
            decode_request(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_parse_decimal_applies_the_same_bounds_to_python_values() -> None:
    assert parse_decimal(10**20 - 1) == Decimal("99999999999999999999")
    assert parse_decimal(Decimal("1E-20")) == Decimal("0.00000000000000000001")
    for bad in (10**20, -(10**20), Decimal("1E+20"), Decimal("1E-21"), Decimal("1E+999999999")):
        with pytest.raises(ValueError, match="at most 20"):
            parse_decimal(bad)


_JSON_NUMBER = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,30}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,30}", fullmatch=True)),
    st.one_of(st.just(""), st.builds(lambda e, n: f"{e}{n:+d}" if n < 0 or e == "E"
                                     else f"{e}{n}", st.sampled_from(["e", "E"]),
                                     st.integers(-60, 60))),
)


@given(_JSON_NUMBER)
def test_a_number_is_accepted_exactly_when_its_fixed_point_text_fits(number: str) -> None:
    """Against an independent oracle: the number's fixed-point text (``format(.., "f")``,
    cheap for these exponents) must fit the pattern of decimal strings."""
    fixed = format(Decimal(number), "f").lstrip("-")
    fits = re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", fixed) is not None
    try:
        value = bounded_number(number)
    except ValueError:
        assert not fits, (number, fixed)
        return
    assert fits, (number, fixed)
    assert value == Decimal(number) and str(value) == str(Decimal(number))
