"""Replay: rebuild every order record and every position from ``<prefix>:events`` alone, and
list where the stored state differs from them.

Pure: log entries go in (in stream order), a snapshot of what is stored goes in, a
``Report`` comes out; the Redis reads are in snapshot.py, the command in commands.py.

Orders are rebuilt with the worker's own functions (``order.add_fill``,
``order.transition``), so replay follows the worker's rules: the same state table, the same
running totals, the same rounding of the average price. Each rebuilt event is also compared
with the logged one, so a log that contradicts itself (a gap in ``seq``, an illegal
transition, running totals that do not add up) is reported instead of silently followed.

Positions are the fold, in stream order, of every fill event through
``positions.apply_fill``, up to the projector's cursor: a projector behind the log is not a
difference.

A log trimmed by retention (retention.py) starts after the oldest orders: an order whose
history begins before the log's first entry cannot be rebuilt and is counted, not compared
(its fills' side then comes from its stored record); positions start from the checkpoint
the trim keeps (the positions as of an entry the log was never trimmed past) and fold the
fills after it.
"""

from __future__ import annotations

import decimal
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from producer.contract import Event, Fill, OrderState, Side, decimal_text, decode_events, encode

from ..infra.store import decode_order
from ..infra.streams import StreamId, parse_stream_id
from ..model.order import Context, Order, add_fill, set_totals, transition
from ..model.positions import Position, apply_trade, decode_position, position_key
from ..model.states import IllegalTransition, is_terminal

# Redis expires a finished order's record on its own clock, PEXPIRE'd when the worker wrote
# the final state; the worker's and replay's clocks may disagree by this much.
CLOCK_SLACK_MS = 60_000

class Subject(enum.StrEnum):
    ORDER = "order"  # an order's stored record, or the hash fields beside it
    OPEN = "open"  # membership of <prefix>:open
    POSITION = "position"  # an entry of <prefix>:positions
    LOG = "log"  # the event log contradicts itself


