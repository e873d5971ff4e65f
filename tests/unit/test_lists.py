"""Contingent lists, pure: the contract's refusals (naming the field), the exits' shape,
when an exit is due (full vs partial trigger), the cancel of a list, and a property test
that no sequence of fills, positions and exit outcomes makes the exits larger than what
the entry filled or the position holds."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.model.lists import (
    RETRY_MS,
    Act,
    Exit,
    ExitState,
    Progress,
    Seen,
    decide,
    exit_request,
    newly_seen,
    released,
)
from producer.contract import (
    Action,
    ContractError,
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    Request,
    Side,
)
from producer.validation import check_request

D = Decimal
STEP = D("0.001")


def entry(side: Side = Side.BUY, trigger: OtoTrigger = OtoTrigger.FULL,
          tp: str | None = "51000", sl: str | None = "49000") -> OrderSpec:
    return OrderSpec(account="a", symbol="BTCUSDT", side=side, type=OrderType.LIMIT,
                     quantity=D("1"), price=D("50000"),
                     take_profit=None if tp is None else D(tp),
                     stop_loss=None if sl is None else D(sl), oto_trigger=trigger,
                     strategy_id="s")


def place(**kw: object) -> Request:
    fields: dict[str, object] = dict(action=Action.PLACE, symbol="BTCUSDT", side="buy",
                                     type="limit", quantity=D("1"), price=D("50000"))
    fields.update(kw)
    # As decoded from the wire: enums, not strings.
    for name, kind in (("side", Side), ("type", OrderType), ("oto_trigger", OtoTrigger)):
        if isinstance(fields.get(name), str):
            fields[name] = kind(fields[name])
    return Request(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"take_profit": D("49999")}, "take_profit", "above its price 50000"),
    ({"stop_loss": D("50000")}, "stop_loss", "below its price 50000"),
    ({"take_profit": D("49000"), "stop_loss": D("49500"), "type": "market", "price": None},
     "take_profit", "above its stop_loss"),
    ({"side": "sell", "take_profit": D("50001")}, "take_profit", "below its price"),
    ({"take_profit": D("0")}, "take_profit", "positive"),
    ({"oto_trigger": "partial"}, "oto_trigger", "needs take_profit or stop_loss"),
    ({"take_profit": D("51000"), "reduce_only": True}, "reduce_only", "reduce_only"),
    ({"type": "oco", "stop_price": D("51000"), "price": D("49000"),
      "stop_loss": D("48000")}, "stop_loss", "oco"),
])
def test_a_bad_list_is_refused_naming_the_field(fields: dict[str, object], field: str,
                                                words: str) -> None:
    with pytest.raises(ContractError) as info:
        check_request(place(**fields))
    assert info.value.field == field and words in str(info.value)


def test_levels_and_trigger_are_refused_on_other_actions() -> None:
    with pytest.raises(ContractError) as info:
        check_request(Request(action=Action.CANCEL, client_order_id="x",
                              take_profit=D("1")))
    assert info.value.field == "take_profit"
    with pytest.raises(ContractError) as info:
        check_request(Request(action=Action.CANCEL, client_order_id="x",
                              oto_trigger=OtoTrigger.FULL))
    assert info.value.field == "oto_trigger"


def test_a_good_list_passes() -> None:
    check_request(place(take_profit=D("51000"), stop_loss=D("49000"), oto_trigger="partial"))
    check_request(place(side="sell", type="market", price=None, stop_loss=D("51000")))


def test_the_exits_are_an_oco_or_a_single_order_on_the_other_side() -> None:
    both = exit_request("E", entry(), D("0.5"), 1)
    assert (both.type, both.side, both.price, both.stop_price) == (
        OrderType.OCO, Side.SELL, D("51000"), D("49000"))
    assert both.reduce_only and both.quantity == D("0.5") and both.client_order_id == "E-x1"
    assert both.metadata == {"list_id": "E", "exit": 1} and both.strategy_id == "s"
    check_request(both)  # a request the worker itself accepts
    stamped = msgspec.structs.replace(entry(), metadata={
        "component": "c", "component_version": "2", "note": "not carried"})
    assert exit_request("E", stamped, D("1"), 3).metadata == {
        "list_id": "E", "exit": 3, "component": "c", "component_version": "2"}
    tp = exit_request("E", entry(Side.SELL, tp="49000", sl=None), D("1"), 2)
    assert (tp.type, tp.side, tp.price, tp.client_order_id) == (
        OrderType.LIMIT, Side.BUY, D("49000"), "E-x2")
    sl = exit_request("E", entry(sl="49000", tp=None), D("1"), 1)
    assert (sl.type, sl.stop_price) == (OrderType.STOP, D("49000"))
    check_request(tp)
    check_request(sl)


def run(spec: OrderSpec, state: OrderState, filled: str, *, counted: bool = True,
        progress: Progress | None = None, exits: dict[str, ExitState] | None = None,
        position: str = "0", now: int = 1_000, cancel: bool = False,
        holding: str = "0") -> tuple[Act, Decimal]:
    d = decide(spec, state, D(filled), counted, progress or Progress(account="a"),
               exits or {}, D(position), STEP, now, cancel, holding=D(holding))
    return d.act, d.quantity


def test_full_waits_for_the_entry_to_end_and_be_counted() -> None:
    spec = entry()
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.4", position="0.4")[0] is Act.WAIT
    assert run(spec, OrderState.FILLED, "1", counted=False, position="0.4")[0] is Act.WAIT
    assert run(spec, OrderState.FILLED, "1", position="1") == (Act.RELEASE, D("1"))
    # Cancelled after a partial fill: the exit is for that part.
    assert run(spec, OrderState.CANCELLED, "0.4", position="0.4") == (Act.RELEASE, D("0.4"))
    assert run(spec, OrderState.CANCELLED, "0", position="0")[0] is Act.DONE


def test_partial_releases_each_new_part_as_the_fold_shows_it() -> None:
    spec = entry(trigger=OtoTrigger.PARTIAL)
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.4", position="0")[0] is Act.WAIT
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.4", position="0.4") == (
        Act.RELEASE, D("0.4"))
    first = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("0.4"), at=900)])
    working = {"E-x1": OrderState.ACCEPTED}
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.4", progress=first, exits=working,
               position="0.4")[0] is Act.WAIT
    assert run(spec, OrderState.FILLED, "1", progress=first, exits=working,
               position="1", holding="0.4") == (Act.RELEASE, D("0.6"))
    # The first exit published but not yet an order: its part of the position is taken.
    assert run(spec, OrderState.FILLED, "1", progress=first, exits={"E-x1": Seen.PENDING},
               position="0.7") == (Act.RELEASE, D("0.3"))


def test_a_new_exit_gets_only_what_the_working_ones_leave_of_the_position() -> None:
    """The reduce_only check takes the open orders on the exit's side from the position:
    so must the list, or its exit is refused (and retried every 5 s)."""
    spec = entry(trigger=OtoTrigger.PARTIAL)
    first = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("0.4"), at=900)])
    working = {"E-x1": OrderState.ACCEPTED}
    # The entry's second part is on its record, not yet in the fold: wait for it.
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.7", progress=first, exits=working,
               position="0.4", holding="0.4")[0] is Act.WAIT
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.7", progress=first, exits=working,
               position="0.7", holding="0.4") == (Act.RELEASE, D("0.3"))
    # 0.1 sold otherwise: the second exit is for what is left beyond the first.
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.7", progress=first, exits=working,
               position="0.6", holding="0.4") == (Act.RELEASE, D("0.2"))
    # The first exit half filled: it holds its rest only.
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.7", progress=first, exits=working,
               position="0.5", holding="0.2") == (Act.RELEASE, D("0.3"))


def test_an_exit_never_closes_more_than_the_position_and_is_rounded_to_the_step() -> None:
    spec = entry()
    # Sold by hand meanwhile: only what is left is protected.
    assert run(spec, OrderState.FILLED, "1", position="0.25") == (Act.RELEASE, D("0.25"))
    # A fee taken in the base asset: rounded down to the step.
    assert run(spec, OrderState.FILLED, "1", position="0.9999") == (Act.RELEASE, D("0.999"))
    # A sell entry (short) is protected by buys, from a negative position.
    short = entry(Side.SELL, tp="49000", sl="51000")
    assert run(short, OrderState.FILLED, "1", position="-1") == (Act.RELEASE, D("1"))
    assert run(short, OrderState.FILLED, "1", position="0.5")[0] is Act.DONE


def test_the_list_lasts_while_its_exits_work_and_ends_after() -> None:
    spec = entry()
    done = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("1"), at=900)], n=1)
    assert run(spec, OrderState.FILLED, "1", progress=done,
               exits={"E-x1": OrderState.ACCEPTED}, position="1")[0] is Act.WAIT
    assert run(spec, OrderState.FILLED, "1", progress=done,
               exits={"E-x1": OrderState.FILLED}, position="0")[0] is Act.DONE
    # Cancelled by hand, or its record expired: over, not replaced.
    for gone in (OrderState.CANCELLED, Seen.GONE):
        assert run(spec, OrderState.FILLED, "1", progress=done, exits={"E-x1": gone},
                   position="1", now=10_000)[0] is Act.DONE


def test_a_refused_exit_is_placed_again_later_under_a_new_id() -> None:
    spec = entry()
    one = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("1"), at=900)], n=1)
    for refused in (OrderState.REJECTED, Seen.REFUSED):
        states: dict[str, ExitState] = {"E-x1": refused}
        assert run(spec, OrderState.FILLED, "1", progress=one, exits=states,
                   position="1", now=900 + RETRY_MS - 1)[0] is Act.WAIT
        assert run(spec, OrderState.FILLED, "1", progress=one, exits=states,
                   position="1", now=900 + RETRY_MS) == (Act.RELEASE, D("1"))
        again = released(one, states, Exit(id="E-x2", quantity=D("1"), at=6_000))
        assert [e.id for e in again.exits] == ["E-x2"] and again.n == 2
        assert exit_request("E", spec, D("1"), again.n).client_order_id == "E-x2"


def test_exits_seen_with_an_order_are_marked_once() -> None:
    one = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("1"), at=900)], n=1)
    assert newly_seen(one, {"E-x1": Seen.PENDING}) is None
    seen = newly_seen(one, {"E-x1": OrderState.ACCEPTED})
    assert seen is not None and seen.exits[0].seen
    assert newly_seen(seen, {"E-x1": OrderState.FILLED}) is None


def test_a_cancel_waits_for_the_exits_it_must_cancel_to_exist() -> None:
    spec = entry()
    two = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("0.4"), at=900),
                                       Exit(id="E-x2", quantity=D("0.6"), at=950)], n=2)
    states: dict[str, ExitState] = {"E-x1": OrderState.FILLED, "E-x2": Seen.PENDING}
    assert run(spec, OrderState.FILLED, "1", progress=two, exits=states,
               cancel=True)[0] is Act.WAIT
    states["E-x2"] = OrderState.ACCEPTED
    d = decide(spec, OrderState.FILLED, D("1"), True, two, states, D("1"), STEP, 1_000,
               True, holding=D("0.6"))
    assert d.act is Act.CANCEL and d.ids == ("E-x2",)
    # Cancelled before any exit: nothing is released while the entry's cancel is not
    # done, and the list ends once it is.
    assert run(spec, OrderState.PARTIALLY_FILLED, "0.5", position="0.5",
               cancel=True)[0] is Act.WAIT
    assert run(spec, OrderState.PENDING_CANCEL, "0.5", position="0.5",
               cancel=True)[0] is Act.WAIT
    assert run(spec, OrderState.CANCELLED, "0.5", position="0.5",
               cancel=True)[0] is Act.CANCEL


def test_a_list_lives_on_when_its_entrys_cancel_is_refused() -> None:
    """The cancel mark is set before the entry's cancel is sent and taken back when the
    broker refuses it: a pass in between must not end the list, or the entry would work
    on with no exit for what it fills."""
    spec = entry()
    assert run(spec, OrderState.ACCEPTED, "0", cancel=True)[0] is Act.WAIT
    # The cancel was refused (the mark taken back), and the entry fills: its exit goes.
    assert run(spec, OrderState.FILLED, "1", position="1") == (Act.RELEASE, D("1"))


fills = st.lists(st.integers(0, 400), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(fills, st.sampled_from(list(OtoTrigger)), st.lists(st.integers(-300, 300),
                                                         min_size=12, max_size=12),
       st.lists(st.sampled_from([Seen.PENDING, Seen.REFUSED, OrderState.REJECTED,
                                 OrderState.ACCEPTED, OrderState.FILLED,
                                 OrderState.CANCELLED]), min_size=12, max_size=12))
def test_the_exits_never_exceed_the_fills_nor_the_position(
        parts: list[int], trigger: OtoTrigger, sold: list[int],
        outcomes: list[ExitState]) -> None:
    """Random fills of the entry (1,000 steps of 0.001 at most), a position the fold shows
    that other orders may have reduced (or not yet counted), and random outcomes of the
    exits: every exit released fits in what the entry filled less the earlier exits, and
    in the position less what the earlier exits hold, working or not yet."""
    spec = entry(trigger=trigger)
    progress = Progress(account="a")
    filled = D(0)
    states: dict[str, ExitState] = {}
    for i, part in enumerate(parts):
        filled = min(filled + D(part) * STEP, D(1))
        ended = i == len(parts) - 1
        state = OrderState.FILLED if ended else OrderState.PARTIALLY_FILLED
        position = max(filled + D(sold[i]) * STEP, D(0))
        holding = sum((e.quantity for e in progress.exits
                       if states.get(e.id) is OrderState.ACCEPTED), D(0))
        d = decide(spec, state, filled, True, progress, states, position, STEP, i, False,
                   holding=holding)
        if d.act is not Act.RELEASE:
            continue
        given_ = sum((e.quantity for e in progress.exits
                      if states.get(e.id) not in (Seen.REFUSED, OrderState.REJECTED)), D(0))
        pending = sum((e.quantity for e in progress.exits
                       if states.get(e.id) is Seen.PENDING), D(0))
        assert 0 < d.quantity <= filled - given_
        assert d.quantity <= position - pending - holding
        assert d.quantity % STEP == 0
        assert trigger is OtoTrigger.PARTIAL or ended
        cid = f"E-x{len(progress.exits) + 1}"
        progress = Progress(account="a", exits=[*progress.exits,
                                                Exit(id=cid, quantity=d.quantity, at=i)])
        states[cid] = outcomes[i]
    assert sum((e.quantity for e in progress.exits), D(0)) <= filled


def test_a_list_whose_entry_record_expired_lasts_while_its_exits_work() -> None:
    one = Progress(account="a", exits=[Exit(id="E-x1", quantity=D("1"), at=900)])

    def act(state: ExitState, cancel: bool = False) -> Act:
        return decide(None, OrderState.FILLED, D(0), True, one, {"E-x1": state}, D(0), None,
                      10_000, cancel, holding=D(0)).act
    assert act(OrderState.ACCEPTED) is Act.WAIT and act(Seen.PENDING) is Act.WAIT
    assert act(OrderState.ACCEPTED, cancel=True) is Act.CANCEL
    assert act(Seen.GONE) is Act.DONE and act(OrderState.FILLED) is Act.DONE
