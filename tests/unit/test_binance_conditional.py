"""Binance's native conditional orders: each trailing stop / if-touched combination and the
exact parameters sent, and each combination Binance cannot take exactly refused before
sending, naming the field (the emulator will trail those)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from devtools.binance_exchange.engine import Exchange
from executor.brokers.base import EMULATED, BrokerStatus
from executor.brokers.binance import filters, reconcile, wire
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderType,
    Side,
    TimeInForce,
    TrailingOffsetType,
    WireDecimal,
)

RULES = filters.parse(Exchange().exchange_info({}))
BTC = RULES["BTCUSDT"]
BPS, PERCENT, PRICE = TrailingOffsetType.BPS, TrailingOffsetType.PERCENT, TrailingOffsetType.PRICE


def trailing(side: Side = Side.SELL, offset: str = "100",
             offset_type: TrailingOffsetType | None = BPS, activation: str | None = None,
             type: OrderType = OrderType.TRAILING_STOP, **kw: Any) -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=side, type=type,
                     quantity=WireDecimal("0.01"), trailing_offset=WireDecimal(offset),
                     trailing_offset_type=offset_type,
                     activation_price=None if activation is None else WireDecimal(activation),
                     **kw)


def touched(side: Side, type: OrderType = OrderType.MARKET_IF_TOUCHED,
            price: str | None = None) -> OrderSpec:
    return OrderSpec(account="bn", symbol="BTCUSDT", side=side, type=type,
                     quantity=WireDecimal("0.01"), stop_price=WireDecimal("49000"),
                     price=None if price is None else WireDecimal(price))


def sent(order: OrderSpec) -> dict[str, str]:
    checked = filters.check(order, BTC, reference=WireDecimal("50000"))
    params = wire.order_params("cid-1", checked)
    assert params.pop("newClientOrderId") == "cid-1"
    assert params.pop("newOrderRespType") == "FULL"
    assert (params.pop("symbol"), params.pop("quantity")) == ("BTCUSDT", "0.01")
    return params


def refused(order: OrderSpec, rules: filters.Rules = BTC) -> ContractError:
    with pytest.raises(ContractError) as caught:
        filters.check(order, rules, reference=WireDecimal("50000"))
    return caught.value


@pytest.mark.parametrize("side", [Side.SELL, Side.BUY])
def test_a_trailing_stop_without_activation_is_a_stop_loss_with_a_trailing_delta(
        side: Side) -> None:
    assert sent(trailing(side, "100", BPS)) == {
        "side": side.upper(), "type": "STOP_LOSS", "trailingDelta": "100"}


@pytest.mark.parametrize(("side", "activation"), [(Side.SELL, "51000"), (Side.BUY, "49000")])
def test_a_trailing_stop_with_activation_is_a_take_profit_whose_stop_price_activates_it(
        side: Side, activation: str) -> None:
    # TAKE_PROFIT's stop condition (SELL: price >= stop, BUY: price <= stop) is ours.
    assert sent(trailing(side, "2.5", PERCENT, activation)) == {
        "side": side.upper(), "type": "TAKE_PROFIT", "trailingDelta": "250",
        "stopPrice": activation}


@pytest.mark.parametrize(("offset", "offset_type", "delta"), [
    ("10", BPS, "10"), ("2000", BPS, "2000"), ("1", PERCENT, "100"), ("0.25", PERCENT, "25"),
    ("0.10", PERCENT, "10"), ("150.0", BPS, "150")])
def test_whole_bips_are_native(offset: str, offset_type: TrailingOffsetType,
                               delta: str) -> None:
    assert sent(trailing(Side.SELL, offset, offset_type))["trailingDelta"] == delta


@pytest.mark.parametrize(("side", "binance"), [(Side.BUY, "TAKE_PROFIT"),
                                               (Side.SELL, "TAKE_PROFIT")])
def test_market_if_touched_is_a_take_profit(side: Side, binance: str) -> None:
    assert sent(touched(side)) == {"side": side.upper(), "type": binance, "stopPrice": "49000"}


def test_limit_if_touched_is_a_take_profit_limit() -> None:
    assert sent(touched(Side.BUY, OrderType.LIMIT_IF_TOUCHED, "48990")) == {
        "side": "BUY", "type": "TAKE_PROFIT_LIMIT", "stopPrice": "49000", "price": "48990",
        "timeInForce": "GTC"}


def test_a_price_offset_is_refused_naming_its_type() -> None:
    for offset_type in (PRICE, None):  # none: price, the contract's default
        err = refused(trailing(offset_type=offset_type, offset="50"))
        assert err.field == "trailing_offset_type"
        assert str(err) == ("trailing_offset_type price is not supported natively by binance "
                            "(trailingDelta is in bips; emulated unless [worker] emulate is off)")


@pytest.mark.parametrize(("offset", "offset_type"), [("12.5", BPS), ("0.125", PERCENT),
                                                     ("0.001", PERCENT)])
def test_a_fraction_of_a_bip_is_refused_naming_the_offset(
        offset: str, offset_type: TrailingOffsetType) -> None:
    err = refused(trailing(offset=offset, offset_type=offset_type))
    assert err.field == "trailing_offset"
    assert "not a whole number" in str(err) and EMULATED in str(err)


def test_a_trailing_stop_limit_is_refused_naming_the_type() -> None:
    order = trailing(type=OrderType.TRAILING_STOP_LIMIT, limit_offset=WireDecimal("10"),
                     time_in_force=TimeInForce.GTC)
    err = refused(order)
    assert err.field == "type"
    assert "trailing_stop_limit is not supported natively by binance" in str(err)
    assert EMULATED in str(err)


def test_the_trailing_delta_filter_at_its_bounds() -> None:
    bounds = filters.TrailingBounds(above=(20, 300), below=(30, 400))
    rules = msgspec.structs.replace(BTC, trailing_delta=bounds)
    # STOP_LOSS SELL and TAKE_PROFIT BUY: below; STOP_LOSS BUY and TAKE_PROFIT SELL: above.
    for order, low, high in ((trailing(Side.SELL), 30, 400),
                             (trailing(Side.BUY, activation="49000"), 30, 400),
                             (trailing(Side.BUY), 20, 300),
                             (trailing(Side.SELL, activation="51000"), 20, 300)):
        for ok in (low, high):
            assert filters.check(msgspec.structs.replace(
                order, trailing_offset=WireDecimal(ok)), rules)
        for bad in (low - 1, high + 1):
            err = refused(msgspec.structs.replace(order, trailing_offset=WireDecimal(bad)),
                          rules)
            assert err.field == "trailing_offset"
            assert str(err).startswith(f"Binance filter TRAILING_DELTA: trailing_offset is "
                                       f"{bad} bips, outside min {low}, max {high} for a ")


def test_the_filter_is_read_from_exchange_info() -> None:
    assert BTC.trailing_delta == filters.TrailingBounds((10, 2000), (10, 2000))
    assert BTC.trailing and RULES["ETHUSDT"].trailing_delta is None


def test_a_symbol_without_trailing_stops_refuses_them() -> None:
    rules = msgspec.structs.replace(BTC, trailing=False)
    err = refused(trailing(), rules)
    assert err.field == "type" and "allowTrailingStop" in str(err)
    assert filters.check(touched(Side.BUY), rules)  # if-touched orders need no trailing


def test_an_activation_price_off_the_tick_is_refused_naming_it() -> None:
    err = refused(trailing(activation="51000.005"))
    assert err.field == "activation_price" and "PRICE_FILTER" in str(err)


def remote(type: str, stop: str, delta: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"symbol": "BTCUSDT", "side": "SELL", "type": type,
                           "origQty": "0.01000000", "price": "0.00000000", "stopPrice": stop,
                           "timeInForce": "GTC", "clientOrderId": "x"}
    if delta is not None:
        out["trailingDelta"] = delta
    return out


def test_an_orphan_trailing_stop_is_adopted_as_ours_when_our_contract_can_say_it() -> None:
    plain = reconcile.spec_of(remote("STOP_LOSS", "0.00000000", 150), "bn")
    assert plain is not None and plain.type is OrderType.TRAILING_STOP
    assert (plain.trailing_offset, plain.trailing_offset_type, plain.activation_price,
            plain.stop_price) == (150, BPS, None, None)
    activated = reconcile.spec_of(remote("TAKE_PROFIT", "51000.00000000", 150), "bn")
    assert activated is not None and activated.type is OrderType.TRAILING_STOP
    assert (activated.activation_price, activated.stop_price) == (51000, None)
    # A trailing STOP_LOSS activated by a fall: no order of ours behaves so.
    assert reconcile.spec_of(remote("STOP_LOSS", "49000.00000000", 150), "bn") is None
    stop = reconcile.spec_of(remote("STOP_LOSS", "49000.00000000", None), "bn")
    assert stop is not None and stop.type is OrderType.STOP and stop.stop_price == 49000


def test_a_trailing_stops_execution_reports_map_as_a_stops() -> None:
    ex = Exchange()
    events: list[dict[str, Any]] = []
    ex.listeners.append(events.append)
    ex.place({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "0.01",
              "trailingDelta": "100", "newClientOrderId": "t-ev"})
    ex.set_price("BTCUSDT", WireDecimal("49500"))  # 50000 * 0.99: fires
    reports = [wire.event_report(e) for e in events if e["e"] == "executionReport"]
    assert [(r.status, r.filled_quantity) for r in reports] == [
        (BrokerStatus.NEW, 0), (BrokerStatus.FILLED, WireDecimal("0.01"))]
    assert [f.price for f in reports[-1].fills] == [49500]
    assert {r.client_order_id for r in reports} == {"t-ev"}
