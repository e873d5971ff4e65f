"""Replay's fold and diff: orders rebuilt from their events equal what the worker's own
functions built, positions equal the chain of apply_fill, and every tampering of the stored
side or of the log is reported as exactly the difference it is."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from executor.brokers.base import BrokerOrder, BrokerStatus
from executor.infra.streams import parse_stream_id
from executor.model.order import Context, Order, apply_report, new_order, transition
from executor.model.positions import Position, apply_fill
from executor.operations.replay import (
    CLOCK_SLACK_MS,
    Difference,
    Fold,
    Report,
    Stored,
    StoredOrder,
    Subject,
    compare,
)
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    WireDecimal,
    encode,
    encode_events,
)

S = OrderState
TTL = 7 * 86_400_000
NOW = 10_000_000_000


def spec(side: Side = Side.BUY, quantity: str = "3", symbol: str = "BTCUSDT") -> OrderSpec:
    return OrderSpec(account="default", symbol=symbol, side=side, type=OrderType.LIMIT,
                     quantity=WireDecimal(quantity), price=WireDecimal("100"))


def fill(n: int, qty: str, price: str, fee: str = "0.1", asset: str | None = "USDT") -> Fill:
    return Fill(fill_id=f"f{n}", quantity=WireDecimal(qty), price=WireDecimal(price),
                commission=WireDecimal(fee), commission_asset=asset)


def report(cid: str, status: BrokerStatus, *fills: Fill) -> BrokerOrder:
    return BrokerOrder(client_order_id=cid, broker_order_id=f"B-{cid}", symbol="BTCUSDT",
                       status=status, quantity=WireDecimal("3"), fills=list(fills))


class Log:
    """An events stream: entries numbered 1-0, 2-0, ...; each ``add`` is one write, whose
    events go in one entry (``grouped``: event v2, as the workers write them) or in one
    entry each (as event v1 wrote them, and as a stream may still hold)."""

    def __init__(self, grouped: bool = False) -> None:
        self.entries: list[tuple[str, bytes]] = []
        self.grouped = grouped

    def add(self, *events: Event) -> None:
        for data in [encode_events(events)] if self.grouped else map(encode, events):
            self.entries.append((f"{len(self.entries) + 1}-0", data))

    def fold(self, cursor: str | None = None) -> Fold:
        fold = Fold({("default", "BTCUSDT"): "USDT", ("default", "ETH:USDT"): "USDT"},
                    positions_until=cursor)
        for entry_id, data in self.entries:
            fold.add(entry_id, data)
        return fold

    @property
    def last(self) -> str:
        return self.entries[-1][0]


def ctx(now: int) -> Context:
    return Context(now=now, worker="w1", request_id=f"{now}-0")


def worked_orders(log: Log) -> dict[str, Order]:
    """Three orders moved by the worker's functions: filled in parts whose mean repeats
    (an average that must be rounded exactly as add_fill rounds it), resting, cancelled."""
    a, events = new_order("a", "1-0", spec(), ctx(1))
    log.add(*events)
    log.add(*apply_report(a, report("a", BrokerStatus.PARTIALLY_FILLED, fill(1, "1", "100")),
                          ctx(2)))
    log.add(*apply_report(a, report("a", BrokerStatus.FILLED, fill(1, "1", "100"),
                                    fill(2, "1", "101"), fill(3, "1", "101")), ctx(3)))
    b, events = new_order("b", "4-0", spec(Side.SELL, "2"), ctx(4))
    log.add(*events)
    log.add(*apply_report(b, report("b", BrokerStatus.NEW), ctx(5)))
    c, events = new_order("c", "6-0", spec(Side.SELL, "1", "ETH:USDT"), ctx(6))
    log.add(*events)
    log.add(*apply_report(c, report("c", BrokerStatus.PARTIALLY_FILLED,
                                    fill(9, "0.5", "50", "0.2", "BNB")), ctx(7)))
    log.add(transition(c, S.PENDING_CANCEL, ctx(8)))
    log.add(*apply_report(c, report("c", BrokerStatus.CANCELLED, fill(9, "0.5", "50")), ctx(9)))
    return {"a": a, "b": b, "c": c}


def stored_of(orders: dict[str, Order], positions: dict[tuple[str, str], Position] | None = None,
              cursor: str | None = None) -> Stored:
    return Stored(
        orders={cid: StoredOrder(state=o.state.value, seq=str(o.seq), request_id=o.request_id,
                                 record=encode(o)) for cid, o in orders.items()},
        open={cid for cid, o in orders.items()
              if o.state not in (S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.DENIED)},
        positions={f"{a}:{s}": encode(p) for (a, s), p in (positions or {}).items()},
        positions_cursor=cursor)


def diff(stored: Stored, fold: Fold) -> list[Difference]:
    return compare(fold, stored, now_ms=NOW, order_ttl_ms=TTL).differences


@pytest.mark.parametrize("grouped", [False, True], ids=["v1", "v2"])
def test_orders_rebuilt_from_events_equal_what_the_worker_functions_built(
        grouped: bool) -> None:
    log = Log(grouped)
    orders = worked_orders(log)
    fold = log.fold()
    assert fold.problems == []
    assert fold.events == sum(o.seq for o in orders.values())  # every event, once
    assert fold.orders == orders  # every field, fills and rounded average included
    assert orders["a"].average_price == Decimal("100.666666666667")
    assert (orders["a"].state, orders["b"].state, orders["c"].state) == (
        S.FILLED, S.ACCEPTED, S.CANCELLED)


def test_the_created_event_alone_rebuilds_the_order_new_order_starts_from() -> None:
    order, events = new_order("a", "1-0", spec(), ctx(1))
    log = Log()
    log.add(events[0])
    rebuilt = log.fold().orders["a"]
    log.add(transition(rebuilt, S.PENDING_SUBMIT, ctx(1)))  # moves the rebuilt one along
    assert rebuilt == order
    assert log.entries[-1][1] == encode(events[1])  # and it says what new_order's said


def test_no_difference_when_the_store_matches() -> None:
    log = Log()
    orders = worked_orders(log)
    report = compare(log.fold(), stored_of(orders), now_ms=NOW, order_ttl_ms=TTL)
    assert report.ok and report.differences == []
    assert (report.events, report.orders, report.stored_orders, report.open_orders) == (
        len(log.entries), 3, 3, 1)
    assert msgspec.json.decode(encode(report), type=Report) == report


def test_each_tampered_order_field_is_one_difference() -> None:
    log = Log()
    orders = worked_orders(log)
    a = orders["a"]
    cases: dict[str, tuple[str, object, str | None, str | None]] = {
        "state": ("state", S.PARTIALLY_FILLED, "filled", "partially_filled"),
        "seq": ("seq", 5, str(a.seq), "5"),
        "filled_quantity": ("filled_quantity", WireDecimal("2"), "3", "2"),
        "average_price": ("average_price", WireDecimal("100.67"), "100.666666666667", "100.67"),
        "commission": ("commission", WireDecimal("0"), "0.3", "0"),
        "broker_order_id": ("broker_order_id", None, "B-a", None),
        "request_id": ("request_id", "9-0", "1-0", "9-0"),
    }
    for name, value, replayed, stored_value in cases.values():
        tampered = msgspec.structs.replace(a, **{name: value})
        stored = stored_of(orders)
        stored.orders["a"].record = encode(tampered)
        assert diff(stored, log.fold()) == [Difference(
            subject=Subject.ORDER, key="a", field=name, replayed=replayed,
            stored=stored_value)]


def test_an_equal_decimal_written_otherwise_is_not_a_difference() -> None:
    log = Log()
    orders = worked_orders(log)
    stored = stored_of(orders)
    stored.orders["a"].record = encode(msgspec.structs.replace(
        orders["a"], filled_quantity=WireDecimal("3.000")))
    assert diff(stored, log.fold()) == []


def test_hash_fields_beside_the_record_are_compared_too() -> None:
    log = Log()
    stored = stored_of(worked_orders(log))
    stored.orders["b"].state = "filled"
    assert diff(stored, log.fold()) == [Difference(
        subject=Subject.ORDER, key="b", field="hash.state", replayed="accepted",
        stored="filled")]


def test_orders_on_one_side_only_and_records_past_their_ttl() -> None:
    log = Log()
    orders = worked_orders(log)
    stored = stored_of(orders)
    del stored.orders["b"]  # open: its record must be there
    # Stored with no event: open as its stored state says, so only the record differs.
    stored.orders["ghost"] = StoredOrder(state="accepted", seq="3", request_id="x",
                                         record=b"{}")
    stored.open.add("ghost")
    stored.open.add("stray")  # in the open set only
    assert diff(stored, log.fold()) == [
        Difference(subject=Subject.ORDER, key="b", field="record", replayed="accepted",
                   stored=None),
        Difference(subject=Subject.ORDER, key="ghost", field="record", replayed=None,
                   stored="accepted"),
        Difference(subject=Subject.OPEN, key="stray", field="member", replayed="no",
                   stored="yes"),
    ]
    # A finished order's record expires order_ttl_ms after its last change: not a
    # difference then, a difference before.
    finished = stored_of(orders)
    del finished.orders["a"]
    last_change = orders["a"].updated_at
    late = compare(log.fold(), finished, now_ms=last_change + TTL, order_ttl_ms=TTL)
    assert late.ok and late.expired_records == 1
    early = compare(log.fold(), finished,
                    now_ms=last_change + TTL - CLOCK_SLACK_MS - 1, order_ttl_ms=TTL)
    assert early.differences == [Difference(subject=Subject.ORDER, key="a", field="record",
                                            replayed="filled", stored=None)]


def test_open_set_membership_must_equal_state_not_terminal() -> None:
    log = Log()
    stored = stored_of(worked_orders(log))
    stored.open.discard("b")
    stored.open.add("a")
    assert diff(stored, log.fold()) == [
        Difference(subject=Subject.OPEN, key="a", field="member", replayed="no",
                   stored="yes"),
        Difference(subject=Subject.OPEN, key="b", field="member", replayed="yes",
                   stored="no"),
    ]


def test_orders_written_during_the_replay_are_not_compared() -> None:
    log = Log()
    stored = stored_of(worked_orders(log))
    stored.open.discard("b")
    stored.orders["b"].record = b"not json"
    report = compare(log.fold(), stored, now_ms=NOW, order_ttl_ms=TTL,
                     in_flight=frozenset({"b"}))
    assert report.ok and report.in_flight == ["b"]


def test_an_unreadable_record_is_a_difference() -> None:
    log = Log()
    stored = stored_of(worked_orders(log))
    stored.orders["b"].record = b"not json"
    (only,) = diff(stored, log.fold())
    assert (only.subject, only.key, only.field, only.replayed) == (
        Subject.ORDER, "b", "record", "accepted")
    assert only.stored is not None and only.stored.startswith("undecodable")


def test_positions_are_the_fold_of_fill_events_up_to_the_cursor() -> None:
    log = Log()
    orders = worked_orders(log)
    fold = log.fold(cursor=log.last)
    btc = Position(account="default", symbol="BTCUSDT")
    for f in orders["a"].fills:
        btc = apply_fill(btc, Side.BUY, f.quantity, f.price, f.commission)
    # The fee of c's fill is in BNB, not in the quote asset: kept apart, per asset.
    eth = msgspec.structs.replace(
        apply_fill(Position(account="default", symbol="ETH:USDT"), Side.SELL, Decimal("0.5"),
                   Decimal("50")), other_commissions={"BNB": Decimal("0.2")})
    assert fold.positions == {("default", "BTCUSDT"): btc, ("default", "ETH:USDT"): eth}
    assert btc.commission == Decimal("0.3") and eth.commission == 0
    stored = stored_of(orders, fold.positions, log.last)
    assert diff(stored, fold) == []
    # Up to the cursor only: the entry of a's first fill is the 4th.
    assert parse_stream_id("4-0") < parse_stream_id(log.last)
    early = log.fold(cursor="4-0")
    first = orders["a"].fills[0]
    assert early.positions == {("default", "BTCUSDT"): apply_fill(
        Position(account="default", symbol="BTCUSDT"), Side.BUY, first.quantity, first.price,
        first.commission)}
    assert log.fold().positions == {}  # no cursor: the projector has folded nothing


def test_a_log_of_v1_entries_then_v2_entries_folds_as_either_alone() -> None:
    """A stream written before event v2 and after: the same orders and positions."""
    one_each, grouped = Log(), Log(grouped=True)
    orders = worked_orders(one_each)
    worked_orders(grouped)
    assert len(grouped.entries) < len(one_each.entries)
    assert any(data.startswith(b"[") for _, data in grouped.entries)
    # The first write (a's created and pending_submit) as v1 wrote it, the rest as v2.
    mixed = Log()
    mixed.entries = one_each.entries[:2] + [
        (f"{n}-0", data) for n, (_, data) in enumerate(grouped.entries[1:], start=3)]
    for log in (one_each, grouped, mixed):
        fold = log.fold(cursor=log.last)
        assert fold.problems == [] and fold.orders == orders
        assert fold.positions == one_each.fold(cursor=one_each.last).positions


def test_each_tampered_position_field_and_position_on_one_side_is_a_difference() -> None:
    log = Log()
    orders = worked_orders(log)
    fold = log.fold(cursor=log.last)
    btc = fold.positions["default", "BTCUSDT"]
    for name in ("quantity", "average_price", "cost_basis", "realized_pnl", "commission"):
        stored = stored_of(orders, fold.positions, log.last)
        stored.positions["default:BTCUSDT"] = encode(
            msgspec.structs.replace(btc, **{name: WireDecimal("-7")}))
        (only,) = diff(stored, fold)
        assert (only.subject, only.key, only.field, only.stored) == (
            Subject.POSITION, "default:BTCUSDT", name, "-7")
    stored = stored_of(orders, fold.positions, log.last)
    del stored.positions["default:ETH:USDT"]
    stored.positions["other:X"] = encode(Position(account="other", symbol="X"))
    assert diff(stored, fold) == [
        Difference(subject=Subject.POSITION, key="default:ETH:USDT", field="position",
                   replayed="present", stored=None),
        Difference(subject=Subject.POSITION, key="other:X", field="position",
                   replayed=None, stored="present"),
    ]


def test_a_log_that_contradicts_itself_is_reported() -> None:
    order, events = new_order("a", "1-0", spec(), ctx(1))
    submitted = transition(order, S.SUBMITTED, ctx(2))
    (partial,) = apply_report(order, report("a", BrokerStatus.PARTIALLY_FILLED,
                                            fill(1, "1", "100")), ctx(3))
    log = Log()
    log.add(*events, submitted, submitted)  # seq 3 twice: the repeat is applied once
    # A gap (seq 4 missing) and running totals that the fills do not add up to.
    log.add(msgspec.structs.replace(partial, seq=5, filled_quantity=WireDecimal("2")))
    log.add(msgspec.structs.replace(events[0], client_order_id="z", order=None))
    log.add(msgspec.structs.replace(submitted, client_order_id="nobody"))
    log.entries.append(("99-0", b"{"))
    fold = log.fold()
    found = [(p.key, p.field, p.replayed, p.stored) for p in fold.problems]
    assert found[:-1] == [
        ("a", "seq", "4", "3"),
        ("a", "seq", "4", "5"),
        ("a", "filled_quantity", "1", "2"),
        ("z", "order", "the order's parameters", None),
        ("nobody", "created", "a created event first", "submitted at seq 3"),
    ]
    key, name, _, logged = found[-1]
    assert (key, name) == ("99-0", "data") and logged and logged.startswith("undecodable")
    assert [p.entry_id for p in fold.problems] == ["4-0", "5-0", "5-0", "6-0", "7-0", "99-0"]
    assert all(p.subject is Subject.LOG for p in fold.problems)
    # The rebuild follows the fills, not the totals the log claims.
    rebuilt = fold.orders["a"]
    assert (rebuilt.state, rebuilt.seq, rebuilt.filled_quantity) == (
        S.PARTIALLY_FILLED, 5, Decimal("1"))
    assert not compare(fold, stored_of({"a": rebuilt}), now_ms=NOW, order_ttl_ms=TTL).ok


def test_an_illegal_transition_in_the_log_is_reported_and_followed() -> None:
    _, events = new_order("a", "1-0", spec(), ctx(1))
    log = Log()
    log.add(*events, msgspec.structs.replace(events[1], seq=3, state=S.FILLED,
                                             prev_state=S.PENDING_SUBMIT))
    fold = log.fold()
    assert [(p.field, p.replayed, p.stored) for p in fold.problems] == [
        ("state", "a state allowed after pending_submit", "filled")]
    assert fold.orders["a"].state is S.FILLED and fold.orders["a"].seq == 3
    report = compare(fold, Stored(), now_ms=NOW, order_ttl_ms=TTL)
    assert not report.ok


@pytest.mark.parametrize(("text", "parsed"), [("5-3", (5, 3)), ("17", (17, 0))])
def test_stream_ids_compare_as_numbers(text: str, parsed: tuple[int, int]) -> None:
    assert parse_stream_id(text) == parsed
    assert parse_stream_id("10-0") > parse_stream_id("9-99")


def test_a_log_trimmed_by_retention_is_checked_from_its_checkpoint() -> None:
    log = Log()
    orders = worked_orders(log)
    base_cursor = log.last  # the checkpoint: the positions as of this entry
    base = log.fold(cursor=base_cursor).positions
    b = orders["b"]  # resting since before the trim, it fills after it
    log.add(*apply_report(b, report("b", BrokerStatus.PARTIALLY_FILLED, fill(7, "1", "99")),
                          ctx(20)))
    whole = log.fold(cursor=log.last)
    assert whole.problems == [] and whole.orders == orders
    stored = stored_of(orders, whole.positions, cursor=log.last)
    stored.base = {f"{a}:{s}": encode(p) for (a, s), p in base.items()}
    stored.base_cursor = stored.trimmed_before = base_cursor
    # What the log holds after the trim: the checkpoint's entry and what came after.
    kept = log.entries[log.entries.index(next(e for e in log.entries if e[0] == base_cursor)):]

    def trimmed_fold() -> Fold:
        fold = Fold({("default", "BTCUSDT"): "USDT", ("default", "ETH:USDT"): "USDT"},
                    positions_until=log.last, trimmed_before=base_cursor, base=stored.base,
                    base_cursor=base_cursor,
                    sides={cid: o.spec.side for cid, o in orders.items()})
        for entry_id, data in kept:
            fold.add(entry_id, data)
        return fold

    report_ = compare(trimmed_fold(), stored, now_ms=NOW, order_ttl_ms=TTL)
    assert report_.ok, report_.differences
    assert report_.history_trimmed == 3 and report_.log_trimmed_before == base_cursor
    assert report_.positions_checked and report_.positions == 2
    # The positions are still checked: checkpoint + the fills after it.
    stored.positions["default:BTCUSDT"] = encode(msgspec.structs.replace(
        whole.positions[("default", "BTCUSDT")], quantity=WireDecimal("0")))
    (only,) = compare(trimmed_fold(), stored, now_ms=NOW, order_ttl_ms=TTL).differences
    assert (only.subject, only.key, only.field) == (Subject.POSITION, "default:BTCUSDT",
                                                    "quantity")
    # Read as a whole log, the same entries are orders without their start.
    untrimmed = Fold(positions_until=log.last)
    for entry_id, data in kept:
        untrimmed.add(entry_id, data)
    assert {p.field for p in untrimmed.problems} == {"created"}


def test_fill_events_written_before_per_asset_totals_replay_without_difference() -> None:
    """Old logs: fill events without ``commissions`` whose ``commission`` summed every
    fill's, whatever the asset; old records likewise."""
    log = Log()
    order, events = new_order("m", "1-0", spec(), ctx(1))
    log.add(*events)
    fresh = apply_report(order, report("m", BrokerStatus.PARTIALLY_FILLED,
                                       fill(1, "1", "100", "0.001", "BTC"),
                                       fill(2, "1", "100", "0.02", "BNB")), ctx(2))
    total = Decimal("0.021")
    for event in fresh:
        if event.fill is not None:  # as the old code wrote them
            event.commissions = None
            event.commission = WireDecimal(sum(f.commission for f in order.fills
                                               if int(f.fill_id[1:]) <= int(
                                                   event.fill.fill_id[1:])))
    log.add(*fresh)
    assert fresh[-1].commission == total
    old_record = msgspec.structs.replace(order, commission=WireDecimal(total))
    raw = encode(old_record).replace(encode(order.commissions).join(
        (b',"commissions":', b"")), b"")
    assert b"commissions" not in raw
    stored = stored_of({"m": order})
    stored.orders["m"].record = raw
    report_ = compare(log.fold(), stored, now_ms=NOW, order_ttl_ms=TTL)
    assert report_.ok, report_.differences
