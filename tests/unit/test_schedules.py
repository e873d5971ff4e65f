"""The TWAP / VWAP schedule (executor/model/schedules.py): slices add up to exactly the
quantity on the broker's step and minimum, and what is due never sends more than is left,
whatever the children fill or however late the owner looks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.model.schedules import (
    RETRY_MS,
    Child,
    Due,
    Slice,
    due,
    participation_room,
    plan,
    round_down,
    twap_weights,
    u_shape,
)

D = Decimal
steps = st.sampled_from([D("1"), D("0.1"), D("0.001"), D("0.00001")])


@st.composite
def orders(draw: st.DrawFn) -> tuple[Decimal, Decimal, Decimal | None, list[Decimal]]:
    step = draw(steps)
    quantity = step * draw(st.integers(1, 10**6))
    minimum = draw(st.none() | st.integers(1, 50).map(lambda k: step * k))
    n = draw(st.integers(1, 60))
    weights = draw(st.one_of(
        st.just(twap_weights(n)), st.just(u_shape(n)),
        st.lists(st.integers(1, 1000).map(D), min_size=n, max_size=n)))
    return quantity, step, minimum, weights


@given(orders())
def test_slices_add_up_to_exactly_the_quantity_on_the_step_and_minimum(
        order: tuple[Decimal, Decimal, Decimal | None, list[Decimal]]) -> None:
    quantity, step, minimum, weights = order
    slices = plan(quantity, 1_000, 60_000, weights, step=step, minimum=minimum)
    assert sum(s.quantity for s in slices) == quantity
    assert slices[-1].target == quantity
    assert all(s.quantity > 0 and s.quantity % step == 0 for s in slices)
    if minimum is not None and len(slices) > 1:
        assert all(s.quantity >= minimum for s in slices)
    assert [s.at for s in slices] == sorted(s.at for s in slices)
    assert all((s.at - 1_000) % 60_000 == 0 for s in slices)
    assert slices[0].at >= 1_000 and slices[-1].at <= 1_000 + (len(weights) - 1) * 60_000
    # Each target is the weights' share so far, rounded down to the step (the last: all).
    total = sum(weights)
    for s in slices[:-1]:
        i = (s.at - 1_000) // 60_000
        share = quantity * sum(weights[:i + 1]) / total
        assert s.target == round_down(share, step) or s.target == quantity


def test_twap_slices_are_equal_and_the_first_goes_at_once() -> None:
    slices = plan(D("1.0"), 0, 60_000, twap_weights(4), step=D("0.01"))
    assert [(s.at, s.quantity) for s in slices] == [
        (0, D("0.25")), (60_000, D("0.25")), (120_000, D("0.25")), (180_000, D("0.25"))]


def test_rounding_never_piles_up_and_the_last_slice_takes_the_rest() -> None:
    slices = plan(D("1.00"), 0, 1_000, twap_weights(3), step=D("0.01"))
    assert [s.quantity for s in slices] == [D("0.33"), D("0.33"), D("0.34")]


def test_a_slice_below_the_minimum_is_merged_into_the_next_and_a_last_one_backwards() -> None:
    slices = plan(D("1.0"), 0, 1_000, twap_weights(4), step=D("0.1"), minimum=D("0.3"))
    assert [(s.at, s.quantity) for s in slices] == [(1_000, D("0.5")), (3_000, D("0.5"))]
    assert [s.quantity for s in plan(D("1.0"), 0, 1_000, twap_weights(3), step=D("0.1"),
                                     minimum=D("0.4"))] == [D("0.6"), D("0.4")]
    # Smaller than the minimum itself: one slice, for the broker to judge.
    assert [s.quantity for s in plan(D("0.2"), 0, 1_000, twap_weights(5), step=D("0.1"),
                                     minimum=D("0.3"))] == [D("0.2")]


def test_the_u_shaped_profile_is_symmetric_with_ends_about_twice_the_middle() -> None:
    w = u_shape(10)
    assert w == w[::-1]
    assert min(w) == w[4] and D("1.6") < w[0] / w[4] < D("2")
    slices = plan(D("100"), 0, 1_000, w, step=D("1"))
    assert slices[0].quantity > slices[4].quantity


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="1 to 1000 slices"):
        plan(D(1), 0, 1, [])
    with pytest.raises(ValueError, match="positive"):
        plan(D(1), 0, 1, [D(1), D(0)])
    with pytest.raises(ValueError, match="positive"):
        plan(D(0), 0, 1, [D(1)])


S = [Slice(0, D("0.3"), D("0.3")), Slice(10_000, D("0.3"), D("0.6")),
     Slice(20_000, D("0.4"), D("1.0"))]


def test_what_is_due_slice_by_slice() -> None:
    assert due(S, [], 0) == Due(quantity=D("0.3"), slice=0)
    working = [Child(0, D("0.3"), 0)]
    assert due(S, working, 15_000) == Due()  # one child at a time
    one = [Child(0, D("0.3"), 0, D("0.3"), over=True)]
    assert due(S, one, 9_999) == Due()
    assert due(S, one, 10_000) == Due(quantity=D("0.3"), slice=1)
    # Missed slices are caught up at once, in one child.
    assert due(S, one, 25_000) == Due(quantity=D("0.7"), slice=2)
    done = [*one, Child(2, D("0.7"), 25_000, D("0.7"), over=True)]
    assert due(S, done, 25_001) == Due(done=True)


def test_a_short_child_leaves_its_rest_to_the_next_slice_and_the_last_ends_with_it() -> None:
    short = [Child(0, D("0.3"), 0, D("0.1"), over=True)]
    assert due(S, short, 5_000) == Due()
    assert due(S, short, 10_000) == Due(quantity=D("0.5"), slice=1)
    last = [*short, Child(1, D("0.5"), 10_000, D("0.5"), over=True),
            Child(2, D("0.4"), 20_000, D("0.3"), over=True)]
    assert due(S, last, 30_000) == Due(done=True, left=D("0.1"))


def test_a_refused_child_is_sent_again_after_retry_ms() -> None:
    refused = [Child(0, D("0.3"), 0, over=True, refused=True)]
    assert due(S, refused, RETRY_MS - 1) == Due()
    assert due(S, refused, RETRY_MS) == Due(quantity=D("0.3"), slice=0)
    assert due(S, refused, 12_000) == Due(quantity=D("0.6"), slice=1)


def test_a_child_cancelled_to_be_re_priced_leaves_its_rest_to_a_new_one_at_once() -> None:
    repriced = [Child(0, D("0.3"), 0, D("0.1"), over=True, repriced=True)]
    assert due(S, repriced, 1_000) == Due(quantity=D("0.2"), slice=0)
    again = [*repriced, Child(0, D("0.2"), 1_000, D("0.2"), over=True)]
    assert due(S, again, 2_000) == Due()  # the slice had its child: the next one's turn
    assert due(S, again, 10_000) == Due(quantity=D("0.3"), slice=1)


def test_after_the_end_or_a_cancel_nothing_more_is_sent() -> None:
    one = [Child(0, D("0.3"), 0, D("0.2"), over=True)]
    assert due(S, one, 10_000, ended=True) == Due(done=True, left=D("0.8"))
    assert due(S, [Child(0, D("0.3"), 0)], 10_000, ended=True) == Due()  # its child first


outcomes = st.lists(st.tuples(st.integers(0, 40_000), st.sampled_from(["fill", "part", "refuse"]),
                              st.integers(0, 100)), min_size=1, max_size=40)


@settings(deadline=None)
@given(orders(), outcomes)
def test_children_never_add_up_to_more_than_the_quantity(
        order: tuple[Decimal, Decimal, Decimal | None, list[Decimal]],
        path: list[tuple[int, str, int]]) -> None:
    """Whatever the children fill, whenever the owner looks: never more than what is
    left is sent, nor more than the quantity filled; once done, what is left is said."""
    quantity, step, minimum, weights = order
    slices = plan(quantity, 0, 1_000, weights[:30], step=step, minimum=minimum)
    children: list[Child] = []
    now = 0
    for gap, what, pct in path:
        now += gap % 3_000
        d = due(slices, children, now)
        if d.done:
            break
        if not d.quantity:
            continue
        filled = sum((c.filled for c in children), D(0))
        assert 0 < d.quantity <= quantity - filled
        if what == "refuse":
            children.append(Child(d.slice, d.quantity, now, over=True, refused=True))
        else:
            part = d.quantity if what == "fill" else round_down(d.quantity * pct / 100, step)
            children.append(Child(d.slice, d.quantity, now, part, over=True))
        assert sum((c.filled for c in children), D(0)) <= quantity
    end = due(slices, children, now, ended=True)
    assert end.done and end.left == quantity - sum((c.filled for c in children), D(0))


@settings(deadline=None)
@given(orders(), st.integers(50, 5_000))
def test_filled_whole_it_sends_a_child_per_slice_and_fills_exactly_the_quantity(
        order: tuple[Decimal, Decimal, Decimal | None, list[Decimal]], every: int) -> None:
    """The owner looking every ``every`` ms: one child per slice it finds due (fewer when
    it looks less often than the slices come), and all of the quantity filled, exactly."""
    quantity, step, minimum, weights = order
    slices = plan(quantity, 0, 1_000, weights, step=step, minimum=minimum)
    children: list[Child] = []
    now = 0
    while not (d := due(slices, children, now)).done:
        if d.quantity:
            children.append(Child(d.slice, d.quantity, now, d.quantity, over=True))
        now += every
    assert d.left == 0 and sum(c.filled for c in children) == quantity
    assert len({c.slice for c in children}) == len(children) <= len(slices)
    if every <= 1_000:
        assert [c.quantity for c in children] == [s.quantity for s in slices]


def test_the_participation_room_is_the_cap_of_the_volume_less_the_fills_on_the_step() -> None:
    assert participation_room(D("0.1"), D("12.345"), D("0.5"), D("0.01")) == D("0.73")
    assert participation_room(D("0.1"), D("5"), D("0.5"), D("0.01")) == 0
    assert participation_room(D("0.1"), D("4"), D("0.5"), None) == 0  # never below 0
    assert participation_room(D("1"), D("0.123"), D("0"), None) == D("0.123")


def test_a_capped_child_leaves_its_slice_open_for_another_once_there_is_volume() -> None:
    capped = [Child(0, D("0.1"), 0, D("0.1"), over=True, capped=True)]
    assert due(S, capped, 500) == Due(quantity=D("0.2"), slice=0)
    # At the last slice, a capped child keeps the schedule going until its end.
    last = [Child(2, D("0.9"), 20_000, D("0.9"), over=True, capped=True)]
    assert due(S, last, 25_000) == Due(quantity=D("0.1"), slice=2)
    assert due(S, last, 25_000, ended=True) == Due(done=True, left=D("0.1"))


@settings(deadline=None)
@given(orders(), st.sampled_from([D("0.01"), D("0.1"), D("0.5"), D("1")]),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=60))
def test_capped_children_never_pass_the_cap_of_the_volume_nor_the_quantity(
        order: tuple[Decimal, Decimal, Decimal | None, list[Decimal]], cap: Decimal,
        volumes: list[int]) -> None:
    """A market trading a random amount between two looks: each child is cut to the room
    the cap leaves, so the children's total stays within cap times the volume so far, and within
    the quantity."""
    quantity, step, minimum, weights = order
    slices = plan(quantity, 0, 1_000, weights[:30], step=step, minimum=minimum)
    children: list[Child] = []
    volume = D(0)
    for i, traded in enumerate(volumes):
        now = i * 700
        volume += step * traded
        d = due(slices, children, now)
        if d.done:
            break
        if not d.quantity:
            continue
        filled = sum((c.filled for c in children), D(0))
        room = participation_room(cap, volume, filled, step)
        size = min(d.quantity, room)
        if size <= 0:
            continue
        children.append(Child(d.slice, size, now, size, over=True, capped=size < d.quantity))
        total = filled + size
        assert total <= cap * volume and total <= quantity
