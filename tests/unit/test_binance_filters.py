"""Binance's exchange filters, checked before sending: each filter at its boundaries, with
a message naming the filter and the allowed values."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from devtools.binance_exchange.engine import Exchange
from executor.brokers.binance import filters
from producer.contract import ContractError, OrderSpec, OrderType, Side, TimeInForce, WireDecimal

INFO = Exchange().exchange_info({})  # the local exchange's exchangeInfo: Binance's shape
RULES = filters.parse(INFO)
BTC, ETH = RULES["BTCUSDT"], RULES["ETHUSDT"]


def spec(type: OrderType = OrderType.LIMIT, qty: str = "0.01", price: str | None = "50000",
         **kw: Any) -> OrderSpec:
    return OrderSpec(account="bn", symbol=kw.pop("symbol", "BTCUSDT"),
                     side=kw.pop("side", Side.BUY), type=type, quantity=WireDecimal(qty),
                     price=None if price is None else WireDecimal(price), **kw)


def refused(order: OrderSpec, rules: filters.Rules = BTC, **kw: Any) -> ContractError:
    with pytest.raises(ContractError) as caught:
        filters.check(order, rules, **kw)
    return caught.value


def test_parse_reads_every_filter() -> None:
    assert BTC.price == filters.Range(Decimal("0.01"), Decimal(1_000_000), Decimal("0.01"))
    assert BTC.lot == filters.Range(Decimal("0.00001"), Decimal(9000), Decimal("0.00001"))
    assert BTC.market_lot == filters.Range(Decimal(0), Decimal(100), Decimal(0))
    assert (BTC.min_notional, BTC.max_notional, BTC.notional_filter) == (
        Decimal(5), Decimal(9_000_000), "NOTIONAL")
    assert (ETH.min_notional, ETH.notional_filter) == (Decimal(10), "MIN_NOTIONAL")
    assert BTC.percent_by_side == (Decimal(5), Decimal("0.2"), Decimal(5), Decimal("0.2"))
    assert (BTC.max_num_orders, BTC.quote_asset, BTC.base_asset) == (200, "USDT", "BTC")


def test_lot_size_boundaries() -> None:
    assert filters.check(spec(qty="0.00001", price="500000"), BTC).quantity == Decimal("0.00001")
    assert filters.check(spec(qty="9000", price="1"), BTC)
    err = refused(spec(qty="0.000015"))
    assert err.field == "quantity"
    assert str(err) == ("Binance filter LOT_SIZE: quantity 0.000015 is outside min 0.00001, "
                        "max 9000, step 0.00001")
    assert "LOT_SIZE" in str(refused(spec(qty="9000.00001", price="0.01")))
    assert "LOT_SIZE" in str(refused(spec(qty="0.000009", price="1000000")))


def test_market_lot_size_applies_to_market_orders_only() -> None:
    assert "MARKET_LOT_SIZE" in str(refused(spec(OrderType.MARKET, "100.00001", None)))
    assert filters.check(spec(OrderType.MARKET, "100", None), BTC)
    assert filters.check(spec(qty="100.00001", price="1000"), BTC)  # a limit: LOT_SIZE only
    err = refused(spec(OrderType.MARKET, "0.00015", None, symbol="ETHUSDT"), ETH)
    assert "LOT_SIZE" in str(err)


def test_price_filter_on_price_and_stop_price() -> None:
    err = refused(spec(price="50000.005"))
    assert (err.field, str(err)) == ("price", "Binance filter PRICE_FILTER: price 50000.005 is "
                                     "outside min 0.01, max 1000000, tick 0.01")
    err = refused(spec(OrderType.STOP, price=None, stop_price=WireDecimal("1000000.01")))
    assert err.field == "stop_price"
    assert filters.check(spec(price="0.01", qty="9000"), BTC) is not None


def test_notional_min_and_max() -> None:
    assert filters.check(spec(qty="0.0001", price="50000"), BTC)  # exactly 5
    err = refused(spec(qty="0.0001", price="49999.99"))
    assert "NOTIONAL" in str(err) and "below the minimum 5" in str(err)
    assert "above the maximum 9000000" in str(refused(spec(qty="1000", price="9000.01")))
    # A market order: checked against the reference price, when one is known.
    assert filters.check(spec(OrderType.MARKET, "0.00001", None), BTC)
    assert "NOTIONAL" in str(refused(spec(OrderType.MARKET, "0.00001", None),
                                     reference=Decimal(50000)))
    # applyMaxToMarket is false: a big market order passes the maximum.
    assert filters.check(spec(OrderType.MARKET, "99", None), BTC, reference=Decimal(1_000_000))


def test_min_notional() -> None:
    err = refused(spec(qty="0.0033", price="3000", symbol="ETHUSDT"), ETH)
    assert "MIN_NOTIONAL" in str(err) and "9.9" in str(err)
    assert filters.check(spec(qty="0.0034", price="3000", symbol="ETHUSDT"), ETH)


def test_percent_price_by_side() -> None:
    ref = Decimal(50000)
    assert filters.check(spec(price="250000"), BTC, reference=ref)  # bid up 5x
    err = refused(spec(price="250000.01"), reference=ref)
    assert "PERCENT_PRICE_BY_SIDE" in str(err) and "10000 to 250000" in str(err)
    assert "PERCENT_PRICE_BY_SIDE" in str(refused(spec(price="9999.99"), reference=ref))
    assert filters.check(spec(price="9999.99"), BTC)  # no reference: Binance checks it
    err = refused(spec(qty="1", price="2399.99", side=Side.SELL, symbol="ETHUSDT"), ETH,
                  reference=Decimal(3000))
    assert "0.8x to 1.2x" in str(err) and "sell" in str(err)


def test_max_num_orders() -> None:
    assert filters.check(spec(), BTC, open_orders=199)
    err = refused(spec(), open_orders=200)
    assert "MAX_NUM_ORDERS" in str(err) and "maximum is 200" in str(err)


def test_round_quantity_rounds_down_to_the_step() -> None:
    out = filters.check(spec(qty="0.0123456789"), BTC, round_quantity=True)
    assert out.quantity == Decimal("0.01234") and str(out.quantity) == "0.01234"
    same = spec(qty="0.01234")
    assert filters.check(same, BTC, round_quantity=True) is same
    # Below the minimum after rounding: refused all the same.
    assert "LOT_SIZE" in str(refused(spec(qty="0.000009", price="1000000"),
                                     round_quantity=True))


def test_unsupported_time_in_force_and_types() -> None:
    err = refused(spec(time_in_force=TimeInForce.GTD, expire_at=1))
    assert err.field == "time_in_force" and "gtd" in str(err)
    for tif in (TimeInForce.DAY, TimeInForce.OPG, TimeInForce.CLS):  # Alpaca's, OANDA's
        err = refused(spec(time_in_force=tif))
        assert err.field == "time_in_force" and str(tif) in str(err)
    err = refused(spec(OrderType.MARKET, price=None, time_in_force=TimeInForce.IOC))
    assert err.field == "time_in_force"
    err = refused(spec(OrderType.LIMIT_MAKER, time_in_force=TimeInForce.FOK))
    assert err.field == "time_in_force"
    only_limit = filters.Rules(symbol="X", base_asset="A", quote_asset="B", trading=True,
                               order_types=frozenset({"LIMIT"}))
    assert refused(spec(OrderType.STOP, price=None, stop_price=WireDecimal(1)),
                   only_limit).field == "type"
    halted = filters.Rules(symbol="X", base_asset="A", quote_asset="B", trading=False,
                           order_types=frozenset())
    assert refused(spec(), halted).field == "symbol"


def test_tidy() -> None:
    assert str(filters.tidy(Decimal("50000.00000000"))) == "50000"
    assert str(filters.tidy(Decimal("0.01000000"))) == "0.01"
    assert str(filters.tidy(Decimal("0E-8"))) == "0"
    assert filters.round_down(Decimal("1.999"), Decimal("0.01")) == Decimal("1.99")
