"""The operator views built from what was read: filters, order, unrealized PnL, JSON."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from executor.background.liveness import WorkerInfo
from executor.model.order import Context, new_order, transition
from executor.model.positions import Position, apply_fill, unrealized
from executor.operations import views
from executor.operations.replay import Difference, Report, Subject
from producer.contract import (
    Algo,
    AlgoStrategy,
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    Side,
    WireDecimal,
    encode,
)

CTX = Context(now=1_000, worker="w1", request_id="1-0")


def record(cid: str, account: str, symbol: str, at: int,
           state: OrderState = OrderState.PENDING_SUBMIT) -> bytes:
    spec = OrderSpec(account=account, symbol=symbol, side=Side.BUY, type=OrderType.LIMIT,
                     quantity=WireDecimal("0.5"), price=WireDecimal("100"))
    order, _ = new_order(cid, "1-0", spec, Context(now=at, worker="w1"))
    if state is not OrderState.PENDING_SUBMIT:
        transition(order, state, CTX)
    return encode(order)


def test_orders_are_filtered_and_oldest_first_and_bad_records_named() -> None:
    records = {
        "new": record("new", "default", "BTCUSDT", 5_000),
        "old": record("old", "default", "BTCUSDT", 1_000, OrderState.SUBMITTED),
        "eth": record("eth", "default", "ETHUSDT", 2_000),
        "other": record("other", "acct2", "BTCUSDT", 3_000),
        "broken": b"{",
        "gone": None,
    }
    view = views.orders_view(records, 6_000)
    assert [r.client_order_id for r in view.orders] == ["old", "eth", "other", "new"]
    assert view.unreadable == ["broken"]
    assert view.orders[0].age_ms == 5_000
    only = views.orders_view(records, 6_000, account="default", symbol="BTCUSDT",
                             state=OrderState.PENDING_SUBMIT)
    assert [r.client_order_id for r in only.orders] == ["new"]
    text = views.render_orders(only)
    assert text.splitlines()[0].split() == ["cid", "account", "symbol", "side", "type", "qty",
                                            "filled", "avg", "price", "state", "age"]
    assert text.splitlines()[1].split() == ["new", "default", "BTCUSDT", "buy", "limit", "0.5",
                                            "0", "-", "pending_submit", "1s"]
    decoded = msgspec.json.decode(encode(only))
    assert decoded["orders"][0]["quantity"] == "0.5"
    assert decoded["orders"][0]["average_price"] is None


def test_positions_split_their_key_on_the_first_colon_and_value_at_the_reference() -> None:
    btc = apply_fill(Position(account="default", symbol="BTCUSDT"), Side.BUY,
                     Decimal("0.5"), Decimal("50000"), Decimal("2.5"))
    odd = apply_fill(Position(account="default", symbol="X:Y"), Side.SELL,
                     Decimal("3"), Decimal("7"))
    raw = {"default:BTCUSDT": encode(btc), "default:X:Y": encode(odd),
           "acct2:BTCUSDT": encode(Position(account="acct2", symbol="BTCUSDT")),
           "default:BAD": b"nope"}
    prices = {("default", "BTCUSDT"): Decimal("51000")}
    view = views.positions_view(raw, "9-0", lambda a, s: prices.get((a, s)),
                                account="default")
    assert [(r.account, r.symbol) for r in view.positions] == [
        ("default", "BTCUSDT"), ("default", "X:Y")]
    assert view.unreadable == ["default:BAD"]
    first, second = view.positions
    assert first.unrealized_pnl == unrealized(btc, Decimal("51000")) == Decimal("500")
    assert second.reference_price is None and second.unrealized_pnl is None
    lines = views.render_positions(view).splitlines()
    assert lines[1].split() == ["default", "BTCUSDT", "0.5", "50000", "0", "2.5", "51000", "500.0"]
    assert lines[2].split() == ["default", "X:Y", "-3", "7", "0", "0", "-", "-"]
    decoded = msgspec.json.decode(encode(view))
    assert decoded["cursor"] == "9-0"
    assert decoded["positions"][1]["quantity"] == "-3"
    assert decoded["positions"][1]["unrealized_pnl"] is None


def test_info_lists_the_group_its_consumers_and_the_live_workers() -> None:
    group = {"name": b"executors", "pending": 2, "lag": 5, "last-delivered-id": b"7-0"}
    consumers = [{"name": b"w1", "pending": 2, "idle": 1_500}, {"name": b"gone", "idle": 9}]
    row = views.group_row("executors", group, consumers, [True, False])
    assert row.consumers == [views.ConsumerRow(name="w1", pending=2, idle_ms=1_500, alive=True),
                             views.ConsumerRow(name="gone", pending=0, idle_ms=9, alive=False)]
    view = views.InfoView(
        streams={"orders:pending": 10, "orders:events": 40}, group=row,
        workers=[WorkerInfo(consumer="w1", host="h", pid=42, version="0.1.0",
                            started_at=1_000)],
        unreadable_workers=[], last_event_id="40-0", positions_cursor="38-0",
        events_after_cursor=2)
    text = views.render_info(view, 61_000)
    assert "group executors: lag 5, pending 2, last delivered 7-0" in text
    lines = text.splitlines()
    assert ["w1", "2", "1s", "yes"] in [line.split() for line in lines]
    assert ["gone", "0", "9ms", "no"] in [line.split() for line in lines]
    assert ["w1", "h", "42", "0.1.0", "-", "1m"] in [line.split() for line in lines]
    assert ("positions cursor 38-0, last event 40-0, 2 events entries after the cursor"
            in lines)
    assert lines[-1] == "trading: all active"
    view.trading = {"global": "halted", "a": "reducing"}
    view.breakers = {"a": {"state": "open", "trips": "3", "consecutive": "4"}}
    lines = views.render_info(view, 61_000).splitlines()
    assert "trading: a reducing, global halted" in lines
    assert ["a", "open", "3", "4"] in [line.split() for line in lines]
    no_group = msgspec.structs.replace(view, group=None, events_after_cursor=None,
                                       positions_cursor=None)
    assert "group: none yet" in views.render_info(no_group, 0)
    assert msgspec.json.decode(encode(view))["group"]["lag"] == 5


def test_the_replay_summary_counts_and_lists_the_first_differences() -> None:
    diffs = [Difference(subject=Subject.ORDER, key=f"c{i}", field="state", replayed="filled",
                        stored="accepted") for i in range(3)]
    diffs.append(Difference(subject=Subject.LOG, key="c9", field="seq", replayed="4",
                            stored="6", entry_id="12-0"))
    report = Report(ok=False, events=40, last_event_id="40-0", orders=9, stored_orders=8,
                    open_orders=2, expired_records=1, in_flight=["c7"], positions=2,
                    positions_cursor="38-0", differences=diffs)
    lines = views.render_report(report, limit=2).splitlines()
    assert lines[:5] == [
        "replayed 40 events (last 40-0): 9 orders; 2 positions up to 38-0",
        "stored: 8 order records, 2 open",
        "1 finished orders past their record TTL (expected, not a difference)",
        "1 orders written during the replay, not compared: c7",
        "4 differences, the first 2:",
    ]
    assert [line.split() for line in lines[5:]] == [
        ["subject", "key", "field", "events", "stored", "entry"],
        ["order", "c0", "state", "filled", "accepted", "-"],
        ["order", "c1", "state", "filled", "accepted", "-"],
    ]
    every = views.render_report(report, limit=20).splitlines()
    assert every[4] == "4 differences:"
    assert every[-1].split() == ["log", "c9", "seq", "4", "6", "12-0"]
    clean = msgspec.structs.replace(report, ok=True, differences=[], expired_records=0,
                                    in_flight=[])
    assert views.render_report(clean, 20).splitlines()[-1] == "no difference"


def test_an_emulated_order_says_so_in_the_list() -> None:
    data = msgspec.json.decode(record("trail", "default", "BTCUSDT", 1_000,
                                      OrderState.SUBMITTED))
    data["emulated"] = True
    view = views.orders_view({"trail": msgspec.json.encode(data)}, 2_000)
    assert view.orders[0].emulated
    row = views.render_orders(view).splitlines()[1].split()
    assert row[4:6] == ["limit", "(emulated)"]
    assert not views.orders_view({"plain": record("plain", "default", "BTCUSDT", 1_000)},
                                 2_000).orders[0].emulated


def test_a_list_entry_shows_its_levels_and_an_exit_its_entry() -> None:
    entry = OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                      quantity=WireDecimal("1"), take_profit=WireDecimal("51000"),
                      stop_loss=WireDecimal("49000"), oto_trigger=OtoTrigger.PARTIAL)
    exit_ = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL, type=OrderType.OCO,
                      quantity=WireDecimal("1"), price=WireDecimal("51000"),
                      stop_price=WireDecimal("49000"), reduce_only=True,
                      metadata={"list_id": "E", "exit": 1})
    records = {cid: encode(new_order(cid, "1-0", spec, Context(now=at, worker="w"))[0])
               for cid, spec, at in (("E", entry, 1), ("E-x1", exit_, 2))}
    lines = views.render_orders(views.orders_view(records, 3)).splitlines()
    assert "market (tp 51000 sl 49000, partial)" in lines[1]
    assert "oco (exit of E)" in lines[2]


def test_an_algorithms_parent_shows_its_schedule_and_a_child_its_slice() -> None:
    parent = OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                       quantity=WireDecimal("1"),
                       algo=Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6))
    child = OrderSpec(account="a", symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                      quantity=WireDecimal("0.2"), metadata={"algo_id": "T", "slice": 2})
    records = {cid: encode(new_order(cid, "1-0", spec, Context(now=at, worker="w"))[0])
               for cid, spec, at in (("T", parent, 1), ("T-E3", child, 2))}
    lines = views.render_orders(views.orders_view(records, 3)).splitlines()
    assert "market (twap, 6 slices over 60 s)" in lines[1]
    assert "market (slice 3 of T)" in lines[2]
