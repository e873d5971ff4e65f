"""Positions, kept up to date from ``orders:events``: the fold of every fill event, in the
stream's order, through executor/model/positions.py.

One worker at a time projects (a lease, renewed while it works); it reads the events after
the stored cursor in pages, folds their fills, and writes the positions it moved together
with the new cursor in one script that re-checks the lease and the cursor (infra/lua/positions.lua),
so each fill counts exactly once whoever projects it, and a worker that dies mid-fold
leaves nothing half-applied. Positions lag the events by about ``interval_ms``;
``orderstream replay`` rebuilds them from the events and compares.

A fill event names its order's account and symbol but not its side; the side comes from the
order's ``created`` event, remembered while the order is open, or from its record when the
projector starts mid-way through an order's life.

The same script moves the pre-trade risk state the events change (safety/risk/fills.py):
reservations shrink by fills and go when orders end, the day's realized PnL follows the
fills, so exposure (positions + reservations) never counts a fill twice or not at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.contract import (
    TERMINAL_STATES,
    EpochMs,
    Fill,
    OrderState,
    Side,
    decoder,
    encode,
)
from producer.keys import Keys
from producer.replies import text

from ..infra.lease import Lease
from ..infra.logs import about
from ..infra.store import decode_order
from ..infra.tasks import Slices
from ..model.positions import Position, decode_position, fold_fill, position_key
from ..model.states import is_terminal
from ..safety.risk.book import day_id
from ..safety.risk.fills import RiskFold
from ..safety.risk.state import (
    DAY_TTL_MS,
    Page,
    day_key,
    decode_reservation,
    open_key,
    parse_sums,
    sums_key,
)

log = logging.getLogger(__name__)


class _Spec(msgspec.Struct):
    side: Side


class Folded(msgspec.Struct, gc=False):
    """What the fold reads of a fill or end event: an Event without the order's running
    totals and the rest, which are most of the cost of decoding one."""

    client_order_id: str
    state: OrderState
    at: EpochMs
    request_id: str | None = None
    account: str = ""
    symbol: str = ""
    fill: Fill | None = None
    order: _Spec | None = None  # on a created event


# An entry holds one event (an object) or a write's several (an array: event v2).
_event_decoder = decoder(Folded | list[Folded])
# The events the fold needs in full: fills, and the ends of orders (their risk reservation
# goes). A key appears in the JSON as `"name":`; the same text inside a string value is
# escaped (`\"name\"`), so this never misses one, at worst decodes more. Most events are
# neither, and decoding every one was a visible share of a worker's CPU per order.
_FULL = re.compile(rb'"fill":|"state":"(?:' + b"|".join(
    sorted(s.value.encode() for s in TERMINAL_STATES)) + rb')"')


class _Created(msgspec.Struct):
    """What the fold needs of a ``created`` event: its order's side (fill events do not
    carry it). A view that skips the amounts is a fraction of the cost of a whole Event."""

    client_order_id: str
    order: _Spec | None = None


_created_decoder = msgspec.json.Decoder(_Created | list[_Created])
# (account, symbol) -> its quote asset, or its base asset; asked for every fill, so cheap
# ones (the worker's are Services.quote_asset and Services.base_asset, which remember them).
QuoteAsset = Callable[[str, str], str | None]
BaseAsset = Callable[[str, str], str | None]
# Told of the fills of a page once its fold is written: (account, side, fill, quote asset)
# each. Every fill is folded exactly once fleet-wide, so counters fed from here add up
# across workers.
OnFills = Callable[[list[tuple[str, Side, Fill, str | None]]], None]
# Told, before a page's fills are folded, the (account, symbol) pairs they name: where the
# assets come from Redis rather than from brokers (projection.py), the time to learn them.
Learn = Callable[[set[tuple[str, str]]], Awaitable[None]]


class PageWatcher(Protocol):
    """Told of each page's accounts before its write, and of what it wrote of each once it
    is over (None: not written)."""

    def moving(self, accounts: Iterable[str]) -> None: ...

    def paged(self, pages: Mapping[str, Page | None]) -> None: ...


def _unknown(account: str, symbol: str) -> None:
    return None


class Projector:
    def __init__(self, redis: aioredis.Redis, keys: Keys, consumer: str, *,
                 quote_asset: QuoteAsset, interval_ms: int = 200, page: int = 500,
                 on_fills: OnFills | None = None, day_offset_ms: int = 0,
                 base_asset: BaseAsset | None = None, learn: Learn | None = None,
                 watcher: PageWatcher | None = None, slices: Slices | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.quote_asset = quote_asset
        # Without it a fee in the base asset cannot be told from a third asset's: the
        # position stays gross (positions.apply_trade).
        self.base_asset: BaseAsset = base_asset or _unknown
        self.interval_s = interval_ms / 1000
        self.lease_ms = max(5_000, 10 * interval_ms)
        self.lease = Lease(redis, keys.positions_lease, consumer)
        self.page = page
        self.day_offset_ms = day_offset_ms  # the risk day's start (risk.day_reset_utc)
        self._sides: dict[str, Side] = {}  # open orders' sides, from their created events
        # The cursor as this worker last wrote it, and when it last renewed the lease: both
        # are re-checked by the write script, so trusting them saves two round trips per
        # page and at worst costs one refused write (after which both are read again).
        self._cursor: str | None = None
        self._held_until = 0.0
        self.on_fills = on_fills
        self.learn = learn
        # Told of the accounts whose risk state (and version) each page moves, before its
        # write, and of what it wrote once it is over (safety/risk/state.py RiskState):
        # this process's checks decide on the state they know without reading it
        # (pipeline/steps/risk.py speculate) only where they know the page too.
        self.watcher = watcher
        # A page's CPU (decoding, folding) is handed back to the request lanes of this
        # event loop every half millisecond, so that a request waits for a slice or two of
        # a page, not for all of it.
        self.slices = slices or Slices()
        # What this process wrote to Keys.assets per position key, and what this page adds.
        self._assets_written: dict[str, bytes] = {}
        self._new_assets: dict[str, bytes] = {}
        # The (base, quote) last met per position key, so that a fill of a known pair
        # encodes nothing (``_new_assets`` already holds it, or ``_assets_written`` does).
        self._assets_of: dict[str, tuple[str | None, str | None]] = {}
        self._folded: list[tuple[str, Side, Fill, str | None]] = []  # this page's fills
        self._write = redis.register_script(
            (resources.files("executor.infra") / "lua" / "positions.lua").read_text())

    async def once(self) -> int:
        """Fold one page of events if this worker holds the lease; returns how many entries
        were consumed (0: nothing new, or another worker projects)."""
        if not await self._hold():
            return 0
        k = self.keys
        cursor = self._cursor
        if cursor is None:
            cursor = text(await self.redis.get(k.positions_cursor) or b"")
        entries: Any = await self.redis.xrange(k.events, min=f"({cursor}" if cursor else "-",
                                               count=self.page)
        if not entries:
            self._cursor = cursor
            return 0
        events: list[Folded] = []
        slices = self.slices
        slices.start()
        for _, fields in entries:
            if slices.due():
                await slices.hand_back()
            data = fields[b"data"]
            # Created events come before their order's fills in the stream, so knowing the
            # side now is knowing it in time; a side is a fact, whoever folds.
            if _FULL.search(data):
                decoded = _event_decoder.decode(data)
                for event in decoded if isinstance(decoded, list) else (decoded,):
                    events.append(event)
                    if event.order is not None:  # a created event
                        self._sides[event.client_order_id] = event.order.side
            elif b'"order":' in data:
                created = _created_decoder.decode(data)
                for one in created if isinstance(created, list) else (created,):
                    if one.order is not None:
                        self._sides[one.client_order_id] = one.order.side
        risk = await self._risk_state(events)
        book = await self._fold(events, risk)
        if self._new_assets:
            # Before the positions that used them: replay folds with what the fold knew.
            await self.redis.hset(k.assets, mapping=self._new_assets)  # type: ignore[arg-type]
            self._assets_written.update(self._new_assets)
            self._new_assets = {}
        last = text(entries[-1][0])
        args: list[Any] = [self.consumer, cursor, last, DAY_TTL_MS, len(book),
                           k.positions_of_prefix]
        for key, position in book.items():
            args += [key, encode(position)]
        risk_keys, ops = risk.script_args(k, 5)
        pages: dict[str, Page | None] = dict.fromkeys(risk.accounts)
        if self.watcher is not None and pages:
            self.watcher.moving(pages)
        try:
            written = await self._write(
                keys=[k.positions, k.positions_cursor, k.positions_lease,
                      k.positions_indexed, *risk_keys],
                args=args + ops)
            if written:
                # The versions its bumps left, in the order of its accounts' bumps.
                for account, full in zip(sorted(risk.accounts), written[1:], strict=True):
                    pages[account] = risk.page(account, int(full), book.values())
        finally:
            if self.watcher is not None and pages:
                self.watcher.paged(pages)
        if not written:
            # Someone else folded, or holds the lease now: what we remembered may be stale.
            self._sides.clear()
            self._cursor, self._held_until = None, 0.0
            return 0
        self._cursor = last
        if self.on_fills is not None and self._folded:
            self.on_fills(self._folded)
        return len(entries)

    async def _hold(self) -> bool:
        """Renew the lease a third of its term after the last renewal, not on every page."""
        now = time.monotonic()
        if now < self._held_until:
            return True
        if not await self.lease.hold(self.lease_ms):
            self._cursor, self._held_until = None, 0.0
            return False
        # Timed from before the call: the lease runs at least this long from then.
        self._held_until = now + self.lease_ms / 3000
        return True

    def _day(self, event: Folded) -> str:
        at = event.fill.at if event.fill is not None and event.fill.at else event.at
        return day_id(at, self.day_offset_ms)

    async def _risk_state(self, events: list[Folded]) -> RiskFold:
        """The reservations the page's events name and the totals they change, as stored
        now: the script writes only if those reservations are still as read, and the
        released totals have no other writer."""
        named: dict[str, dict[str, None]] = {}  # account -> client ids, in order
        for e in events:
            if e.fill is not None or is_terminal(e.state):
                named.setdefault(e.account, {})[e.client_order_id] = None
        orders = {account: list(cids) for account, cids in named.items()}
        days = sorted({(e.account, self._day(e)) for e in events if e.fill is not None})
        risk = RiskFold()
        if not orders and not days:
            return risk
        async with self.redis.pipeline(transaction=False) as pipe:
            for account, cids in orders.items():
                pipe.hmget(open_key(self.keys, account), cids)
                pipe.hgetall(sums_key(self.keys, account))
            for account, day in days:
                pipe.hget(day_key(self.keys, account, day), "pnl")
            replies = await pipe.execute()
        slices = self.slices
        slices.start()
        for n, (account, cids) in enumerate(orders.items()):
            for cid, data in zip(cids, replies[2 * n], strict=True):
                if slices.due():
                    await slices.hand_back()
                risk.stored[(account, cid)] = (
                    None if data is None else (data, decode_reservation(data)))
            risk.sums[account] = parse_sums(replies[2 * n + 1])
        for (account, day), pnl in zip(days, replies[2 * len(orders):], strict=True):
            risk.day_pnl[(account, day)] = Decimal(text(pnl)) if pnl else Decimal(0)
        return risk

    async def _fold(self, events: list[Folded], risk: RiskFold) -> dict[str, Position]:
        fills = [e for e in events if e.fill is not None]
        fields = list(dict.fromkeys(position_key(e.account, e.symbol) for e in fills))
        book: dict[str, Position] = {}
        self._folded.clear()
        if fills and self.learn is not None:
            await self.learn({(e.account, e.symbol) for e in fills})
        if fields:
            stored: Any = await self.redis.hmget(self.keys.positions, fields)
            book = {f: decode_position(v) for f, v in zip(fields, stored, strict=True) if v}
        slices = self.slices
        slices.start()
        for event in events:
            if slices.due():
                await slices.hand_back()
            cid = event.client_order_id
            if event.fill is not None:
                side = self._sides.get(cid) or await self._side_from_record(cid)
                if side is None:
                    log.error("fill %s of order %s: side unknown (no created event, no "
                              "record); not in the positions", event.fill.fill_id, cid,
                              extra=about(cid, event.request_id))
                else:
                    key = position_key(event.account, event.symbol)
                    before = book.get(key) or Position(account=event.account,
                                                       symbol=event.symbol)
                    quote = self.quote_asset(event.account, event.symbol)
                    base = self.base_asset(event.account, event.symbol)
                    if self._assets_of.get(key) != (base, quote):
                        assets = msgspec.json.encode([base, quote])
                        if self._assets_written.get(key) != assets:
                            self._new_assets[key] = assets
                        self._assets_of[key] = (base, quote)
                    after = fold_fill(book, event.account, event.symbol, side, event.fill,
                                      base, quote)
                    self._folded.append((event.account, side, event.fill, quote))
                    risk.realized(event.account, self._day(event), before, after)
                risk.fill(event.account, cid, event.fill.quantity)
            if is_terminal(event.state):
                self._sides.pop(cid, None)
                risk.end(event.account, cid)
        return book

    async def _side_from_record(self, cid: str) -> Side | None:
        record = await self.redis.hget(self.keys.order(cid), "record")
        return None if record is None else decode_order(record).spec.side

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        while running():
            try:
                # Behind: the next page at once. Fewer, larger pages cost less per event
                # (six round trips each at most); the lanes of this event loop do not wait
                # for a whole page, which hands the loop back between slices (``slices``).
                while running() and await self.once() >= self.page:
                    pass
            except RedisError as exc:
                log.warning("positions pass failed: %s", exc)
            await sleep(self.interval_s)

    async def release(self) -> None:
        """Give the lease up on a clean stop, so another worker projects at once."""
        self._cursor, self._held_until = None, 0.0
        await self.lease.release()
