"""What one batch of stream entries writes to the archive: pure, no SQL and no Redis.

``Entries`` are read from Redis (archiver.py); ``Known`` is what the database already holds
about the orders, fills and positions they touch (store.py reads it inside the batch's
transaction); ``fold`` returns the rows to write. Every event becomes one row (an events
entry holds one, or the several of one write: event v2, numbered by ``entry_index``), and
every result one row, whatever it holds: an entry that does not decode is stored as it was,
with a problem logged, and moves nothing else, so one bad entry never stops the archive.

Orders are kept as their events leave them (a repeated or older ``seq`` changes nothing);
fills are keyed by the broker's trade id, so a fill seen twice is stored and folded once;
positions are the workers' fold (executor/model/positions.py, average cost) over the fills
in log order, and each fill keeps what it realized, for the daily report.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from producer.contract import (
    Event,
    Fill,
    Result,
    Side,
    decode_event,
    decode_result,
    split_events,
    to_builtins,
    wire,
    zero,
)

from ..infra.streams import parse_stream_id
from ..model.positions import Position, apply_trade

log = logging.getLogger(__name__)

# A position's amounts run past the default context's 28 digits (a 40-digit cost basis):
# what a fill realized is their exact difference, or an error, never a rounded one.
_EXACT = decimal.Context(prec=200, traps=[decimal.Inexact, decimal.InvalidOperation])

EVENTS, COMPLETED, FAILED, AUDIT = "events", "completed", "failed", "audit"
STREAMS = (EVENTS, COMPLETED, FAILED, AUDIT)
RESULTS = (COMPLETED, FAILED)

Row = dict[str, Any]
FillKey = tuple[str, str, str]  # account, symbol, fill id
PositionKey = tuple[str, str]  # account, symbol
Assets = Mapping[PositionKey, tuple[str | None, str | None]]  # (base, quote) per symbol


@dataclass(slots=True)
class Entry:
    stream: str  # EVENTS, COMPLETED or FAILED
    entry_id: str
    fields: Mapping[bytes, bytes]


class Action(msgspec.Struct, kw_only=True):
    """An entry of the audit stream as the archive reads it (infra/audit.py writes
    them): fields it does not know are kept in the entry's JSON, not refused."""

    kind: str = ""
    scope: str = ""
    at: int = 0
    by: str = ""
    details: dict[str, Any] = {}


_action = msgspec.json.Decoder(Action)


@dataclass(slots=True)
class EventIn:
    """One event of an events entry: its place in the entry, its JSON as the entry holds it,
    and what it decodes to (None: it does not)."""

    entry: Entry
    index: int
    data: bytes
    event: Event | None


@dataclass(slots=True)
class Decoded:
    """A batch's entries, decoded once: what the store must look up before folding."""

    source: str
    entries: list[Entry]
    events: list[EventIn]
    results: list[tuple[Entry, Result | None]]
    actions: list[tuple[Entry, Action | None]]

    def order_ids(self) -> set[str]:
        return {e.event.client_order_id for e in self.events if e.event is not None}

    def fill_keys(self) -> set[FillKey]:
        return {(e.account, e.symbol, e.fill.fill_id) for e in
                (one.event for one in self.events) if e is not None and e.fill is not None}

    def position_keys(self) -> set[PositionKey]:
        return {(account, symbol) for account, symbol, _ in self.fill_keys()}

    def last_ids(self) -> dict[str, str]:
        """Per stream, the last entry of the batch (entries come in stream order)."""
        return {entry.stream: entry.entry_id for entry in self.entries}


@dataclass(slots=True)
class Known:
    orders: dict[str, Row] = field(default_factory=dict)  # client id -> stored row
    fills: set[FillKey] = field(default_factory=set)  # of this batch's, those stored
    positions: dict[PositionKey, Position] = field(default_factory=dict)


@dataclass(slots=True)
class Writes:
    events: list[Row]
    results: list[Row]
    orders: list[Row]
    fills: list[Row]
    positions: list[Row]
    actions: list[Row]
    risk_limits: list[Row]
    problems: list[str]


def decode(source: str, entries: Sequence[Entry]) -> Decoded:
    events: list[EventIn] = []
    results: list[tuple[Entry, Result | None]] = []
    actions: list[tuple[Entry, Action | None]] = []
    for entry in entries:
        data = entry.fields.get(b"data", b"")
        if entry.stream == EVENTS:
            events += _events_of(entry, data)
        elif entry.stream == AUDIT:
            actions.append((entry, _decoded(_action.decode, data)))
        else:
            results.append((entry, _decoded(decode_result, data)))
    return Decoded(source, list(entries), events, results, actions)


