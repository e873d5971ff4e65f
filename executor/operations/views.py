"""The operator views (``orderstream orders``, ``positions``, ``info``): what each one shows,
as msgspec structs (their ``--json``) built from what snapshot.py read, and the text a
person reads, replay's summary included. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import (
    AlgoStrategy,
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    Side,
    WireDecimal,
    decimal_text,
    wire,
    wire_opt,
)
from producer.replies import text
from producer.validation import algo_slices, algo_window

from ..background.liveness import WorkerInfo
from ..infra.store import decode_order
from ..model.positions import decode_position, split_key, unrealized
from . import render
from .replay import Report

# -- replay ----------------------------------------------------------------------------------


def render_report(report: Report, limit: int) -> str:
    lines = [
        f"replayed {report.events} events (last {render.cell(report.last_event_id)}): "
        f"{report.orders} orders; {report.positions} positions up to "
        f"{render.cell(report.positions_cursor)}",
        f"stored: {report.stored_orders} order records, {report.open_orders} open",
    ]
    if report.expired_records:
        lines.append(f"{report.expired_records} finished orders past their record TTL "
                     "(expected, not a difference)")
    if report.log_trimmed_before is not None:
        lines.append(f"the log was trimmed before {report.log_trimmed_before} (retention): "
                     f"{report.history_trimmed} orders began before it, not compared; "
                     "positions from the checkpoint it keeps")
    if not report.positions_checked:
        lines.append("positions not compared: the log was trimmed while replay read it, or "
                     "without a checkpoint (run it again)")
    if report.in_flight:
        lines.append(f"{len(report.in_flight)} orders written during the replay, not "
                     f"compared: {', '.join(report.in_flight[:limit])}")
    if report.ok:
        lines.append("no difference")
        return "\n".join(lines)
    shown = report.differences[:limit]
    count = len(report.differences)
    lines.append(f"{count} difference{'s' if count > 1 else ''}"
                 + (f", the first {len(shown)}:" if len(shown) < count else ":"))
    lines.append(render.table(
        ("subject", "key", "field", "events", "stored", "entry"),
        [(d.subject, d.key, d.field, d.replayed, d.stored, d.entry_id) for d in shown]))
    return "\n".join(lines)


# -- orders ----------------------------------------------------------------------------------


class OrderRow(msgspec.Struct, kw_only=True):
    client_order_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    quantity: WireDecimal | None  # None: a market order by quote_quantity
    filled_quantity: WireDecimal
    average_price: WireDecimal | None
    state: OrderState
    created_at: int  # epoch ms
    age_ms: int
    emulated: bool = False  # held (or released) by our emulator: no native order at its broker
    # A contingent list's entry: its exits' levels ("tp 51000 sl 49000"); an exit: "exit of
    # <entry>" (model/lists.py); an algorithm's parent: "twap, 6 slices over 60 s"; its
    # child: "slice 3 of <parent>" (model/schedules.py). Empty otherwise.
    contingent: str = ""


class OrdersView(msgspec.Struct, kw_only=True):
    orders: list[OrderRow]
    unreadable: list[str] = []  # client ids whose record could not be decoded


def orders_view(records: Mapping[str, bytes | None], now_ms: int, *, account: str | None = None,
                symbol: str | None = None, state: OrderState | None = None) -> OrdersView:
    """The orders among ``records`` (cid -> record JSON) that pass the filters, oldest
    first."""
    rows: list[OrderRow] = []
    unreadable: list[str] = []
    for cid, data in records.items():
        if data is None:
            continue  # finished and expired between listing and reading
        try:
            order = decode_order(data)
        except msgspec.DecodeError:
            unreadable.append(cid)
            continue
        spec = order.spec
        if ((account is not None and spec.account != account)
                or (symbol is not None and spec.symbol != symbol)
                or (state is not None and order.state is not state)):
            continue
        rows.append(OrderRow(
            client_order_id=order.client_order_id, account=spec.account, symbol=spec.symbol,
            side=spec.side, type=spec.type, quantity=spec.quantity,
            filled_quantity=order.filled_quantity, average_price=order.average_price,
            state=order.state, created_at=order.created_at,
            age_ms=max(0, now_ms - order.created_at), emulated=order.emulated,
            contingent=_list_of(spec, order.created_at)))
    rows.sort(key=lambda r: (r.created_at, r.client_order_id))
    return OrdersView(orders=rows, unreadable=sorted(unreadable))


def _list_of(spec: OrderSpec, created_at: int) -> str:
    if spec.algo is not None and spec.algo.strategy == AlgoStrategy.ICEBERG:
        return f"iceberg, {spec.display_quantity} shown at a time (emulated)"
    if spec.algo is not None:
        algo = spec.algo
        n, _ = algo_slices(algo, created_at)
        start, end = algo_window(algo, created_at)
        shown = f"{algo.strategy}, {n} slices over {(end - start) / 1000:g} s"
        if algo.max_participation is not None:
            shown += f", at most {decimal_text(algo.max_participation * 100)}% of the volume"
        return shown
    metadata = spec.metadata or {}
    if isinstance(metadata.get("algo_id"), str):
        return f"slice {metadata.get('slice', 0) + 1} of {metadata['algo_id']}"
    if spec.oto_trigger is not None:
        levels = [f"{name} {value}" for name, value in (("tp", spec.take_profit),
                                                       ("sl", spec.stop_loss)) if value]
        partial = ", partial" if spec.oto_trigger is OtoTrigger.PARTIAL else ""
        return " ".join(levels) + partial
    list_id = metadata.get("list_id")
    return f"exit of {list_id}" if isinstance(list_id, str) else ""


def _type_of(r: OrderRow) -> str:
    notes = [n for n in ("emulated" if r.emulated else "", r.contingent) if n]
    return f"{r.type} ({'; '.join(notes)})" if notes else str(r.type)


def render_orders(view: OrdersView) -> str:
    rows = [(r.client_order_id, r.account, r.symbol, r.side, _type_of(r), r.quantity,
             r.filled_quantity, r.average_price, r.state, render.age(r.age_ms))
            for r in view.orders]
    out = render.table(("cid", "account", "symbol", "side", "type", "qty", "filled",
                        "avg price", "state", "age"), rows, right={5, 6, 7, 9})
    out += f"\n{len(view.orders)} orders"
    if view.unreadable:
        out += f"; unreadable records: {', '.join(view.unreadable)}"
    return out


# -- positions -------------------------------------------------------------------------------


class PositionRow(msgspec.Struct, kw_only=True):
    account: str
    symbol: str
    quantity: WireDecimal
    average_price: WireDecimal
    cost_basis: WireDecimal
    realized_pnl: WireDecimal
    commission: WireDecimal
    reference_price: WireDecimal | None  # None: no reference price known
    unrealized_pnl: WireDecimal | None
    other_commissions: dict[str, WireDecimal] = {}  # fees in other assets (BNB), per asset
    sl_tp: str | None = None  # its stop-loss / take-profit (orderstream sl-tp), described


class PositionsView(msgspec.Struct, kw_only=True):
    positions: list[PositionRow]
    cursor: str | None  # the last events entry the positions include
    unreadable: list[str] = []  # hash fields whose value could not be decoded


def positions_view(raw: Mapping[str, bytes], cursor: str | None,
                   price: Callable[[str, str], Decimal | None], *,
                   account: str | None = None,
                   sl_tp: Mapping[tuple[str, str], str] | None = None) -> PositionsView:
    rows: list[PositionRow] = []
    unreadable: list[str] = []
    for key in sorted(raw):
        owner, symbol = split_key(key)
        if account is not None and owner != account:
            continue
        try:
            p = decode_position(raw[key])
        except msgspec.DecodeError:
            unreadable.append(key)
            continue
        ref = price(owner, symbol)
        rows.append(PositionRow(
            account=owner, symbol=symbol, quantity=p.quantity, average_price=p.average_price,
            cost_basis=p.cost_basis, realized_pnl=p.realized_pnl, commission=p.commission,
            reference_price=wire_opt(ref),
            unrealized_pnl=None if ref is None else wire(unrealized(p, ref)),
            other_commissions=p.other_commissions,
            sl_tp=(sl_tp or {}).get((owner, symbol))))
    return PositionsView(positions=rows, cursor=cursor, unreadable=unreadable)


def render_positions(view: PositionsView) -> str:
    rows = [(r.account, r.symbol, r.quantity, r.average_price, r.realized_pnl,
             " + ".join([render.cell(r.commission)] + [
                 f"{render.cell(v)} {a}" for a, v in sorted(r.other_commissions.items())]),
             r.reference_price, r.unrealized_pnl) for r in view.positions]
    out = render.table(("account", "symbol", "qty", "avg price", "realized", "commission",
                        "ref price", "unrealized"), rows, right=range(2, 8))
    out += f"\n{len(view.positions)} positions, up to events entry {render.cell(view.cursor)}"
    if view.unreadable:
        out += f"; unreadable: {', '.join(view.unreadable)}"
    for r in view.positions:
        if r.sl_tp is not None:
            out += f"\n{r.account} {r.symbol}: {r.sl_tp}"
    return out


# -- info ------------------------------------------------------------------------------------


class ConsumerRow(msgspec.Struct, kw_only=True):
    name: str
    pending: int
    idle_ms: int
    alive: bool  # its heartbeat key exists


class GroupRow(msgspec.Struct, kw_only=True):
    name: str
    pending: int  # delivered, not yet acknowledged
    lag: int | None  # entries not yet delivered; None where Redis cannot tell (< 7.0)
    last_delivered_id: str
    consumers: list[ConsumerRow]


AFTER_CURSOR_CAP = 1_000


class InfoView(msgspec.Struct, kw_only=True):
    streams: dict[str, int]  # stream key -> length
    group: GroupRow | None  # None: no worker has created it yet
    workers: list[WorkerInfo]  # alive (heartbeat keys)
    unreadable_workers: list[str]
    last_event_id: str | None
    positions_cursor: str | None
    # Events entries after the cursor (not yet in the positions), counted up to
    # AFTER_CURSOR_CAP; None when there is no cursor.
    events_after_cursor: int | None
    trading: dict[str, str] = {}  # scope -> trading state as set (absent: active)
    breakers: dict[str, dict[str, str]] = {}  # account -> breaker hash (absent: closed)


def group_row(name: str, group: Mapping[str, Any], consumers: Sequence[Mapping[str, Any]],
              alive: Sequence[bool]) -> GroupRow:
    """From XINFO GROUPS' entry and XINFO CONSUMERS as redis-py returns them."""
    lag = group.get("lag")
    return GroupRow(
        name=name, pending=int(group.get("pending", 0)),
        lag=None if lag is None else int(lag),
        last_delivered_id=text(group.get("last-delivered-id", b"")),
        consumers=[ConsumerRow(name=text(c["name"]), pending=int(c.get("pending", 0)),
                               idle_ms=int(c.get("idle", 0)), alive=up)
                   for c, up in zip(consumers, alive, strict=True)])


