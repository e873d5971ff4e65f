"""Every pre-trade check at its boundary: exactly at the limit passes, one step past it is
denied with its own reason code and the numbers; a check it cannot evaluate denies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.model.positions import Position
from executor.safety.risk import rules
from executor.safety.risk.book import (
    Book,
    Candidate,
    Reservation,
    available_balance,
    day_id,
    equity,
    net_exposure,
    position_exposure,
    reduces_position,
    total_exposure,
)
from executor.safety.risk.limits import Limits
from executor.safety.trading import TradingState
from producer.contract import OrderSpec, OrderType, Side, WireDecimal

D = Decimal


def order(side: str = "buy", qty: str = "1", price: str | None = "100", *,
          symbol: str = "BTCUSDT", ref: str | None = "100", kind: str | None = None,
          stop: str | None = None, reduce_only: bool = False) -> Candidate:
    type_ = kind or ("limit" if price is not None else "market")
    spec = OrderSpec(account="a", symbol=symbol, side=Side(side), type=OrderType(type_),
                     quantity=WireDecimal(qty),
                     price=None if price is None else WireDecimal(price),
                     stop_price=None if stop is None else WireDecimal(stop),
                     reduce_only=reduce_only)
    return Candidate("c1", "1-0", spec, None if ref is None else D(ref))


def book(*, position: str = "0", cost: str | None = None, symbol: str = "BTCUSDT",
         price: str | None = "100", **kw: object) -> Book:
    b = Book(account="a", prices={symbol: None if price is None else D(price)})
    if position != "0":
        qty = D(position)
        b.hold(Position(account="a", symbol=symbol, quantity=WireDecimal(qty),
                        cost_basis=WireDecimal(cost if cost is not None else qty * 100)))
    for name, value in kw.items():
        setattr(b, name, value)
    return b


def reserve(b: Book, side: str, qty: str, price: str = "100", symbol: str = "BTCUSDT") -> None:
    b.reserve(Reservation(request_id="0-1", symbol=symbol, side=Side(side),
                          quantity=WireDecimal(qty), price=WireDecimal(price)))


def code(denial: rules.Denial | None) -> str | None:
    return None if denial is None else denial.code


# -- reduces_position ------------------------------------------------------------------------

@pytest.mark.parametrize(("position", "side", "qty", "expected"), [
    ("1", "sell", "1", True), ("1", "sell", "1.00000001", False), ("1", "buy", "0.1", False),
    ("-2", "buy", "2", True), ("-2", "buy", "2.1", False), ("-2", "sell", "1", False),
    ("0", "sell", "1", False), ("0", "buy", "1", False),
])
def test_reduces_position(position: str, side: str, qty: str, expected: bool) -> None:
    assert reduces_position(D(position), Side(side), D(qty)) is expected


# -- order-only checks -----------------------------------------------------------------------

def test_quantity_min_and_max_at_the_boundary() -> None:
    lim = Limits(min_quantity=D("0.1"), max_quantity=D("2"))
    assert rules.quantity(order(qty="0.1"), book(), lim) is None
    assert rules.quantity(order(qty="2"), book(), lim) is None
    low = rules.quantity(order(qty="0.09999"), book(), lim)
    assert low == rules.Denial("risk_denied:quantity",
                               "quantity 0.09999 is below min_quantity 0.1 (BTCUSDT)")
    high = rules.quantity(order(qty="2.00001"), book(), lim)
    assert high is not None and "2.00001 is above max_quantity 2" in high.message


def test_notional_min_and_max_use_the_limit_price_else_the_reference() -> None:
    lim = Limits(min_notional=D("10"), max_notional=D("1000"))
    assert rules.notional(order(qty="10", price="100"), book(), lim) is None  # exactly 1000
    over = rules.notional(order(qty="10.01", price="100"), book(), lim)
    assert code(over) == "risk_denied:notional"
    assert over is not None and "notional 1001 (10.01 x 100) is above max_notional 1000" \
        in over.message
    assert rules.notional(order(qty="0.1", price=None, ref="100"), book(), lim) is None
    under = rules.notional(order(qty="0.0999", price=None, ref="100"), book(), lim)
    assert under is not None and "below min_notional 10" in under.message
    # A stop order is valued at its stop price, not at the market.
    stop = order(qty="10", price=None, kind="stop", stop="101", ref="50")
    assert code(rules.notional(stop, book(), lim)) == "risk_denied:notional"


def test_a_market_order_without_a_reference_price_cannot_be_valued() -> None:
    denial = rules.evaluate(order(price=None, ref=None), book(), Limits())
    assert code(denial) == "risk_denied:reference_price"
    assert rules.evaluate(order(price="100", ref=None), book(), Limits()) is None


def test_symbol_allow_and_deny_lists() -> None:
    assert rules.symbol(order(), book(), Limits(allow_symbols=["BTCUSDT"])) is None
    denied = rules.symbol(order(symbol="ETHUSDT"), book(), Limits(allow_symbols=["BTCUSDT"]))
    assert denied is not None and denied.code == "risk_denied:symbol"
    assert "ETHUSDT is not on the allow list" in denied.message
    assert code(rules.symbol(order(), book(), Limits(deny_symbols=["BTCUSDT"]))) == \
        "risk_denied:symbol"
    assert rules.symbol(order(), book(), Limits(deny_symbols=["ETHUSDT"])) is None


def test_price_band_exactly_at_n_percent_passes() -> None:
    lim = Limits(price_band_pct=D("5"))
    assert rules.price_band(order(price="105", ref="100"), book(), lim) is None
    assert rules.price_band(order(price="95", ref="100"), book(), lim) is None
    over = rules.price_band(order(price="105.01", ref="100"), book(), lim)
    assert over is not None and over.code == "risk_denied:price_band"
    assert "price 105.01 is 5.01% from the reference price 100" in over.message
    assert code(rules.price_band(order(price="94.99", ref="100"), book(), lim)) == \
        "risk_denied:price_band"
    # No reference price: the band cannot be checked, so the order is denied.
    blind = rules.price_band(order(price="100", ref=None), book(), lim)
    assert blind is not None and "no reference price for BTCUSDT" in blind.message


# -- position-aware checks -------------------------------------------------------------------

def test_reduce_only_counts_the_open_orders_on_its_side() -> None:
    held = book(position="2")
    assert rules.reduce_only(order("sell", "2", reduce_only=True), held, Limits()) is None
    flip = rules.reduce_only(order("sell", "2.001", reduce_only=True), held, Limits())
    assert flip is not None and flip.code == "risk_denied:reduce_only"
    assert "position 2" in flip.message
    assert code(rules.reduce_only(order("buy", "1", reduce_only=True), held, Limits())) == \
        "risk_denied:reduce_only"
    reserve(held, "sell", "1.5")  # another reducing order already takes 1.5 of the 2
    assert rules.reduce_only(order("sell", "0.5", reduce_only=True), held, Limits()) is None
    assert code(rules.reduce_only(order("sell", "0.6", reduce_only=True), held,
                                  Limits())) == "risk_denied:reduce_only"
    assert rules.reduce_only(order("buy", "5"), book(), Limits()) is None  # not reduce-only


def test_trading_state_halted_denies_everything_reducing_only_increases() -> None:
    halted = book(position="1", state=TradingState.HALTED)
    denial = rules.trading_state(order("sell", "1"), halted, Limits())
    assert denial == rules.Denial("halted", "account a is halted: no new orders")
    reducing = book(position="1", state=TradingState.REDUCING)
    assert rules.trading_state(order("sell", "1"), reducing, Limits()) is None
    more = rules.trading_state(order("sell", "1.1"), reducing, Limits())
    assert more is not None and more.code == "halted" and "is reducing" in more.message
    assert code(rules.trading_state(order("buy", "0.1"), reducing, Limits())) == "halted"
    assert rules.trading_state(order("buy", "9"), book(), Limits()) is None


def test_daily_loss_at_the_limit_passes_and_reducing_orders_always_do() -> None:
    lim = Limits(max_daily_loss=D("500"))
    assert rules.daily_loss(order(), book(day_pnl=D("-500")), lim) is None
    over = rules.daily_loss(order(), book(day_pnl=D("-500.01")), lim)
    assert over is not None and over.code == "risk_denied:daily_loss"
    assert "realized loss today 500.01 is over max_daily_loss 500" in over.message
    assert rules.daily_loss(order("sell", "1"), book(position="1", day_pnl=D("-900")),
                            lim) is None


def test_daily_orders_and_open_orders_count_one_more() -> None:
    lim = Limits(max_daily_orders=3, max_open_orders=2)
    assert rules.daily_orders(order(), book(day_orders=2), lim) is None
    over = rules.daily_orders(order(), book(day_orders=3), lim)
    assert over is not None and "order 4 today would exceed max_daily_orders 3" in over.message
    b = book()
    reserve(b, "buy", "1")
    assert rules.open_orders(order(), b, lim) is None
    reserve(b, "sell", "1")
    over = rules.open_orders(order(), b, lim)
    assert over is not None and over.code == "risk_denied:open_orders"
    assert "2 orders are open" in over.message


def test_open_positions_counts_symbols_held_or_being_opened() -> None:
    lim = Limits(max_open_positions=2)
    b = book(position="1")
    reserve(b, "buy", "1", symbol="ETHUSDT")
    assert rules.open_positions(order(), b, lim) is None  # adds to a position already open
    over = rules.open_positions(order(symbol="XRPUSDT"), b, lim)
    assert over is not None and over.code == "risk_denied:open_positions"
    assert rules.open_positions(order(symbol="XRPUSDT"), book(position="1"), lim) is None


def test_available_balance_is_starting_balance_plus_fills_minus_open_buys() -> None:
    # Bought 2 at 100 (cost basis 200): 1000 - 200 = 800 cash, then 300 reserved by buys.
    b = book(position="2")
    reserve(b, "buy", "3")
    assert available_balance(b, D("1000")) == D("500")
    lim = Limits(balance=D("1000"))
    assert rules.balance(order("buy", "5"), b, lim) is None  # 500, exactly all of it
    over = rules.balance(order("buy", "5.01"), b, lim)
    assert over is not None and over.code == "risk_denied:balance"
    assert "notional 501 is above the available balance 500" in over.message
    assert "reserved by open buys 300" in over.message
    assert rules.balance(order("sell", "50"), b, lim) is None  # sells spend no quote asset


def test_equity_marks_positions_to_the_reference_price() -> None:
    b = book(position="2", cost="180", price="100")  # bought 2 at 90, now 100: +20
    b.pnl = D("-5")  # realized minus commission so far
    assert equity(b, D("1000")) == D("1015")


def test_position_exposure_percent_of_equity() -> None:
    lim = Limits(max_position_pct=D("10"), equity=D("1000"))  # 100 per position
    assert rules.position_pct(order("buy", "1"), book(), lim) is None  # exactly 100
    over = rules.position_pct(order("buy", "1.01"), book(), lim)
    assert over is not None and over.code == "risk_denied:position_exposure"
    assert "exposure would be 101, over max_position_pct 10% of equity 1000" in over.message
    # Open orders count as if they filled: a reserved buy of 0.5 leaves room for 0.5.
    b = book()
    reserve(b, "buy", "0.5")
    assert rules.position_pct(order("buy", "0.5"), b, lim) is None
    assert code(rules.position_pct(order("buy", "0.51"), b, lim)) == \
        "risk_denied:position_exposure"
    # Over the limit already (the price rose): an order that reduces it still passes.
    big = book(position="3", cost="300")
    assert rules.position_pct(order("sell", "1"), big, lim) is None
    assert code(rules.position_pct(order("buy", "0.01"), big, lim)) == \
        "risk_denied:position_exposure"
    # Unknown equity or price: cannot be evaluated, denied.
    assert code(rules.position_pct(order(), book(), Limits(max_position_pct=D("10")))) == \
        "risk_denied:position_exposure"
    blind = rules.position_pct(order(), book(position="1", price=None), lim)
    assert blind is not None and "no reference price for BTCUSDT" in blind.message


def test_total_exposure_sums_both_sides_worst_case() -> None:
    b = book(position="1")  # 100
    reserve(b, "sell", "0.5", symbol="ETHUSDT")  # 50 short on another symbol
    assert total_exposure(b) == D("150")
    lim = Limits(max_total_exposure=D("200"))
    assert rules.total(order("buy", "0.5"), b, lim) is None  # exactly 200
    over = rules.total(order("buy", "0.51"), b, lim)
    assert over is not None and over.code == "risk_denied:total_exposure"
    assert "total exposure would be 201 (now 150), over max_total_exposure 200" in over.message
    # A sell against the long does not add to the symbol's exposure.
    assert rules.total(order("sell", "1"), b, Limits(max_total_exposure=D("150"))) is None
    assert position_exposure(b, "BTCUSDT") == D("100")


def test_directional_net_long_and_short() -> None:
    b = book(position="1")  # net long 100, net short -100
    assert net_exposure(b) == (D("100"), D("-100"))
    lim = Limits(max_net_long=D("150"), max_net_short=D("50"))
    assert rules.directional(order("buy", "0.5"), b, lim) is None  # 150
    over = rules.directional(order("buy", "0.51"), b, lim)
    assert over is not None and over.code == "risk_denied:directional"
    assert "net long exposure would be 151 (now 100), over max_net_long 150" in over.message
    # A sell of 1.5 against the long leaves a net short of 50 at most.
    assert rules.directional(order("sell", "1.5"), b, lim) is None
    assert code(rules.directional(order("sell", "1.51"), b, lim)) == "risk_denied:directional"
    # An open sell of another symbol counts on the short side.
    reserve(b, "sell", "1", symbol="ETHUSDT")
    assert net_exposure(b) == (D("100"), D("0"))
    assert code(rules.directional(order("sell", "0.51"), b, lim)) == "risk_denied:directional"


def test_checks_run_in_order_and_the_first_denial_decides() -> None:
    lim = Limits(max_quantity=D("1"), deny_symbols=["BTCUSDT"])
    assert code(rules.evaluate(order(qty="2"), book(), lim)) == "risk_denied:symbol"
    assert code(rules.evaluate(order(qty="2"), book(state=TradingState.HALTED), lim)) == \
        "halted"
    assert rules.evaluate(order(), book(), Limits()) is None


def test_day_id_starts_at_the_reset_time() -> None:
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    assert day_id(midnight, 0) == "20231115"
    assert day_id(midnight - 1, 0) == "20231114"
    reset = 8 * 3_600_000  # days start at 08:00 UTC
    assert day_id(midnight + reset, reset) == "20231115"
    assert day_id(midnight + reset - 1, reset) == "20231114"


def test_only_the_checks_a_limit_switches_on_run() -> None:
    assert rules.checks_for(Limits()) == (rules.trading_state, rules.reference_price,
                                          rules.reduce_only)
    assert rules.quantity in rules.checks_for(Limits(max_quantity=D("1")))
    assert rules.directional in rules.checks_for(Limits(max_net_short=D("1")))


def quote_order(amount: str, ref: str | None = "50000", side: str = "buy") -> Candidate:
    spec = OrderSpec(account="a", symbol="BTCUSDT", side=Side(side), type=OrderType.MARKET,
                     quantity=None, quote_quantity=WireDecimal(amount))
    return Candidate("c1", "1-0", spec, None if ref is None else D(ref))


def test_an_order_by_quote_amount_is_valued_at_that_amount() -> None:
    # Binance's market order by quote amount: its notional is the amount itself, and its
    # quantity is estimated at the reference price (the fills decide the real one).
    o = quote_order("1000")
    assert o.notional == D("1000") and o.quantity == D("0.02")
    assert code(rules.notional(o, book(price="50000"), Limits(max_notional=D("1000")))) is None
    denied = rules.notional(o, book(price="50000"), Limits(max_notional=D("999.99")))
    assert code(denied) == "risk_denied:notional"
    assert denied is not None and "quote amount 1000" in denied.message
    assert code(rules.quantity(o, book(price="50000"), Limits(max_quantity=D("0.019")))) == \
        "risk_denied:quantity"
    # Without a reference price it cannot be converted: denied, not passed.
    unpriced = quote_order("1000", ref=None)
    assert unpriced.quantity is None
    assert code(rules.reference_price(unpriced, book(price=None), Limits())) == \
        "risk_denied:reference_price"
    # Nor is it known to reduce a position: refused while the account is reducing.
    b = book(position="1", price="50000", state=TradingState.REDUCING)
    assert code(rules.trading_state(quote_order("1000", side="sell"), b, Limits())) is None
    assert code(rules.trading_state(quote_order("1000", ref=None, side="sell"), b,
                                    Limits())) == "halted"


QUOTES = {"BTCUSDT": "USDT", "ETHUSDT": "USDT", "ETHBTC": "BTC"}


def test_account_wide_limits_add_one_quote_asset_only() -> None:
    """10 BTC and 10 USDT are not 20 of anything: with an account-wide limit set, an order
    quoted in another asset than what the account holds or has open is denied."""
    limits = Limits(max_total_exposure=D("1000000"))
    b = book(position="2", quotes=QUOTES)
    # Same quote asset as the position: passes; another: denied, naming both.
    assert rules.evaluate(order(symbol="ETHUSDT"), b, limits) is None
    denial = rules.evaluate(order(symbol="ETHBTC", price="0.05", ref="0.05"), b, limits)
    assert code(denial) == "risk_denied:quote_asset"
    assert denial is not None
    assert "ETHBTC is quoted in BTC" in denial.message
    assert "BTCUSDT in USDT" in denial.message and "max_total_exposure" in denial.message
    # An open order counts like a position; the order's own symbol does not conflict.
    b2 = book(quotes=QUOTES)
    reserve(b2, "buy", "1", symbol="ETHBTC")
    assert code(rules.evaluate(order(), b2, limits)) == "risk_denied:quote_asset"
    assert rules.evaluate(order(symbol="ETHBTC", price="0.05", ref="0.05"), b2,
                          limits) is None


@pytest.mark.parametrize("name", rules.ACCOUNT_WIDE)
def test_each_account_wide_limit_switches_the_quote_asset_check_on(name: str) -> None:
    b = book(position="2", quotes=QUOTES)
    other = order(symbol="ETHBTC", price="0.05", ref="0.05")
    assert rules.quote_asset in rules.checks_for(Limits(**{name: D("1000000")}))
    # Per-order limits alone compare nothing across symbols: no such check.
    assert rules.quote_asset not in rules.checks_for(Limits(max_quantity=D("10")))
    assert code(rules.evaluate(other, b, Limits(max_quantity=D("10")))) is None


def test_an_order_that_reduces_a_position_in_another_asset_passes_so_the_account_unwinds(
) -> None:
    limits = Limits(max_total_exposure=D("1000000"))
    b = book(position="2", quotes=QUOTES)  # long 2 BTCUSDT (USDT)
    b.hold(Position(account="a", symbol="ETHBTC", quantity=WireDecimal("3"),
                    cost_basis=WireDecimal("0.15")))  # and long 3 ETHBTC (BTC)
    b.prices = {"BTCUSDT": D("100"), "ETHBTC": D("0.05")}
    assert rules.evaluate(order("sell", "3", "0.05", symbol="ETHBTC", ref="0.05"), b,
                          limits) is None
    assert code(rules.evaluate(order("buy", "1", "0.05", symbol="ETHBTC", ref="0.05"), b,
                               limits)) == "risk_denied:quote_asset"


def test_an_unknown_quote_asset_is_denied_where_account_wide_limits_apply() -> None:
    b = book(quotes=QUOTES)
    denial = rules.evaluate(order(symbol="XYZ"), b, Limits(max_daily_loss=D("5")))
    assert code(denial) == "risk_denied:quote_asset"
    assert denial is not None and "quote asset of XYZ is unknown" in denial.message