def _events_of(entry: Entry, data: bytes) -> list[EventIn]:
    try:
        parts = split_events(data)
    except (msgspec.DecodeError, ValueError):
        return [EventIn(entry, 0, data, None)]
    return [EventIn(entry, i, part, _decoded(decode_event, part))
            for i, part in enumerate(parts)]


T = TypeVar("T")


def _decoded(decode: Callable[[bytes], T], data: bytes) -> T | None:
    try:
        return decode(data)
    except (msgspec.DecodeError, ValueError):
        return None


def fold(batch: Decoded, known: Known, assets: Assets) -> Writes:
    orders = {cid: dict(row) for cid, row in known.orders.items()}
    touched: dict[str, Row] = {}
    seen = set(known.fills)
    positions = dict(known.positions)
    moved: dict[PositionKey, str] = {}
    fill_rows: list[Row] = []
    event_rows: list[Row] = []
    problems: list[str] = []
    for one in batch.events:
        event_rows.append(_event_row(batch.source, one))
        event = one.event
        if event is None:
            problems.append(f"events entry {one.entry.entry_id} (event {one.index}) does not "
                            "decode: stored as it is")
            continue
        row = _order(batch.source, orders, event)
        if row is not None:
            touched[event.client_order_id] = row
        fill = event.fill
        if fill is None:
            continue
        key = (event.account, event.symbol, fill.fill_id)
        if key in seen:
            continue
        seen.add(key)
        side = _side(orders.get(event.client_order_id))
        realized = None
        if side is not None:
            where = (event.account, event.symbol)
            held = positions.get(where) or Position(account=event.account, symbol=event.symbol)
            base, quote = assets.get(where, (None, None))
            try:
                after = apply_trade(held, side, fill, base, quote)
            except ValueError as exc:
                problems.append(f"fill {fill.fill_id} of {event.client_order_id} moves no "
                                f"position: {exc}")
            else:
                positions[where] = after
                moved[where] = one.entry.entry_id
                realized = _EXACT.subtract(after.realized_pnl, held.realized_pnl)
        else:
            problems.append(f"fill {fill.fill_id} of {event.client_order_id}: the order's "
                            "side is unknown (its created event is not archived), so no "
                            "position moves")
        fill_rows.append(_fill_row(batch.source, one.entry.entry_id, event, fill, side,
                                   realized))
    return Writes(
        events=event_rows,
        results=[_result_row(batch.source, entry, result) for entry, result in batch.results],
        orders=list(touched.values()),
        fills=fill_rows,
        positions=[_position_row(batch.source, positions[where], at)
                   for where, at in moved.items()],
        actions=[_action_row(batch.source, entry, action) for entry, action in batch.actions],
        risk_limits=_risk_limits(batch.source, batch.actions),
        problems=problems + [f"{entry.stream} entry {entry.entry_id} does not decode: stored "
                             "as it is" for entry, decoded in [*batch.results, *batch.actions]
                             if decoded is None],
    )


def _side(row: Row | None) -> Side | None:
    side = None if row is None else row.get("side")
    return None if side is None else Side(side)


def _order(source: str, orders: dict[str, Row], event: Event) -> Row | None:
    cid = event.client_order_id
    row = orders.get(cid)
    if row is not None and event.seq <= row["seq"]:
        return None  # a repeat of what the row already holds
    if row is None:
        row = _new_order(source, event)
        orders[cid] = row
    row.update(state=str(event.state), seq=event.seq, updated_at=event.at)
    if event.broker_order_id is not None:
        row["broker_order_id"] = event.broker_order_id
    if event.filled_quantity is not None:
        # Fill events (and an algorithm's parent's progress) carry the order's running
        # totals after the change.
        if event.filled_quantity is not None:
            row["filled_quantity"] = event.filled_quantity
        row["average_price"] = event.average_price
        row["commission"] = event.commission
        if event.commissions is not None:
            row["commissions"] = _json(event.commissions)
    if event.reason_code is not None:
        row["reason_code"], row["reason"] = event.reason_code, event.reason
    return row


def _new_order(source: str, event: Event) -> Row:
    spec = event.order
    row: Row = {
        "source": source, "client_order_id": event.client_order_id,
        "request_id": event.request_id, "account": event.account, "symbol": event.symbol,
        "side": None, "type": None, "quantity": None, "quote_quantity": None, "price": None,
        "stop_price": None, "time_in_force": None, "strategy_id": None, "signal_id": None,
        "params": None, "state": str(event.state), "seq": event.seq, "broker_order_id": None,
        "filled_quantity": zero(), "average_price": None, "commission": None,
        "commissions": None, "reason_code": None, "reason": None,
        "created_at": event.at, "updated_at": event.at,
    }
    if spec is not None:
        row.update(
            account=spec.account, symbol=spec.symbol, side=str(spec.side), type=str(spec.type),
            quantity=spec.quantity, quote_quantity=spec.quote_quantity, price=spec.price,
            stop_price=spec.stop_price, time_in_force=str(spec.time_in_force),
            strategy_id=spec.strategy_id, signal_id=spec.signal_id, params=_json(spec))
    return row