def render_info(view: InfoView, now_ms: int) -> str:
    parts = [render.table(("stream", "length"), sorted(view.streams.items()), right={1})]
    g = view.group
    if g is None:
        parts.append("group: none yet")
    else:
        parts.append(f"group {g.name}: lag {render.cell(g.lag)}, pending {g.pending}, "
                     f"last delivered {g.last_delivered_id}")
        parts.append(render.table(
            ("consumer", "pending", "idle", "alive"),
            [(c.name, c.pending, render.age(c.idle_ms), c.alive) for c in g.consumers],
            right={1, 2}))
    parts.append(render.table(
        ("worker", "host", "pid", "version", "mode", "up"),
        [(w.consumer, w.host, w.pid, w.version, w.mode or "-",
          render.age(now_ms - w.started_at)) for w in view.workers], right={2, 5}))
    if view.unreadable_workers:
        parts.append(f"unreadable heartbeats: {', '.join(view.unreadable_workers)}")
    after = view.events_after_cursor
    behind = "" if after is None else f", {after}{'+' if after >= AFTER_CURSOR_CAP else ''} " \
        "events entries after the cursor"
    parts.append(f"positions cursor {render.cell(view.positions_cursor)}, last event "
                 f"{render.cell(view.last_event_id)}{behind}")
    parts.append("trading: " + (", ".join(f"{scope} {state}" for scope, state in
                                          sorted(view.trading.items())) or "all active"))
    if view.breakers:
        parts.append(render.table(
            ("breaker", "state", "trips", "consecutive failures"),
            [(a, b.get("state", "closed"), b.get("trips", "0"), b.get("consecutive", "0"))
             for a, b in sorted(view.breakers.items())], right={2, 3}))
    return "\n\n".join(parts)
