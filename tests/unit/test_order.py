"""The order record: one transition table, fills and averages, broker reports applied
idempotently."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.model.order import Context, add_fill, apply_report, new_order, transition
from executor.model.states import TRANSITIONS, IllegalTransition, can_transition, is_terminal
from producer.contract import (
    TERMINAL_STATES,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    WireDecimal,
    encode,
)

S = OrderState
CTX = Context(now=1_000, worker="w1", request_id="1-0")


def spec(quantity: str = "1.0") -> OrderSpec:
    return OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal(quantity), price=WireDecimal("100"))


def fill(n: int, qty: str, price: str, fee: str = "0") -> Fill:
    return Fill(fill_id=f"f{n}", quantity=WireDecimal(qty), price=WireDecimal(price),
                commission=WireDecimal(fee), commission_asset="USDT")


def test_every_state_has_a_row_and_terminal_states_are_final() -> None:
    assert set(TRANSITIONS) == set(OrderState)
    for state in TERMINAL_STATES:
        assert is_terminal(state)
        assert not TRANSITIONS[state]
    assert can_transition(S.PARTIALLY_FILLED, S.PARTIALLY_FILLED)
    assert not can_transition(S.FILLED, S.CANCELLED)
    assert not can_transition(S.CREATED, S.FILLED)


def test_new_order_is_created_then_pending_submit_with_numbered_events() -> None:
    order, events = new_order("c1", "1-0", spec(), CTX)
    assert order.state is S.PENDING_SUBMIT and order.seq == 2
    assert [(e.prev_state, e.state, e.seq) for e in events] == [
        (None, S.CREATED, 1), (S.CREATED, S.PENDING_SUBMIT, 2)]
    assert events[0].order == spec()  # the created event carries the parameters


def test_illegal_transition_is_refused_and_changes_nothing() -> None:
    order, _ = new_order("c1", "1-0", spec(), CTX)
    with pytest.raises(IllegalTransition):
        transition(order, S.FILLED, CTX)
    assert order.state is S.PENDING_SUBMIT and order.seq == 2


def test_average_price_is_quantity_weighted_and_fees_add_up() -> None:
    order, _ = new_order("c1", "1-0", spec("3"), CTX)
    add_fill(order, fill(1, "1", "100", "0.1"))
    add_fill(order, fill(2, "2", "103", "0.2"))
    assert order.filled_quantity == Decimal("3")
    assert order.average_price == Decimal("102")
    assert order.commission == Decimal("0.3")
    with pytest.raises(ValueError, match="exceed"):
        add_fill(order, fill(3, "0.1", "1"))


def test_average_of_a_repeating_fraction_is_rounded_not_float() -> None:
    order, _ = new_order("c1", "1-0", spec("3"), CTX)
    add_fill(order, fill(1, "1", "1"))
    add_fill(order, fill(2, "2", "2"))
    assert order.average_price == Decimal("1.666666666667")


def test_market_fill_report_moves_through_submitted_to_filled() -> None:
    order, _ = new_order("c1", "1-0", spec("1.5"), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                         status=BrokerStatus.FILLED, quantity=WireDecimal("1.5"),
                         filled_quantity=WireDecimal("1.5"),
                         fills=[fill(1, "1", "100"), fill(2, "0.5", "101")])
    events = apply_report(order, report, CTX)
    assert [e.state for e in events] == [S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED]
    assert order.broker_order_id == "P-1"
    assert [e.seq for e in events] == [3, 4, 5]
    assert events[-1].filled_quantity == Decimal("1.5")
    # Applying the same report again changes nothing: fills are known by id.
    assert apply_report(order, report, CTX) == []


def test_resting_report_is_accepted_and_rejection_carries_the_reason() -> None:
    order, _ = new_order("c1", "1-0", spec(), CTX)
    rest = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                       status=BrokerStatus.NEW, quantity=WireDecimal("1"))
    assert [e.state for e in apply_report(order, rest, CTX)] == [S.SUBMITTED, S.ACCEPTED]
    other, _ = new_order("c2", "2-0", spec(), CTX)
    rejected = BrokerOrder(client_order_id="c2", broker_order_id="", symbol="BTCUSDT",
                           status=BrokerStatus.REJECTED, quantity=WireDecimal("1"),
                           reason="insufficient balance")
    (event,) = apply_report(other, rejected, CTX)
    assert event.state is S.REJECTED and other.reason == "insufficient balance"
    assert other.reason_code == "broker_rejected"


def test_ioc_partial_fill_then_expired() -> None:
    order, _ = new_order("c1", "1-0", spec("2"), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                         status=BrokerStatus.EXPIRED, quantity=WireDecimal("2"),
                         filled_quantity=WireDecimal("1"), fills=[fill(1, "1", "100")])
    events = apply_report(order, report, CTX)
    assert [e.state for e in events] == [S.SUBMITTED, S.PARTIALLY_FILLED, S.EXPIRED]
    assert order.filled_quantity == Decimal("1")


# Regressions found by tests/unit/test_state_machine_properties.py.

def test_average_is_the_mean_of_the_fills_not_built_on_the_rounded_average() -> None:
    # Built on the stored 1.666666666667 the third fill made it 2.333333333334.
    order, _ = new_order("c1", "1-0", spec("6"), CTX)
    for n, (qty, price) in enumerate([("1", "1"), ("2", "2"), ("3", "3")]):
        add_fill(order, fill(n, qty, price))
    assert order.average_price == Decimal("2.333333333333")  # 14/6, rounded once


def test_wire_sized_quantities_add_up_exactly() -> None:
    # The default 28-digit context rounded the sum up, past the order quantity.
    order, _ = new_order("c1", "1-0", spec("99999999999999999999.99999999999999999999"), CTX)
    add_fill(order, fill(1, "99999999999999999999", "2"))
    add_fill(order, fill(2, "0.99999999999999999999", "2"))
    assert order.filled_quantity == order.spec.quantity and order.average_price == 2


def test_a_fill_listed_twice_in_one_report_is_taken_once() -> None:
    order, _ = new_order("c1", "1-0", spec("2"), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                         status=BrokerStatus.PARTIALLY_FILLED, quantity=WireDecimal("2"),
                         fills=[fill(1, "1", "100"), fill(1, "1", "100")])
    assert [e.state for e in apply_report(order, report, CTX)] == [
        S.SUBMITTED, S.PARTIALLY_FILLED]
    assert order.filled_quantity == Decimal("1") and len(order.fills) == 1


def test_a_report_the_table_refuses_changes_nothing() -> None:
    # Filled by its fills, cancelled by its status: filled -> cancelled is not in the table.
    order, _ = new_order("c1", "1-0", spec("1"), CTX)
    before = encode(order)
    report = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                         status=BrokerStatus.CANCELLED, quantity=WireDecimal("1"),
                         fills=[fill(1, "1", "100")])
    with pytest.raises(IllegalTransition):
        apply_report(order, report, CTX)
    assert encode(order) == before


def test_a_rejection_with_fills_is_refused_not_stripped_of_its_fills() -> None:
    order, _ = new_order("c1", "1-0", spec("2"), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="P-1", symbol="BTCUSDT",
                         status=BrokerStatus.REJECTED, quantity=WireDecimal("2"),
                         fills=[fill(1, "1", "100")])
    with pytest.raises(IllegalTransition):
        apply_report(order, report, CTX)
    assert order.state is S.PENDING_SUBMIT and not order.fills


def test_a_terminal_order_takes_no_fill_and_no_late_broker_id() -> None:
    order, _ = new_order("c1", "1-0", spec("2"), CTX)
    transition(order, S.EXPIRED, CTX)
    before = encode(order)
    with pytest.raises(IllegalTransition):
        add_fill(order, fill(1, "1", "100"))
    late = BrokerOrder(client_order_id="c1", broker_order_id="P-9", symbol="BTCUSDT",
                       status=BrokerStatus.EXPIRED, quantity=WireDecimal("2"))
    assert apply_report(order, late, CTX) == []
    assert encode(order) == before


def test_a_fill_of_no_quantity_is_refused() -> None:
    order, _ = new_order("c1", "1-0", spec("2"), CTX)
    with pytest.raises(ValueError, match="not positive"):
        add_fill(order, fill(1, "0", "100"))
    assert order.filled_quantity == 0 and order.average_price is None


def charged(n: int, qty: str, fee: str, asset: str | None) -> Fill:
    return Fill(fill_id=f"f{n}", quantity=WireDecimal(qty), price=WireDecimal("100"),
                commission=WireDecimal(fee), commission_asset=asset)


def test_commissions_are_kept_per_asset_and_totalled_only_in_one_asset() -> None:
    order, _ = new_order("c1", "1-0", spec("3"), CTX)
    events = apply_report(order, BrokerOrder(
        client_order_id="c1", broker_order_id="B1", symbol="BTCUSDT",
        status=BrokerStatus.PARTIALLY_FILLED, quantity=WireDecimal("3"),
        fills=[charged(1, "1", "0.001", "BTC"), charged(2, "1", "0.0005", "BTC")]), CTX)
    # One asset: the total and its asset, as before.
    assert (order.commission, order.commission_asset) == (Decimal("0.0015"), "BTC")
    assert order.commissions == {"BTC": Decimal("0.0015")}
    assert events[-1].commissions == {"BTC": Decimal("0.0015")}
    events = apply_report(order, BrokerOrder(
        client_order_id="c1", broker_order_id="B1", symbol="BTCUSDT", status=BrokerStatus.FILLED,
        quantity=WireDecimal("3"), fills=[charged(3, "1", "0.02", "BNB")]), CTX)
    # Two assets: never added up (0.0015 BTC + 0.02 BNB is no amount of anything).
    assert order.commission is None and order.commission_asset is None
    assert order.commissions == {"BTC": Decimal("0.0015"), "BNB": Decimal("0.02")}
    assert events[-1].commission is None
    assert events[-1].commissions == order.commissions
    assert order.filled_quantity == Decimal("3")  # what the exchange filled, fees aside


def test_a_refused_report_leaves_the_commissions_as_they_were() -> None:
    order, _ = new_order("c1", "1-0", spec("1"), CTX)
    add_fill(order, charged(1, "0.5", "0.001", "BTC"))
    with pytest.raises(ValueError):
        apply_report(order, BrokerOrder(
            client_order_id="c1", broker_order_id="B1", symbol="BTCUSDT",
            status=BrokerStatus.FILLED, quantity=WireDecimal("1"),
            fills=[charged(2, "0.4", "0.3", "BNB"), charged(3, "0.4", "0.1", "BNB")]), CTX)
    assert order.commissions == {"BTC": Decimal("0.001")}
    assert (order.commission, order.commission_asset) == (Decimal("0.001"), "BTC")


def test_a_record_written_before_per_asset_totals_gets_them_from_its_fills() -> None:
    from executor.infra.store import decode_order

    order, _ = new_order("c1", "1-0", spec("3"), CTX)
    order.fills = [charged(1, "1", "0.001", "BTC"), charged(2, "1", "0.02", "BNB"),
                   charged(3, "1", "0.5", None)]
    order.commission = WireDecimal("0.521")  # what the old code summed, across assets
    old = encode(order).replace(b',"commissions":{}', b"")
    assert b"commissions" not in old
    read = decode_order(old)
    assert read.commissions == {"BTC": Decimal("0.001"), "BNB": Decimal("0.02")}
    assert read.commission is None and read.commission_asset is None
