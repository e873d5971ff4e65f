"""Properties of the order state machine under random sequences of transitions, fills and
broker reports, legal and illegal, driven through the real functions of executor.model.order.

Expected values are worked out here independently: averages with exact fractions, the set
of applied fills from the fill ids, legality from the table alone.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.model.order import Context, Order, add_fill, apply_report, new_order, transition
from executor.model.states import TRANSITIONS, IllegalTransition, can_transition, is_terminal
from producer.contract import (
    Event,
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
PROPERTY = settings(max_examples=150, deadline=None)

# Quantities and prices as the wire allows them (up to 20 digits either side of the point),
# mostly small and round so that fills add up to the order quantity now and then.
_small = st.integers(1, 5000).map(lambda n: Decimal(n).scaleb(-3))  # 0.001 to 5
_wide = st.integers(1, 10**40 - 1).map(lambda n: Decimal(n).scaleb(-20))
amounts = st.one_of(_small, _small, _small, _wide).map(WireDecimal)
fees = st.integers(0, 10**8).map(lambda n: WireDecimal(Decimal(n).scaleb(-8)))


def spec(quantity: Decimal) -> OrderSpec:
    return OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal(quantity), price=WireDecimal("100"))


def fill(fill_id: str, quantity: Decimal, price: Decimal, fee: Decimal = Decimal(0)) -> Fill:
    return Fill(fill_id=fill_id, quantity=WireDecimal(quantity), price=WireDecimal(price),
                commission=WireDecimal(fee), commission_asset="USDT")


@st.composite
def fills(draw: st.DrawFn, prefix: str) -> Fill:
    return fill(f"{prefix}{draw(st.integers(0, 10**6))}", draw(amounts), draw(amounts),
                draw(fees))


# One step: a direct transition, a direct fill, or a broker report whose fills come from a
# small pool (so the same fill is reported again, also twice within one report).
Step = tuple[str, object]
steps = st.one_of(
    st.tuples(st.just("transition"), st.sampled_from(OrderState)),
    st.tuples(st.just("fill"), fills("d")),
    st.tuples(st.just("report"), st.tuples(
        st.sampled_from(BrokerStatus),
        st.lists(st.integers(0, 5), max_size=4),
        st.sampled_from(["", "B-1"]),
    )),
)


def expected_average(applied: list[Fill]) -> Fraction:
    """The quantity-weighted mean, rounded half-even to 12 places as ``_normalize`` says."""
    notional = sum((Fraction(f.price) * Fraction(f.quantity) for f in applied), Fraction(0))
    mean = notional / sum((Fraction(f.quantity) for f in applied), Fraction(0))
    return Fraction(round(mean * 10**12), 10**12)


def check_events(log: list[Event], order: Order) -> None:
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert order.seq == len(log)
    assert log[0].prev_state is None and log[0].state is S.CREATED
    for before, event in itertools.pairwise(log):
        assert event.prev_state is before.state
        assert event.state in TRANSITIONS[before.state]
    assert log[-1].state is order.state


class Run:
    """The order under test and what the test itself knows it should be."""

    def __init__(self, quantity: Decimal, pool: list[Fill]) -> None:
        self.order, self.log = new_order("c1", "1-0", spec(quantity), CTX)
        self.pool = pool
        self.applied: list[Fill] = []  # every fill the order took, in order
        self.now = CTX.now

    def ctx(self) -> Context:
        self.now += 1
        return Context(now=self.now, worker="w1", request_id="2-0")

    def step(self, kind: str, arg: object) -> None:
        order = self.order
        before, state, filled = encode(order), order.state, order.filled_quantity
        try:
            new = self._do(kind, arg)
        except (IllegalTransition, ValueError):
            # Refused: the order is exactly as it was, and nothing was logged.
            assert encode(order) == before
            return
        if is_terminal(state):
            assert encode(order) == before, "a terminal order changed"
        self.log += new
        for event in new:
            if event.fill is not None:
                # Fractions: Decimal's sum would round to 28 digits, and the wire allows 40.
                assert Fraction(event.filled_quantity or 0) == sum(
                    (Fraction(f.quantity)
                     for f in order.fills[: order.fills.index(event.fill) + 1]),
                    Fraction(0))
        assert order.filled_quantity >= filled
        assert order.filled_quantity <= order.spec.quantity
        assert order.fills == self.applied
        assert Fraction(order.filled_quantity) == sum(
            (Fraction(f.quantity) for f in self.applied), Fraction(0))
        if self.applied:
            assert order.average_price is not None
            assert Fraction(order.average_price) == expected_average(self.applied)
        check_events(self.log, order)

    def _do(self, kind: str, arg: object) -> list[Event]:
        order = self.order
        if kind == "transition":
            assert isinstance(arg, OrderState)
            legal = can_transition(order.state, arg)
            try:
                event = transition(order, arg, self.ctx())
            except IllegalTransition:
                assert not legal
                raise
            assert legal and order.state is arg
            return [event]
        if kind == "fill":
            assert isinstance(arg, Fill)
            add_fill(order, arg)
            self.applied.append(arg)
            return []
        assert isinstance(arg, tuple)
        status, picks, broker_id = arg
        report = BrokerOrder(client_order_id="c1", broker_order_id=broker_id, symbol="BTCUSDT",
                             status=status, quantity=order.spec.quantity,
                             fills=[self.pool[i % len(self.pool)] for i in picks])
        events = apply_report(order, report, self.ctx())
        # Each fill the order did not know is taken once, in the order reported.
        known = {f.fill_id for f in self.applied}
        for f in report.fills:
            if f.fill_id not in known:
                known.add(f.fill_id)
                self.applied.append(f)
        return events


@PROPERTY
@given(quantity=amounts,
       pool=st.lists(fills("p"), min_size=1, max_size=6, unique_by=lambda f: f.fill_id),
       sequence=st.lists(steps, max_size=12))
def test_random_sequences_keep_every_invariant(quantity: Decimal, pool: list[Fill],
                                               sequence: list[Step]) -> None:
    run = Run(quantity, pool)
    check_events(run.log, run.order)
    for kind, arg in sequence:
        run.step(kind, arg)


@pytest.mark.parametrize("current", list(OrderState))
@pytest.mark.parametrize("target", list(OrderState))
def test_every_pair_of_states_is_applied_or_refused_as_the_table_says(
        current: OrderState, target: OrderState) -> None:
    order, _ = new_order("c1", "1-0", spec(Decimal(1)), CTX)
    order.state, order.seq = current, 7
    before = encode(order)
    if target in TRANSITIONS[current]:
        event = transition(order, target, CTX)
        assert (event.prev_state, event.state, event.seq) == (current, target, 8)
        assert order.state is target
    else:
        with pytest.raises(IllegalTransition) as refused:
            transition(order, target, CTX)
        assert (refused.value.current, refused.value.target) == (current, target)
        assert encode(order) == before


def test_each_partial_fill_is_its_own_partially_filled_event() -> None:
    order, _ = new_order("c1", "1-0", spec(Decimal(3)), CTX)
    report = BrokerOrder(client_order_id="c1", broker_order_id="B-1", symbol="BTCUSDT",
                         status=BrokerStatus.PARTIALLY_FILLED, quantity=WireDecimal(3),
                         fills=[fill("f1", Decimal(1), Decimal(10))])
    apply_report(order, report, CTX)
    report.fills = [*report.fills, fill("f2", Decimal(1), Decimal(11))]
    (event,) = apply_report(order, report, CTX)
    assert (event.prev_state, event.state) == (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED)
    assert event.filled_quantity == Decimal(2) and event.average_price == Decimal("10.5")
