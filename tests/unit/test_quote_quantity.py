"""Market orders by quote amount (``quote_quantity``): the contract's rules, the order
model (filled when the broker says so), the paper exchange's refusal and the Binance
parameters and filters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devtools.binance_exchange.engine import Exchange
from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.brokers.binance import filters, wire
from executor.brokers.paper import PaperAccount
from executor.brokers.paper.matching import check as paper_check
from executor.model.order import Context, apply_report, new_order
from producer.contract import (
    Action,
    ContractError,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Request,
    Side,
    WireDecimal,
    decode_request,
)
from producer.validation import check_request

D = WireDecimal
CTX = Context(now=1, worker="w")


def quote_spec(quote: str = "100") -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                     quantity=None, quote_quantity=D(quote))


def refused(data: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_request(decode_request(data))
    return caught.value


def test_the_contract() -> None:
    check_request(decode_request(b'{"symbol":"BTCUSDT","side":"buy","type":"market",'
                                 b'"quote_quantity":"100"}'))
    both = refused(b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
                   b'"quote_quantity":"100"}')
    assert both.field == "quote_quantity" and "exclusive" in str(both)
    limit = refused(b'{"symbol":"BTCUSDT","side":"buy","type":"limit","price":"1",'
                    b'"quote_quantity":"100"}')
    assert limit.field == "quote_quantity" and "market" in str(limit)
    assert refused(b'{"symbol":"BTCUSDT","side":"buy","type":"market",'
                   b'"quote_quantity":"0"}').field == "quote_quantity"
    assert refused(b'{"symbol":"BTCUSDT","side":"buy","type":"market"}').field == "quantity"
    with pytest.raises(ContractError) as caught:
        check_request(Request(client_order_id="x", action=Action.AMEND, quote_quantity=D("5")))
    assert caught.value.field == "quote_quantity"


def test_filled_when_the_broker_says_so_after_its_last_fill() -> None:
    order, _ = new_order("q1", "r1", quote_spec(), CTX)
    fills = [Fill(fill_id=str(i), price=D("50000"), quantity=D("0.001")) for i in (1, 2)]
    partial = BrokerOrder(client_order_id="q1", broker_order_id="9", symbol="BTCUSDT",
                          status=BrokerStatus.PARTIALLY_FILLED, quantity=D("0.002"),
                          filled_quantity=D("0.001"), fills=fills[:1])
    events = apply_report(order, partial, CTX)
    assert [e.state for e in events] == [OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED]
    done = BrokerOrder(client_order_id="q1", broker_order_id="9", symbol="BTCUSDT",
                       status=BrokerStatus.FILLED, quantity=D("0.002"),
                       filled_quantity=D("0.002"), fills=fills)
    events = apply_report(order, done, CTX)
    assert [e.state for e in events] == [OrderState.PARTIALLY_FILLED, OrderState.FILLED]
    assert events[-1].fill is None
    assert order.state is OrderState.FILLED and order.filled_quantity == Decimal("0.002")
    assert order.average_price == Decimal(50000)
    assert apply_report(order, done, CTX) == []  # again: nothing new


def test_the_paper_exchange_refuses_it_naming_the_field() -> None:
    with pytest.raises(ContractError) as caught:
        paper_check(quote_spec(), PaperAccount())
    assert caught.value.field == "quote_quantity"


def test_binance_parameters_and_notional() -> None:
    params = wire.order_params("q1", quote_spec("100.50"))
    assert params["quoteOrderQty"] == "100.50" and "quantity" not in params
    rules = filters.parse(Exchange().exchange_info({}))["BTCUSDT"]
    assert filters.check(quote_spec("5"), rules) == quote_spec("5")
    with pytest.raises(ContractError) as caught:
        filters.check(quote_spec("4.99"), rules)
    assert caught.value.field == "quote_quantity" and "NOTIONAL" in str(caught.value)