def _event_row(source: str, one: EventIn) -> Row:
    entry, event = one.entry, one.event
    ms, seq = parse_stream_id(entry.entry_id)
    data = one.data.decode("utf-8", "replace")
    cid = entry.fields.get(b"client_order_id", b"").decode("utf-8", "replace")
    row: Row = {"source": source, "entry_id": entry.entry_id, "entry_ms": ms, "entry_seq": seq,
                "entry_index": one.index, "client_order_id": cid, "seq": None, "state": None,
                "prev_state": None, "account": None, "symbol": None, "at": None, "data": data}
    if event is not None:
        row.update(client_order_id=event.client_order_id, seq=event.seq, state=str(event.state),
                   prev_state=None if event.prev_state is None else str(event.prev_state),
                   account=event.account or None, symbol=event.symbol or None, at=event.at)
    return row


def _result_row(source: str, entry: Entry, result: Result | None) -> Row:
    data = entry.fields.get(b"data", b"").decode("utf-8", "replace")
    row: Row = {"source": source, "stream": entry.stream, "entry_id": entry.entry_id,
                "request_id": None, "client_order_id": None, "action": None, "status": None,
                "reason_code": None, "account": None, "symbol": None, "completed_at": None,
                "data": data}
    if result is not None:
        row.update(request_id=result.request_id, client_order_id=result.client_order_id,
                   action=str(result.action), status=str(result.status),
                   reason_code=result.reason_code, account=result.account,
                   symbol=result.symbol, completed_at=result.completed_at)
    else:
        cid = entry.fields.get(b"client_order_id")
        row["client_order_id"] = None if cid is None else cid.decode("utf-8", "replace")
    return row


def _action_row(source: str, entry: Entry, action: Action | None) -> Row:
    row: Row = {"source": source, "entry_id": entry.entry_id, "kind": None, "scope": None,
                "at": None, "by": None, "details": None, "data": _text(entry, b"data")}
    if action is not None:
        row.update(kind=action.kind, scope=action.scope, at=action.at, by=action.by,
                   details=_json(action.details))
    return row


def _risk_limits(source: str, actions: Sequence[tuple[Entry, Action | None]]) -> list[Row]:
    """The run-time limits each ``risk_set`` left its account with, the batch's latest."""
    latest: dict[str, Row] = {}
    for entry, action in actions:
        if action is None or action.kind != "risk_set" or "limits" not in action.details:
            continue
        ms, seq = parse_stream_id(entry.entry_id)
        latest[action.scope] = {
            "source": source, "account": action.scope,
            "limits": _json(action.details["limits"]), "set_at": action.at,
            "set_by": action.by, "entry_ms": ms, "entry_seq": seq}
    return list(latest.values())


def _text(entry: Entry, name: bytes) -> str:
    return entry.fields.get(name, b"").decode("utf-8", "replace")


def _fill_row(source: str, entry_id: str, event: Event, fill: Fill, side: Side | None,
              realized: Any) -> Row:
    return {"account": event.account, "symbol": event.symbol, "fill_id": fill.fill_id,
            "source": source, "client_order_id": event.client_order_id,
            "side": None if side is None else str(side), "price": fill.price,
            "quantity": fill.quantity, "commission": fill.commission,
            "commission_asset": fill.commission_asset, "liquidity": fill.liquidity,
            "at": fill.at or event.at, "entry_id": entry_id, "realized_pnl": realized}


def _position_row(source: str, position: Position, entry_id: str) -> Row:
    return {"source": source, "account": position.account, "symbol": position.symbol,
            "quantity": position.quantity, "average_price": position.average_price,
            "cost_basis": position.cost_basis, "realized_pnl": position.realized_pnl,
            "commission": position.commission,
            "other_commissions": _json(position.other_commissions),
            # When the event that last moved it was written (its entry id's milliseconds).
            "updated_at": parse_stream_id(entry_id)[0], "entry_id": entry_id}


def _json(value: object) -> str:
    return msgspec.json.encode(to_builtins(value)).decode()


def position_from_row(row: Mapping[str, Any]) -> Position:
    others = msgspec.json.decode(row["other_commissions"] or "{}")
    return Position(account=row["account"], symbol=row["symbol"],
                    quantity=wire(row["quantity"]), average_price=wire(row["average_price"]),
                    cost_basis=wire(row["cost_basis"]), realized_pnl=wire(row["realized_pnl"]),
                    commission=wire(row["commission"]),
                    other_commissions={k: wire(Decimal(v)) for k, v in others.items()})
