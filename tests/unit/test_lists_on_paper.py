"""A bracket on random price paths, pure: the paper exchange's matching fills the entry in
parts (a shallow book) and works its exits (native ocos), and the list's decisions
(model/lists.py) place them, as the worker would, one step at a time. Whatever the path
and the trigger, the position never goes past flat (the exits never close more than the
entry filled), never exceeds what the entry filled, and the exits working never add up to
more than the position (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.brokers.base import BrokerStatus
from executor.brokers.paper import PaperAccount
from executor.brokers.paper.config import SymbolConfig
from executor.brokers.paper.matching import Book, advance, submit
from executor.brokers.paper.records import PaperOrder
from executor.model.lists import RETRY_MS, Act, Exit, ExitState, Progress, decide, released
from producer.contract import OrderSpec, OrderState, OrderType, OtoTrigger, Side

D = Decimal
SYM = SymbolConfig(price=D("100"), tick_size=D("0.01"), step_size=D("0.001"),
                   min_quantity=D("0.001"), max_quantity=D("1000"), depth_quantity=D("0.1"),
                   base_asset="X", quote_asset="USD")
CONFIG = msgspec.structs.replace(PaperAccount(), symbols={"XUSD": SYM}, depth_levels=3)
START = D("100")

STATES = {BrokerStatus.NEW: OrderState.ACCEPTED,
          BrokerStatus.PARTIALLY_FILLED: OrderState.PARTIALLY_FILLED,
          BrokerStatus.FILLED: OrderState.FILLED, BrokerStatus.CANCELLED: OrderState.CANCELLED,
          BrokerStatus.REJECTED: OrderState.REJECTED, BrokerStatus.EXPIRED: OrderState.EXPIRED}

prices = st.integers(-300, 300).map(lambda n: START + D(n) / 100)  # 97.00 .. 103.00


def book(ref: Decimal) -> Book:
    return Book(ref, SYM, CONFIG)


def simulate(quantity: Decimal, limit: Decimal, tp: Decimal, sl: Decimal,
             trigger: OtoTrigger, path: list[Decimal],
             seen: list[str] | None = None) -> tuple[Decimal, Decimal]:
    """Run the bracket along ``path``; returns (what the entry filled, the position), and
    appends to ``seen`` each exit's id and final status."""
    spec = OrderSpec(account="a", symbol="XUSD", side=Side.BUY, type=OrderType.LIMIT,
                     quantity=quantity, price=limit, take_profit=tp, stop_loss=sl,
                     oto_trigger=trigger)
    entry = submit("E", "bE", spec, book(START), SYM, CONFIG, 0)
    exits: dict[str, PaperOrder] = {}
    progress = Progress(account="a")
    for i, ref in enumerate(path):
        now = (i + 1) * 1_000
        entry = advance(entry, book(ref), SYM, CONFIG, now) or entry
        for cid, order in exits.items():
            exits[cid] = advance(order, book(ref), SYM, CONFIG, now) or order
        closed = sum((o.filled_quantity for o in exits.values()), D(0))
        position = entry.filled_quantity - closed
        # The invariants, at every step of every path.
        assert 0 <= position <= entry.filled_quantity
        working = sum((o.spec.quantity - o.filled_quantity for o in exits.values()
                       if o.is_open), D(0))
        assert working <= position
        states: dict[str, ExitState] = {cid: STATES[o.status] for cid, o in exits.items()}
        d = decide(spec, STATES[entry.status], entry.filled_quantity, True, progress, states,
                   position, SYM.step_size, now, False, holding=working)
        if d.act is not Act.RELEASE:
            continue
        cid = f"E-x{progress.n + 1}"
        exit_spec = OrderSpec(account="a", symbol="XUSD", side=Side.SELL, type=OrderType.OCO,
                              quantity=d.quantity, price=tp, stop_price=sl, reduce_only=True)
        progress = released(progress, states, Exit(id=cid, quantity=d.quantity, at=now))
        exits[cid] = submit(cid, f"b{cid}", exit_spec, book(ref), SYM, CONFIG, now)
    closed = sum((o.filled_quantity for o in exits.values()), D(0))
    if seen is not None:
        seen += [f"{cid} {o.status} {o.filled_quantity}" for cid, o in exits.items()]
    return entry.filled_quantity, entry.filled_quantity - closed


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10).map(lambda n: D(n) / 10), prices, st.integers(1, 300),
       st.integers(1, 300), st.sampled_from(list(OtoTrigger)),
       st.lists(prices, min_size=1, max_size=60))
def test_a_bracket_never_leaves_a_position_past_flat_or_beyond_its_fill(
        quantity: Decimal, limit: Decimal, up: int, down: int, trigger: OtoTrigger,
        path: list[Decimal]) -> None:
    filled, position = simulate(quantity, limit, limit + D(up) / 100, limit - D(down) / 100,
                                trigger, path)
    assert 0 <= position <= filled <= quantity


def test_the_simulation_fills_in_parts_and_closes_at_the_take_profit() -> None:
    """Not vacuous: 0.3 fills over three steps of a shallow book; partial places an exit
    per part; the rise to the take-profit closes all of it."""
    path = [D("99.50")] * 3 + [D("100.50")] * 6
    seen: list[str] = []
    assert simulate(D("0.3"), D("99.50"), D("100.50"), D("98.00"), OtoTrigger.PARTIAL,
                    path, seen) == (D("0.3"), D("0"))
    assert seen == ["E-x1 filled 0.1", "E-x2 filled 0.1", "E-x3 filled 0.1"]
    # The price never comes back: the position stays, protected, nothing over-closed.
    assert simulate(D("0.3"), D("99.50"), D("101.00"), D("98.00"), OtoTrigger.FULL,
                    [D("99.50")] * 4) == (D("0.3"), D("0.3"))


def test_a_refused_exit_is_retried_after_the_pause_in_the_simulation() -> None:
    """The price gaps below the stop-loss as the entry fills: the oco is rejected (it would
    trigger at once), placed again RETRY_MS later with the price back between its legs,
    and closes the position at the take-profit."""
    steps = RETRY_MS // 1_000
    path = [D("97.50")] + [D("99.50")] * steps + [D("101.00")] * 3
    seen: list[str] = []
    assert simulate(D("0.1"), D("99.00"), D("101.00"), D("98.00"), OtoTrigger.FULL,
                    path, seen) == (D("0.1"), D("0"))
    assert seen == ["E-x1 rejected 0", "E-x2 filled 0.1"]
