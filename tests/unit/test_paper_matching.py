"""The paper exchange's matching model: book walk, fees, time in force, resting fills,
triggers and filters. Expected prices and fees are worked out by hand here, not by the code
under test."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.brokers.base import BrokerStatus
from executor.brokers.paper.config import PaperAccount
from executor.brokers.paper.matching import (
    FOK_EXPIRED,
    GTD_EXPIRED,
    GTD_IN_PAST,
    INSUFFICIENT_LIQUIDITY,
    IOC_EXPIRED,
    WOULD_TRIGGER,
    Book,
    Direction,
    advance,
    check,
    submit,
    watch,
)
from executor.brokers.paper.records import PaperOrder, decode_order, encode_order, report
from producer.contract import (
    ContractError,
    Fill,
    OrderSpec,
    OrderType,
    Side,
    TimeInForce,
    WireDecimal,
    wire,
)

D = Decimal
CONFIG = PaperAccount()
BTC = CONFIG.symbols["BTCUSDT"]  # tick 0.01, step 0.00001, depth 5
NOW = 1_700_000_000_000
T = OrderType


def spec(type_: OrderType = T.MARKET, side: Side = Side.BUY, quantity: str = "1",
         price: str | None = None, stop_price: str | None = None,
         tif: TimeInForce = TimeInForce.GTC, expire_at: int | None = None,
         symbol: str = "BTCUSDT") -> OrderSpec:
    return OrderSpec(
        account="default", symbol=symbol, side=side, type=type_, quantity=wire(D(quantity)),
        price=None if price is None else wire(D(price)),
        stop_price=None if stop_price is None else wire(D(stop_price)),
        time_in_force=tif, expire_at=expire_at)


def place(order: OrderSpec, ref: str = "50000", config: PaperAccount = CONFIG,
          now: int = NOW) -> PaperOrder:
    sym = check(order, config)
    return submit("c1", "B1", order, Book(D(ref), sym, config), sym, config, now)


def step(order: PaperOrder, ref: str, config: PaperAccount = CONFIG,
         now: int = NOW + 1) -> PaperOrder | None:
    sym = config.symbols[order.spec.symbol]
    return advance(order, Book(D(ref), sym, config), sym, config, now)


def trades(order: PaperOrder) -> list[tuple[Decimal, Decimal]]:
    return [(f.price, f.quantity) for f in order.fills]


def fee(price: str, quantity: str, bps: int) -> Decimal:
    return (D(price) * D(quantity) * bps / 10_000).quantize(D("1e-8"), ROUND_HALF_UP)


def assert_no_float(value: Any) -> None:
    """Every amount in an order and its report is an exact WireDecimal."""
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            assert_no_float(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            assert_no_float(item)
    else:
        assert not isinstance(value, float), value
        if isinstance(value, Decimal):
            assert type(value) is WireDecimal, value


# -- the book --------------------------------------------------------------------------------


def test_book_levels_round_away_from_the_reference_onto_the_tick() -> None:
    book = Book(D("50000.01"), BTC, CONFIG)
    # ask 1: 50000.01 * 1.0001 = 50005.011001 -> up to 50005.02,
    # ask 2: 50000.01 * 1.0002 = 50010.012002 -> up to 50010.02;
    # bid 1: 50000.01 * 0.9999 = 49995.009999 -> down to 49995.00,
    # bid 2: 50000.01 * 0.9998 = 49990.009998 -> down to 49990.00
    assert book.asks[:3] == [D("50000.01"), D("50005.02"), D("50010.02")]
    assert book.bids[:3] == [D("50000.01"), D("49995.00"), D("49990.00")]
    assert len(book.asks) == len(book.bids) == CONFIG.depth_levels


def test_slippage_moves_the_best_level() -> None:
    config = PaperAccount(slippage_bps=D("2.5"))
    book = Book(D("50000"), BTC, config)
    assert book.asks[0] == D("50012.50") and book.bids[0] == D("49987.50")
    assert book.asks[1] == D("50017.50")  # 3.5 bps


# -- market orders ---------------------------------------------------------------------------


def test_market_buy_walks_the_book_level_by_level_with_taker_fees() -> None:
    order = place(spec(quantity="12"))
    assert order.status is BrokerStatus.FILLED
    assert trades(order) == [(D("50000"), D("5")), (D("50005"), D("5")), (D("50010"), D("2"))]
    assert [f.commission for f in order.fills] == [D("250"), D("250.025"), D("100.02")]
    assert {f.liquidity for f in order.fills} == {"taker"}
    assert {f.commission_asset for f in order.fills} == {"USDT"}
    assert [f.fill_id for f in order.fills] == ["B1-1", "B1-2", "B1-3"]
    assert order.filled_quantity == D("12")
    assert_no_float(order)


def test_market_sell_walks_the_bids() -> None:
    order = place(spec(side=Side.SELL, quantity="7"))
    assert trades(order) == [(D("50000"), D("5")), (D("49995"), D("2"))]


def test_market_order_beyond_the_depth_expires_the_rest() -> None:
    order = place(spec(quantity="60"))  # 10 levels of 5
    assert order.status is BrokerStatus.EXPIRED
    assert order.reason == INSUFFICIENT_LIQUIDITY
    assert order.filled_quantity == D("50") and len(order.fills) == 10
    assert order.fills[-1].price == D("50045")


def test_commission_rounds_half_up_to_eight_places() -> None:
    # 0.0005 * 3000.01 = 1.500005; at 10 bps: 0.001500005 -> 0.00150001
    order = place(spec(quantity="0.0005", symbol="ETHUSDT"), ref="3000.01")
    assert order.fills[0].commission == D("0.00150001") == fee("3000.01", "0.0005", 10)


# -- limit orders ----------------------------------------------------------------------------


def test_gtc_limit_takes_what_its_price_allows_and_rests_the_rest() -> None:
    order = place(spec(T.LIMIT, quantity="12", price="50005"))
    assert trades(order) == [(D("50000"), D("5")), (D("50005"), D("5"))]
    assert order.status is BrokerStatus.PARTIALLY_FILLED and order.is_open
    assert order.filled_quantity == D("10")
    assert order.fills[1].commission == fee("50005", "5", 10)


def test_limit_below_the_market_rests_untouched() -> None:
    order = place(spec(T.LIMIT, quantity="1", price="49990"))
    assert order.status is BrokerStatus.NEW and order.fills == []
    assert watch(order, BTC) == (Direction.DOWN, 4_999_000)


def test_ioc_expires_the_unfilled_remainder() -> None:
    order = place(spec(T.LIMIT, quantity="12", price="50005", tif=TimeInForce.IOC))
    assert order.status is BrokerStatus.EXPIRED and order.reason == IOC_EXPIRED
    assert order.filled_quantity == D("10")
    assert watch(order, BTC) is None


def test_ioc_fully_filled_is_filled() -> None:
    order = place(spec(T.LIMIT, quantity="3", price="50000", tif=TimeInForce.IOC))
    assert order.status is BrokerStatus.FILLED


def test_fok_expires_entirely_unless_all_fills_within_the_limit() -> None:
    short = place(spec(T.LIMIT, quantity="12", price="50005", tif=TimeInForce.FOK))
    assert short.status is BrokerStatus.EXPIRED and short.reason == FOK_EXPIRED
    assert short.fills == [] and short.filled_quantity == 0
    enough = place(spec(T.LIMIT, quantity="12", price="50010", tif=TimeInForce.FOK))
    assert enough.status is BrokerStatus.FILLED
    assert trades(enough)[-1] == (D("50010"), D("2"))


def test_sell_limit_never_fills_below_its_price() -> None:
    order = place(spec(T.LIMIT, side=Side.SELL, quantity="20", price="49995"))
    assert trades(order) == [(D("50000"), D("5")), (D("49995"), D("5"))]
    assert order.status is BrokerStatus.PARTIALLY_FILLED
    assert watch(order, BTC) == (Direction.UP, 4_999_500)


# -- resting orders --------------------------------------------------------------------------


def test_resting_limit_fills_at_its_price_by_depth_per_pass_with_maker_fees() -> None:
    order = place(spec(T.LIMIT, quantity="12", price="49990"))
    assert step(order, "49990.01") is None  # not crossed yet
    first = step(order, "49990")
    assert first is not None and first.status is BrokerStatus.PARTIALLY_FILLED
    assert trades(first) == [(D("49990"), D("5"))]
    assert first.fills[0].liquidity == "maker"
    assert first.fills[0].commission == fee("49990", "5", 8) == D("199.96")
    assert first.version == order.version + 1
    second = step(first, "49000")  # far through: still at the limit price
    assert second is not None and trades(second)[-1] == (D("49990"), D("5"))
    third = step(second, "49990")
    assert third is not None and third.status is BrokerStatus.FILLED
    assert trades(third)[-1] == (D("49990"), D("2"))
    assert [f.fill_id for f in third.fills] == ["B1-1", "B1-2", "B1-3"]
    assert watch(third, BTC) is None
    assert step(third, "49000") is None  # final orders never change
    assert order.fills == []  # advance returned new states, the old one is untouched
    assert_no_float(third)


def test_resting_sell_fills_when_the_price_rises_to_it() -> None:
    order = place(spec(T.LIMIT, side=Side.SELL, quantity="1", price="50100"))
    assert step(order, "50099.99") is None
    filled = step(order, "50100")
    assert filled is not None and filled.status is BrokerStatus.FILLED


def test_gtd_expires_at_expire_at() -> None:
    order = place(spec(T.LIMIT, quantity="1", price="49000", tif=TimeInForce.GTD,
                       expire_at=NOW + 1_000))
    assert order.status is BrokerStatus.NEW
    assert step(order, "50000", now=NOW + 999) is None
    expired = step(order, "50000", now=NOW + 1_000)
    assert expired is not None and expired.status is BrokerStatus.EXPIRED
    assert expired.reason == GTD_EXPIRED


def test_gtd_in_the_past_is_rejected() -> None:
    order = place(spec(T.LIMIT, quantity="1", price="49000", tif=TimeInForce.GTD,
                       expire_at=NOW))
    assert order.status is BrokerStatus.REJECTED and order.reason == GTD_IN_PAST


# -- stop and take-profit --------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "side", "stop", "direction"), [
    (T.STOP, Side.BUY, "50100", Direction.UP),
    (T.STOP, Side.SELL, "49900", Direction.DOWN),
    (T.TAKE_PROFIT, Side.BUY, "49900", Direction.DOWN),
    (T.TAKE_PROFIT, Side.SELL, "50100", Direction.UP),
])
def test_untriggered_orders_rest_watching_their_stop(type_: OrderType, side: Side, stop: str,
                                                     direction: Direction) -> None:
    order = place(spec(type_, side=side, quantity="1", stop_price=stop))
    assert order.status is BrokerStatus.NEW and not order.triggered and order.fills == []
    assert watch(order, BTC) == (direction, int(D(stop) * 100))


@pytest.mark.parametrize(("type_", "side", "stop"), [
    (T.STOP, Side.BUY, "49900"),
    (T.STOP, Side.BUY, "50000"),  # the trigger is inclusive
    (T.STOP, Side.SELL, "50100"),
    (T.STOP_LIMIT, Side.BUY, "50000"),
    (T.TAKE_PROFIT, Side.BUY, "50100"),
    (T.TAKE_PROFIT, Side.SELL, "49900"),
    (T.TAKE_PROFIT_LIMIT, Side.SELL, "50000"),
])
def test_a_trigger_met_at_submission_is_rejected(type_: OrderType, side: Side,
                                                 stop: str) -> None:
    price = "50000" if type_ in (T.STOP_LIMIT, T.TAKE_PROFIT_LIMIT) else None
    order = place(spec(type_, side=side, quantity="1", stop_price=stop, price=price))
    assert order.status is BrokerStatus.REJECTED and order.reason == WOULD_TRIGGER
    assert order.fills == []


def test_triggered_stop_executes_as_market_at_the_new_price() -> None:
    order = place(spec(T.STOP, quantity="7", stop_price="50100"))
    assert step(order, "50099.99") is None
    fired = step(order, "50100")
    assert fired is not None and fired.triggered
    # book at 50100: asks 50100, 50100 * 1.0001 = 50105.01
    assert trades(fired) == [(D("50100"), D("5")), (D("50105.01"), D("2"))]
    assert fired.status is BrokerStatus.FILLED
    assert {f.liquidity for f in fired.fills} == {"taker"}


def test_triggered_sell_stop_walks_the_bids() -> None:
    order = place(spec(T.STOP, side=Side.SELL, quantity="1", stop_price="49900"))
    fired = step(order, "49850")
    assert fired is not None and trades(fired) == [(D("49850"), D("1"))]


def test_take_profit_triggers_the_other_way() -> None:
    order = place(spec(T.TAKE_PROFIT, side=Side.SELL, quantity="1", stop_price="50100"))
    assert step(order, "50000") is None
    fired = step(order, "50100")
    assert fired is not None and fired.status is BrokerStatus.FILLED


def test_triggered_stop_limit_becomes_a_limit_that_rests() -> None:
    order = place(spec(T.STOP_LIMIT, quantity="12", stop_price="50100", price="50105"))
    fired = step(order, "50100")
    assert fired is not None and fired.triggered
    # asks at 50100: 50100 (within 50105), 50105.01 (beyond): 5 taken, 7 rest at 50105
    assert trades(fired) == [(D("50100"), D("5"))]
    assert fired.status is BrokerStatus.PARTIALLY_FILLED
    assert watch(fired, BTC) == (Direction.DOWN, 5_010_500)
    assert step(fired, "50105.01") is None
    rest = step(fired, "50105")
    assert rest is not None and trades(rest)[-1] == (D("50105"), D("5"))
    assert rest.fills[-1].liquidity == "maker"


def test_triggered_take_profit_limit_fok_expires_when_short() -> None:
    order = place(spec(T.TAKE_PROFIT_LIMIT, side=Side.BUY, quantity="20", stop_price="49900",
                       price="49900", tif=TimeInForce.FOK))
    fired = step(order, "49900")
    assert fired is not None and fired.status is BrokerStatus.EXPIRED
    assert fired.reason == FOK_EXPIRED and fired.fills == []


# -- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("order", "field", "words"), [
    (spec(symbol="DOGEUSDT"), "symbol", ["DOGEUSDT", "BTCUSDT", "ETHUSDT", "EUR_USD"]),
    (spec(quantity="0.000001"), "quantity", ["0.00001", "1000"]),
    (spec(quantity="1000.00001"), "quantity", ["0.00001", "1000"]),
    (spec(quantity="0.000015"), "quantity", ["steps of 0.00001"]),
    (spec(T.LIMIT, quantity="1", price="50000.005"), "price", ["0.01"]),
    (spec(T.STOP, quantity="1", stop_price="50100.001"), "stop_price", ["0.01"]),
    (spec(T.LIMIT, quantity="1"), "price", ["required"]),
    (spec(T.STOP_LIMIT, quantity="1", price="50000"), "stop_price", ["required"]),
    (spec(T.LIMIT, quantity="1", price="1", tif=TimeInForce.GTD), "expire_at", ["required"]),
    (spec(T.LIMIT, quantity="1", price="1" + "0" * 19 + ".00000001"), "price", ["0.01"]),
])
def test_check_names_the_refused_field(order: OrderSpec, field: str, words: list[str]) -> None:
    with pytest.raises(ContractError) as err:
        check(order, CONFIG)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_check_accepts_orders_on_the_filters() -> None:
    assert check(spec(quantity="0.00001"), CONFIG) is BTC
    check(spec(quantity="1000"), CONFIG)
    check(spec(T.LIMIT, quantity="3", price="1.08501", symbol="EUR_USD"), CONFIG)


# -- records ---------------------------------------------------------------------------------


def test_record_round_trips_and_starts_with_its_version() -> None:
    order = place(spec(T.LIMIT, quantity="12", price="50005"))
    data = encode_order(order)
    assert data.startswith(b'{"version":1,')  # update.lua reads the version there
    assert decode_order(data) == order
    rep = report(order)
    assert rep.filled_quantity == D("10") and rep.quantity == D("12")
    assert rep.broker_order_id == "B1" and rep.status is BrokerStatus.PARTIALLY_FILLED
    assert_no_float(rep)


def test_same_inputs_same_outcome() -> None:
    a = place(spec(quantity="12"), ref="50000.01")
    b = place(spec(quantity="12"), ref="50000.01")
    assert encode_order(a) == encode_order(b)


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    steps=st.integers(min_value=1, max_value=6_000_000),
    ref_ticks=st.integers(min_value=1, max_value=20_000_000),
    limit_offset=st.integers(min_value=-5_000, max_value=5_000),
    side=st.sampled_from(list(Side)),
    type_=st.sampled_from([T.MARKET, T.LIMIT]),
    tif=st.sampled_from([TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
)
def test_fills_add_up_and_respect_the_limit(steps: int, ref_ticks: int, limit_offset: int,
                                            side: Side, type_: OrderType,
                                            tif: TimeInForce) -> None:
    quantity = D(steps) * BTC.step_size
    ref = D(ref_ticks) * BTC.tick_size
    price = None if type_ is T.MARKET else str(max(1, ref_ticks + limit_offset) * BTC.tick_size)
    order = place(spec(type_, side=side, quantity=str(quantity), price=price, tif=tif),
                  ref=str(ref))
    total = sum((f.quantity for f in order.fills), D(0))
    assert total == order.filled_quantity <= quantity
    for n, fill in enumerate(order.fills, 1):
        assert fill.fill_id == f"B1-{n}"
        assert fill.quantity <= BTC.depth_quantity
        assert fill.price % BTC.tick_size == 0
        assert fill.commission == fee(str(fill.price), str(fill.quantity), 10)
        if price is not None:
            assert fill.price <= D(price) if side is Side.BUY else fill.price >= D(price)
    if order.status is BrokerStatus.FILLED:
        assert total == quantity
    if tif is TimeInForce.FOK and type_ is T.LIMIT:
        assert order.status in (BrokerStatus.FILLED, BrokerStatus.EXPIRED)
    assert_no_float(order)


def test_fill_is_the_contract_fill() -> None:
    order = place(spec())
    assert all(type(f) is Fill for f in order.fills)


@pytest.mark.parametrize("tif", [TimeInForce.DAY, TimeInForce.OPG, TimeInForce.CLS])
def test_a_time_in_force_the_paper_exchange_has_not_is_refused_naming_it(
        tif: TimeInForce) -> None:
    """The paper exchange has no trading day and no auctions."""
    with pytest.raises(ContractError) as caught:
        check(spec(T.LIMIT, price="50000", tif=tif), CONFIG)
    assert caught.value.field == "time_in_force" and str(tif) in str(caught.value)