class Difference(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One disagreement. ``replayed`` is what the events say, ``stored`` what Redis holds;
    for ``log`` they are what the rebuild expected and what the log entry says. None means
    absent."""

    subject: Subject
    key: str  # client order id, or "<account>:<symbol>" for a position
    field: str
    replayed: str | None
    stored: str | None
    entry_id: str | None = None  # the events entry, for a log difference


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, msgspec.Struct):
        return encode(value).decode()
    if isinstance(value, dict):  # per-asset amounts
        return ", ".join(f"{k} {_text(v)}" for k, v in sorted(value.items())) or "none"
    return str(value)


def _plain_sum(order: Order) -> Decimal:
    total = Decimal(0)
    for f in order.fills:
        total = _SUM.add(total, f.commission)
    return total


_SUM = decimal.Context(prec=200)


def _same(a: object, b: object) -> bool:
    # Decimals compare by value: "0.010" and "0.01" are one quantity.
    return bool(a == b)


class Fold:
    """The state the events describe, built one entry at a time."""

    def __init__(self, quote_assets: Mapping[tuple[str, str], str] | None = None,
                 positions_until: str | None = None, *, trimmed_before: str | None = None,
                 base: Mapping[str, bytes] | None = None, base_cursor: str | None = None,
                 sides: Mapping[str, Side] | None = None,
                 base_assets: Mapping[tuple[str, str], str] | None = None) -> None:
        """``trimmed_before``: the log may lack the entries before this id (retention);
        then ``base`` (positions as of ``base_cursor``) is where the positions start, and
        ``sides`` (client id -> side, from the stored records) gives the side of the fills
        of orders whose created event is gone."""
        self.quote_assets = quote_assets or {}
        self.base_assets = base_assets or {}
        self.orders: dict[str, Order] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.problems: list[Difference] = []
        self.events = 0
        self.last_id: str | None = None
        self._until = None if positions_until is None else parse_stream_id(positions_until)
        self.trimmed_before = trimmed_before
        self.partial: set[str] = set()  # orders whose history starts before the log
        self.sides = sides or {}
        self._after: StreamId | None = None  # fills folded: those after this entry
        # Positions can be checked: a whole log, or a trimmed one with its checkpoint.
        self.positions_checked = trimmed_before is None or base_cursor is not None
        if trimmed_before is not None and base_cursor is not None:
            self._after = parse_stream_id(base_cursor)
            for raw in (base or {}).values():
                position = decode_position(raw)
                self.positions[(position.account, position.symbol)] = position

    def add(self, entry_id: str, data: bytes | str) -> None:
        """Fold one entry: its one event, or the several of one write (event v2)."""
        self.last_id = entry_id
        try:
            events = decode_events(data)
        except msgspec.DecodeError as exc:
            self.events += 1
            self._problem(entry_id, entry_id, "data", "an event", f"undecodable: {exc}")
            return
        for event in events:
            self.events += 1
            self._add(entry_id, event)

    def _add(self, entry_id: str, event: Event) -> None:
        order = self._order(entry_id, event)
        at = parse_stream_id(entry_id) if event.fill is not None else None
        if (at is not None and event.fill is not None and self._until is not None
                and at <= self._until and (self._after is None or at > self._after)):
            side = order.spec.side if order is not None else self.sides.get(
                event.client_order_id)
            if side is None:
                if order is None and event.client_order_id in self.partial:
                    self._problem(entry_id, event.client_order_id, "side",
                                  "a stored record to take the side from", None)
            else:
                self._position(entry_id, event.account, event.symbol, side, event.fill)

    def _problem(self, entry_id: str, key: str, name: str, expected: object,
                 logged: object) -> None:
        self.problems.append(Difference(subject=Subject.LOG, key=key, field=name,
                                        replayed=_text(expected), stored=_text(logged),
                                        entry_id=entry_id))

    def _order(self, entry_id: str, event: Event) -> Order | None:
        cid = event.client_order_id
        order = self.orders.get(cid)
        if event.state is OrderState.CREATED:
            return self._created(entry_id, event, order)
        if order is None:
            if self.trimmed_before is not None:
                self.partial.add(cid)  # its start was trimmed: counted, not rebuilt
                return None
            # Without the created event there is no spec (side, quantity) to rebuild from.
            self._problem(entry_id, cid, "created", "a created event first",
                          f"{event.state} at seq {event.seq}")
            return None
        if event.seq <= order.seq:
            self._problem(entry_id, cid, "seq", order.seq + 1, event.seq)
            return order  # a repeat of an event already applied: applied once
        if event.seq > order.seq + 1:
            self._problem(entry_id, cid, "seq", order.seq + 1, event.seq)
            order.seq = event.seq - 1  # follow the log past the gap
        self._apply(entry_id, order, event)
        return order

    def _created(self, entry_id: str, event: Event, order: Order | None) -> Order | None:
        cid = event.client_order_id
        if order is not None:
            self._problem(entry_id, cid, "created", "one created event", "another")
            return order
        if event.order is None:
            self._problem(entry_id, cid, "order", "the order's parameters", None)
            return None
        if event.seq != 1:
            self._problem(entry_id, cid, "seq", 1, event.seq)
        # As order.new_order builds it (the unit tests hold the two together).
        order = Order(client_order_id=cid, request_id=event.request_id or "", spec=event.order,
                      state=OrderState.CREATED, seq=event.seq, created_at=event.at,
                      updated_at=event.at, worker=event.worker)
        self.orders[cid] = order
        return order

    def _apply(self, entry_id: str, order: Order, event: Event) -> None:
        cid = order.client_order_id
        # apply_report sets the broker's id before the transitions it causes, so an event
        # carries the id as it was after the change.
        if event.broker_order_id is not None:
            order.broker_order_id = event.broker_order_id
        if event.emulated:
            order.emulated = True
        if event.native_exits:
            order.native_exits = True
        if event.fill is not None:
            try:
                add_fill(order, event.fill)
            except (ValueError, IllegalTransition) as exc:
                self._problem(entry_id, cid, "fill", "a fill the order can take", str(exc))
        elif event.filled_quantity is not None:
            # An algorithm's parent: its children's totals, without fills of its own.
            set_totals(order, event.filled_quantity, event.average_price)
        ctx = Context(now=event.at, worker=event.worker, request_id=event.request_id)
        try:
            rebuilt = transition(order, event.state, ctx, fill=event.fill,
                                 reason_code=event.reason_code, reason=event.reason,
                                 totals=event.filled_quantity is not None)
        except IllegalTransition:
            self._problem(entry_id, cid, "state", f"a state allowed after {order.state}",
                          event.state)
            # The log is what happened: follow it, so later entries are judged from there.
            order.state, order.seq, order.updated_at = event.state, event.seq, event.at
            order.reason_code = event.reason_code or order.reason_code
            order.reason = event.reason or order.reason
            return
        # A fill event written before the per-asset totals: its total was the plain sum of
        # the fills' commissions, whatever their assets.
        legacy = event.fill is not None and event.commissions is None
        for name in Event.__struct_fields__:
            mine, logged = getattr(rebuilt, name), getattr(event, name)
            if legacy and name == "commissions":
                continue
            if legacy and name == "commission":
                mine = _plain_sum(order)
            if not _same(mine, logged):
                self._problem(entry_id, cid, name, mine, logged)

    def _position(self, entry_id: str, account: str, symbol: str, side: Side,
                  fill: Fill) -> None:
        key = (account, symbol)
        held = self.positions.get(key) or Position(account=account, symbol=symbol)
        try:
            self.positions[key] = apply_trade(held, side, fill, self.base_assets.get(key),
                                              self.quote_assets.get(key))
        except ValueError as exc:
            self._problem(entry_id, position_key(*key), "fill",
                          "a fill a position can take", str(exc))


@dataclass(slots=True)
class StoredOrder:
    """The fields of one ``<prefix>:order:<cid>`` hash, raw."""

    state: str | None = None
    seq: str | None = None
    request_id: str | None = None
    record: bytes | None = None


@dataclass(slots=True)
class Stored:
    """What Redis holds, as read by snapshot.py."""

    orders: dict[str, StoredOrder] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    positions: dict[str, bytes] = field(default_factory=dict)  # "<account>:<symbol>" -> JSON
    positions_cursor: str | None = None
    # The retention's checkpoint (positions as of base_cursor) and trim point, if any.
    base: dict[str, bytes] = field(default_factory=dict)
    base_cursor: str | None = None
    trimmed_before: str | None = None


class Report(msgspec.Struct, kw_only=True):
    """What ``orderstream replay --json`` prints."""

    ok: bool
    events: int  # entries read
    last_event_id: str | None
    orders: int  # rebuilt from the events
    stored_orders: int
    open_orders: int
    # Finished orders whose records expired after order_ttl_ms, as they should: not counted.
    expired_records: int
    # Orders written while replay read them: not compared (run again to check them).
    in_flight: list[str]
    positions: int  # rebuilt up to positions_cursor
    positions_cursor: str | None
    differences: list[Difference]
    # The log was trimmed before this id (retention): orders whose history begins before it
    # are counted here, not compared; positions start from the checkpoint.
    log_trimmed_before: str | None = None
    history_trimmed: int = 0
    # False when the log was trimmed without a checkpoint, or while replay read it.
    positions_checked: bool = True


# Compared between a rebuilt order and its stored record.
ORDER_FIELDS = ("state", "seq", "filled_quantity", "average_price", "commission",
                "commissions", "broker_order_id", "request_id")
# The hash fields written beside the record (begin.lua, finish.lua).
_HASH_FIELDS = ("state", "seq", "request_id")


def compare(fold: Fold, stored: Stored, *, now_ms: int, order_ttl_ms: int,
            in_flight: frozenset[str] = frozenset()) -> Report:
    """Every difference between the fold and what is stored. ``fold`` must have been built
    with ``positions_until=stored.positions_cursor``."""
    differences = list(fold.problems)
    expired = trimmed = 0
    cids = sorted((fold.orders.keys() | stored.orders.keys() | stored.open) - in_flight)
    for cid in cids:
        rebuilt, record = fold.orders.get(cid), stored.orders.get(cid)
        if (rebuilt is not None and record is None and is_terminal(rebuilt.state)
                and now_ms - rebuilt.updated_at >= order_ttl_ms - CLOCK_SLACK_MS):
            expired += 1
        elif rebuilt is None and (cid in fold.partial or _before_the_log(fold, record)):
            trimmed += 1
        else:
            differences += _order_differences(cid, rebuilt, record)
        should = _open(rebuilt.state if rebuilt is not None else (
            record.state if record is not None else None))
        if should != (cid in stored.open):
            differences.append(Difference(subject=Subject.OPEN, key=cid, field="member",
                                          replayed=_yes(should), stored=_yes(not should)))
    rebuilt_positions = {position_key(*key): p for key, p in fold.positions.items()}
    for key in sorted(rebuilt_positions.keys() | stored.positions.keys()
                      if fold.positions_checked else ()):
        differences += _position_differences(key, rebuilt_positions.get(key),
                                             stored.positions.get(key))
    return Report(
        ok=not differences, events=fold.events, last_event_id=fold.last_id,
        orders=len(fold.orders), stored_orders=len(stored.orders),
        open_orders=len(stored.open), expired_records=expired, in_flight=sorted(in_flight),
        positions=len(fold.positions), positions_cursor=stored.positions_cursor,
        differences=differences, log_trimmed_before=fold.trimmed_before,
        history_trimmed=trimmed, positions_checked=fold.positions_checked)


def _before_the_log(fold: Fold, stored: StoredOrder | None) -> bool:
    """Whether a stored order without events in the log was created before the log was
    trimmed (its events went with the trim), on the worker's clock give or take."""
    if fold.trimmed_before is None or stored is None or stored.record is None:
        return False
    try:
        created = decode_order(stored.record).created_at
    except msgspec.DecodeError:
        return False
    return created < parse_stream_id(fold.trimmed_before)[0] + CLOCK_SLACK_MS


def _open(state: str | None) -> bool:
    """Whether an order in ``state`` belongs in the open set."""
    return state in _STATES and not is_terminal(OrderState(state))


_STATES = frozenset(OrderState)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _order_differences(cid: str, rebuilt: Order | None,
                       stored: StoredOrder | None) -> list[Difference]:
    def diff(name: str, mine: object, theirs: object) -> Difference:
        return Difference(subject=Subject.ORDER, key=cid, field=name, replayed=_text(mine),
                          stored=_text(theirs))

    if rebuilt is None:
        # Stored only (a cid only in the open set is reported there).
        return [] if stored is None else [diff("record", None, stored.state or "present")]
    if stored is None:
        return [diff("record", rebuilt.state, None)]
    out: list[Difference] = []
    if stored.record is None:
        out.append(diff("record", rebuilt.state, None))
    else:
        try:
            record = decode_order(stored.record)
        except msgspec.DecodeError as exc:
            out.append(diff("record", rebuilt.state, f"undecodable: {exc}"))
        else:
            out += [diff(name, getattr(rebuilt, name), getattr(record, name))
                    for name in ORDER_FIELDS
                    if not _same(getattr(rebuilt, name), getattr(record, name))]
    for name in _HASH_FIELDS:
        mine = _text(getattr(rebuilt, name))
        theirs = getattr(stored, name)
        if mine != theirs:
            out.append(diff(f"hash.{name}", mine, theirs))
    return out


def _position_differences(key: str, rebuilt: Position | None,
                          raw: bytes | None) -> list[Difference]:
    def diff(name: str, mine: object, theirs: object) -> Difference:
        return Difference(subject=Subject.POSITION, key=key, field=name,
                          replayed=_text(mine), stored=_text(theirs))

    if rebuilt is None:
        return [diff("position", None, "present")]
    if raw is None:
        return [diff("position", "present", None)]
    try:
        stored = decode_position(raw)
    except msgspec.DecodeError as exc:
        return [diff("position", rebuilt.quantity, f"undecodable: {exc}")]
    return [diff(name, getattr(rebuilt, name), getattr(stored, name))
            for name in Position.__struct_fields__
            if not _same(getattr(rebuilt, name), getattr(stored, name))]

