"""OCO orders (type ``oco``): the contract's rules for the two legs, the schema, the paper
exchange's refusal and how the risk checks value one."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.brokers.binance import filters, wire
from executor.brokers.paper import PaperAccount
from executor.brokers.paper.matching import check as paper_check
from executor.safety.risk.book import Candidate
from producer.contract import (
    ContractError,
    Fill,
    OrderSpec,
    OrderType,
    Side,
    WireDecimal,
    decode_request,
)
from producer.schema import generate
from producer.validation import check_request

D = WireDecimal


def oco(side: str = "sell", **fields: str) -> bytes:
    base = {"symbol": "BTCUSDT", "side": side, "type": "oco", "quantity": "0.01",
            "price": "52000" if side == "sell" else "48000",
            "stop_price": "48000" if side == "sell" else "52000"}
    base.update(fields)
    return ("{" + ",".join(f'"{k}":"{v}"' for k, v in base.items() if v != "-") + "}").encode()


def refused(data: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_request(decode_request(data))
    return caught.value


def test_a_well_formed_oco_passes_both_sides() -> None:
    check_request(decode_request(oco("sell")))
    check_request(decode_request(oco("buy")))
    check_request(decode_request(oco("sell", stop_limit_price="47900", time_in_force="ioc")))


@pytest.mark.parametrize(("data", "field", "words"), [
    (oco(price="-"), "price", "required"),
    (oco(stop_price="-"), "stop_price", "required"),
    (oco("sell", price="48000"), "stop_price", "not above"),  # equal legs
    (oco("sell", price="47000"), "stop_price", "not above"),
    (oco("buy", price="52000"), "stop_price", "not below"),
    (oco(stop_limit_price="0"), "stop_limit_price", "positive"),
    (oco(time_in_force="ioc"), "time_in_force", "stop_limit_price"),
    (oco(time_in_force="gtd", expire_at="-"), "time_in_force", "gtd"),
    (oco(quote_quantity="100", quantity="-"), "quote_quantity", "market"),
    (oco(quantity="-"), "quantity", "required"),
])
def test_missing_or_contradictory_legs_are_invalid_naming_the_field(
        data: bytes, field: str, words: str) -> None:
    error = refused(data)
    assert error.field == field and words in str(error)


def test_stop_limit_price_belongs_to_oco_only() -> None:
    error = refused(b'{"symbol":"BTCUSDT","side":"sell","type":"stop_limit","quantity":"1",'
                    b'"price":"1","stop_price":"1","stop_limit_price":"1"}')
    assert error.field == "stop_limit_price" and "oco" in str(error)
    error = refused(b'{"action":"amend","client_order_id":"x","stop_limit_price":"1"}')
    assert error.field == "stop_limit_price"


def test_the_schema_documents_the_legs() -> None:
    schema = generate("request")
    props = schema["$defs"]["Request"]["properties"]
    assert "oco" in schema["$defs"]["OrderType"]["enum"]
    assert "stop leg" in props["stop_limit_price"]["anyOf"][0]["description"]
    assert "price > stop_price" in props["type"]["anyOf"][0]["description"]
    rules = schema["allOf"]
    assert {"if": {"required": ["stop_limit_price"]},
            "then": {"properties": {"type": {"const": "oco"}}, "required": ["type"]}} in rules


def spec(side: Side, price: str, stop: str, stop_limit: str | None = None) -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=side, type=OrderType.OCO,
                     quantity=D("0.5"), price=D(price), stop_price=D(stop),
                     stop_limit_price=None if stop_limit is None else D(stop_limit))


def test_the_paper_exchange_takes_an_oco_and_checks_each_legs_price_on_its_tick() -> None:
    assert paper_check(spec(Side.SELL, "52000", "48000"), PaperAccount()).tick_size
    with pytest.raises(ContractError) as caught:
        paper_check(spec(Side.SELL, "52000", "48000", "47999.999"), PaperAccount())
    assert caught.value.field == "stop_limit_price" and "tick size" in str(caught.value)


@pytest.mark.parametrize(("order", "price"), [
    (spec(Side.SELL, "52000", "48000"), "52000"),
    (spec(Side.BUY, "48000", "52000"), "52000"),
    (spec(Side.BUY, "48000", "52000", "52100"), "52100"),
])
def test_risk_values_an_oco_at_its_dearest_leg(order: OrderSpec, price: str) -> None:
    candidate = Candidate("c", "r", order, reference=Decimal("50000"))
    assert candidate.price == Decimal(price)
    assert candidate.notional == Decimal("0.5") * Decimal(price)


# -- Binance: one report from the two legs ----------------------------------------------------

def leg(cid: str, status: BrokerStatus, filled: str = "0", *fills: str) -> BrokerOrder:
    return BrokerOrder(client_order_id=cid, broker_order_id="1", symbol="BTCUSDT",
                       status=status, quantity=D("0.5"), filled_quantity=D(filled),
                       fills=[Fill(fill_id=f, price=D("1"), quantity=D("0.25")) for f in fills],
                       updated_at=len(fills))


S = BrokerStatus


@pytest.mark.parametrize(("above", "below", "status", "filled"), [
    (leg("a", S.NEW), leg("b", S.NEW), S.NEW, "0"),
    (leg("a", S.EXPIRED), leg("b", S.NEW), S.NEW, "0"),  # the sibling's fill still to come
    (leg("a", S.FILLED, "0.5", "t1", "t2"), leg("b", S.EXPIRED), S.FILLED, "0.5"),
    (leg("a", S.EXPIRED), leg("b", S.FILLED, "0.5", "t1", "t2"), S.FILLED, "0.5"),
    (leg("a", S.PARTIALLY_FILLED, "0.25", "t1"), leg("b", S.EXPIRED), S.PARTIALLY_FILLED,
     "0.25"),
    (leg("a", S.CANCELLED, "0.25", "t1"), leg("b", S.EXPIRED), S.CANCELLED, "0.25"),
    (leg("a", S.CANCELLED), leg("b", S.CANCELLED), S.CANCELLED, "0"),
    (leg("a", S.EXPIRED), leg("b", S.EXPIRED), S.EXPIRED, "0"),
    (leg("a", S.REJECTED), leg("b", S.EXPIRED), S.REJECTED, "0"),
])
def test_the_list_status_follows_its_legs(above: BrokerOrder, below: BrokerOrder,
                                          status: BrokerStatus, filled: str) -> None:
    report = wire.combine("ours", 7, "BTCUSDT", Decimal("0.5"), [above, below])
    assert (report.client_order_id, report.broker_order_id) == ("ours", "list:7")
    assert report.status is status and report.filled_quantity == Decimal(filled)
    assert report.quantity == Decimal("0.5")
    assert [f.fill_id for f in report.fills] == [*(f.fill_id for f in above.fills),
                                                 *(f.fill_id for f in below.fills)]


def test_legs_as_binance_positions_them() -> None:
    (up, above), (down, below) = filters.oco_legs(spec(Side.SELL, "52000", "48000", "47900"))
    assert (up, above.type, above.price, above.stop_price) == (
        "above", OrderType.LIMIT_MAKER, D("52000"), None)
    assert (down, below.type, below.price, below.stop_price) == (
        "below", OrderType.STOP_LIMIT, D("47900"), D("48000"))
    (up, above), (down, below) = filters.oco_legs(spec(Side.BUY, "48000", "52000"))
    assert (up, above.type, above.stop_price) == ("above", OrderType.STOP, D("52000"))
    assert (down, below.type, below.price) == ("below", OrderType.LIMIT_MAKER, D("48000"))
