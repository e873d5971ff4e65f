"""Execution algorithms (TWAP, VWAP): sends a parent order's children on its schedule and
keeps the parent's record up to date with what they filled (model/schedules.py decides;
this reads and writes). The worker that emulates an account runs its algorithms, under
the account's emulator lease (background/emulator.py), so one worker decides at a time
and a dead one's schedules move with its lease: nothing lives only in a process's memory.

An algorithm is registered in ``Keys.algos`` by the script that creates its parent
(infra/lua/begin.lua), so a parent never exists without its schedule. The parent is at no
broker (pipeline/steps/submit.py accepts it as it is, the risk step only checks the
trading state and reserves nothing for it, the tracker leaves it alone). Each child is
published as a request on the pending stream in the script that records it in the
schedule (infra/lua/lists.lua, shared with contingent lists), under a client id derived
from the parent's (``<parent>-E<n>``): once per decision, and a duplicate, never a second
order, if it ever were twice. A child goes
the way of every request: validation, the gate, the risk checks, the send token, its own
result (``metadata.algo_id`` names the parent).

With a participation cap, the market's volume since the start is counted in the schedule
(``Progress.volume``, up to ``volume_to``) from the broker's ``traded_volume``
(brokers/base.VolumeSource), asked at most every ``VOLUME_READ_MS``: a child is cut to the
room the cap leaves, and waits while the broker reports none.

What became of a child is read each pass: its order's record; without one, its request
still on the pending stream (not handled yet) or gone from it (refused without an order:
sent again ``RETRY_MS`` later). Once a child is over, what it filled is written into the
schedule, so its record may expire before the schedule ends.

The parent's record follows its children: its fills are theirs (and the positions fold
counts them there), so its events carry the running totals without a fill
(``model.order.progress``). It ends ``filled``; or once its end time has passed, or a
cancel has stopped it (pipeline/steps/cancel.py marks ``Keys.algos_cancel``; its working
child is cancelled first), ``expired`` or ``cancelled`` with what was filled.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.contract import (
    TERMINAL_STATES,
    Action,
    AlgoStrategy,
    OrderSpec,
    OrderState,
    OrderType,
    ReasonCode,
    Request,
    decimal_text,
    decoder,
    encode,
    wire,
)
from producer.keys import Keys
from producer.replies import text
from producer.validation import algo_slices, algo_window

from ..brokers.base import Volume, refused_by
from ..infra.logs import Every
from ..infra.metrics import Metrics
from ..infra.store import Outcome, Store, decode_order
from ..model.order import (
    Context,
    Order,
    fills_notional,
    progress,
    spec_from_request,
    transition,
)
from ..model.schedules import (
    Child,
    Due,
    Progress,
    Sent,
    Slice,
    child_price,
    child_request,
    due,
    iceberg_due,
    participation_room,
    plan,
    slippage_bps,
    weights_of,
)
from ..model.states import is_terminal
from ..pipeline import results
from .exits import LeaseLost
from .lists import SCRIPT, published, queue_published

log = logging.getLogger(__name__)

_progress = decoder(Progress)
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Inexact])
# The market's volume is asked at most this often for a capped algorithm, unless its
# broker says (Binance: a klines call of weight 2 a second).
VOLUME_READ_MS = 1_000
# Before the parent's request is decided: its schedule waits.
_UNDECIDED = (OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED)


async def _no_volume(symbol: str, since: int) -> Volume | None:
    return None


@dataclass(frozen=True, slots=True)
class Market:
    """What the account's broker says of a symbol: its quantity step and price tick, its
    own check of an order (``Broker.check``), and its reference price now."""

    step: Callable[[str], Decimal | None]
    tick: Callable[[str], Decimal | None]
    check: Callable[[OrderSpec], object]
    price: Callable[[str], Awaitable[Decimal | None]]
    # The market's traded volume (brokers/base.VolumeSource), for a participation cap.
    volume: Callable[[str, int], Awaitable[Volume | None]] = _no_volume
    # How often to ask it: the broker's bucket (VolumeSource.volume_interval_ms).
    volume_every_ms: int = VOLUME_READ_MS


class AlgoWatcher:
    def __init__(self, redis: aioredis.Redis, keys: Keys, store: Store, token: str,
                 worker: str, *, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.token = token
        self.worker = worker
        self.metrics = metrics
        self.script = redis.register_script(SCRIPT)
        self._every = Every()
        self._plans: dict[str, list[Slice]] = {}  # parent id -> its slices (pure: cached)
        self._volume_read: dict[str, int] = {}  # parent id -> when its volume was read

    def queue_read(self, pipe: Any, account: str) -> None:
        """Queue the read of the account's algorithms on ``pipe`` (one reply, for
        ``parse``): the emulator reads all it watches in one round trip."""
        pipe.hgetall(self.keys.algos(account))

    @staticmethod
    def parse(raw: Any) -> dict[str, bytes]:
        return {text(cid): data for cid, data in raw.items()}

    async def once(self, account: str, algos: dict[str, bytes], now: int, market: Market
                   ) -> int:
        """One pass over the account's algorithms; returns how many writes it made."""
        done = 0
        for cid, data in sorted(algos.items()):
            try:
                done += await self._one(account, cid, data, now, market)
            except LeaseLost:
                raise
            except Exception:
                # One algorithm's bug or garbled state holds up no other.
                log.exception("algo %s: its pass failed", cid)
                if self.metrics is not None:
                    self.metrics.background_errors.labels("algos").inc()
        live = set(algos)
        self._plans = {k: v for k, v in self._plans.items() if k in live}
        self._volume_read = {k: v for k, v in self._volume_read.items() if k in live}
        return done

    async def _one(self, account: str, cid: str, data: bytes, now: int,
                   market: Market) -> int:
        try:
            state = _progress.decode(data)
        except msgspec.DecodeError:
            if self._every.due(("unreadable", cid), now):
                log.error("algo %s: unreadable (%r); left as it is", cid, data[:200])
            return 0
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.order(cid), "record")
        pipe.hget(k.algos_cancel, cid)
        for c in state.children:
            queue_published(pipe, k, c.request, c.id)
        record, cancel, *rows = await pipe.execute()
        if record is None:
            log.warning("algo %s: its parent's record is gone; the schedule ends", cid)
            return await self._end(account, cid, data, [])
        parent = decode_order(record)
        if parent.state in _UNDECIDED:
            return 0
        if parent.state in TERMINAL_STATES:
            return await self._end(account, cid, data, [])
        spec = parent.spec
        algo = spec.algo
        assert algo is not None and spec.quantity is not None
        found = published(rows)
        records = [r for _, r in found]
        children = [_seen(c, waiting, r) for c, (waiting, r) in
                    zip(state.children, found, strict=True)]
        if state.arrival is None:
            # The price the parent arrived at, for its slippage: written with the next
            # change (the first child's, at once).
            arrival = await market.price(spec.symbol)
            state = msgspec.structs.replace(
                state, arrival=None if arrival is None else wire(arrival))
        if children != state.children:
            moved = msgspec.structs.replace(state, children=children)
            return await self._write(account, cid, data, moved, [])
        # The parent's record follows its children's fills.
        filled, notional = _totals(children, records)
        ctx = Context(now=now, worker=self.worker, request_id=parent.request_id)
        iceberg = algo.strategy == AlgoStrategy.ICEBERG
        n = len(children) if iceberg else algo_slices(algo, parent.created_at)[0]
        events = progress(parent, filled, notional, ctx,
                          _progress_note(len(children), n, filled, notional, state.arrival,
                                         spec))
        if events:
            if not await self._record(parent, events, now, _fees(children, records)):
                return 0  # moved meanwhile (a cancel): read again next pass
            if parent.state is not OrderState.FILLED:
                return 1
            return await self._finish(account, cid, data, parent, state, Decimal(0),
                                      False, now)
        stopped = cancel is not None or parent.state is OrderState.PENDING_CANCEL
        if iceberg:
            return await self._iceberg(account, cid, data, parent, state, children, filled,
                                       now, market, stopped)
        slices = self._plan(cid, parent, market.step(spec.symbol))
        start, end = algo_window(algo, parent.created_at)
        _, interval = algo_slices(algo, parent.created_at)
        ended = stopped or now >= end
        working = [c for c in children if not c.over]
        if ended and working:
            return await self._cancel_children(account, cid, data, state, working)
        limit = spec.type is OrderType.LIMIT
        reprice = algo.reprice_ms or interval
        stale = [c for c in working if c.seen and not c.cancel and now - c.at >= reprice]
        if limit and stale:
            return await self._cancel_children(account, cid, data, state, stale,
                                               reprice=True)
        d = due(slices, [Child(c.slice, c.quantity, c.at, c.filled, c.over, c.refused,
                               c.repriced) for c in children], now, ended=ended)
        if d.done:
            return await self._finish(account, cid, data, parent, state, d.left, stopped,
                                      now)
        if not d.quantity:
            return 0
        quantity, capped, before = d.quantity, False, state
        if algo.max_participation is not None:
            counted = await self._count_volume(cid, state, spec.symbol, start, now, market)
            if counted is None:
                return 0
            state = counted
            room = participation_room(algo.max_participation, state.volume, filled,
                                      market.step(spec.symbol))
            if room < quantity:
                quantity, capped = room, True
            if quantity <= 0:
                return await self._held_back(account, cid, data, before, state, d, now)
        limit_price: Decimal | None = None
        if limit:
            reference = await market.price(spec.symbol)
            if reference is None:
                if self._every.due(("unpriced", cid), now):
                    log.warning("algo %s: no price for %s; its next child waits for one",
                                cid, spec.symbol)
                return 0
            assert spec.price is not None
            offset = algo.limit_offset_bps or Decimal(0)
            limit_price = child_price(spec.side, reference, offset, spec.price,
                                      market.tick(spec.symbol))
        request = child_request(cid, spec, quantity, state.n + 1, d.slice, limit_price)
        refusal = refused_by(market.check, spec_from_request(request, account))
        if refusal is not None and capped:
            # Below the broker's minimum by the cap: it waits for more volume.
            return await self._held_back(account, cid, data, before, state, d, now)
        if refusal is not None:
            # It would be refused: it waits for the next slice, which adds to it; after
            # the last, what is left is left.
            if d.slice == len(slices) - 1:
                log.warning("algo %s: its last child of %s %s would be refused (%s): the "
                            "schedule ends with it unfilled", cid, d.quantity, spec.symbol,
                            refusal)
                return await self._finish(account, cid, data, parent, state,
                                          spec.quantity - filled, stopped, now)
            if self._every.due(("small", cid), now):
                log.info("algo %s: slice %d's child of %s would be refused (%s): it goes "
                         "with the next slice", cid, d.slice, d.quantity, refusal)
            return 0
        if not await self._send(account, cid, data, state, children, request, d.slice,
                                quantity, now, capped=capped):
            return 0
        log.info("algo %s (%s, slice %d of %d): child %s, %s %s %s%s%s", cid, algo.strategy,
                 d.slice + 1, len(slices), request.client_order_id, spec.side, quantity,
                 spec.symbol, "" if limit_price is None else f" at {limit_price}",
                 " (capped by its participation)" if capped else "")
        return 1

    async def _iceberg(self, account: str, cid: str, data: bytes, parent: Order,
                       state: Progress, children: list[Sent], filled: Decimal, now: int,
                       market: Market, stopped: bool) -> int:
        """An emulated iceberg: a limit child of ``display_quantity`` at the parent's price
        whenever none works, until the parent is filled, cancelled or past its
        ``expire_at``. A remainder the broker would refuse alone (below its minimum) goes
        with the child before it."""
        spec = parent.spec
        assert spec.quantity is not None and spec.display_quantity is not None
        ended = stopped or (spec.expire_at is not None and now >= spec.expire_at)
        working = [c for c in children if not c.over]
        if ended and working:
            return await self._cancel_children(account, cid, data, state, working)
        d = iceberg_due(spec.quantity, spec.display_quantity,
                        [Child(c.slice, c.quantity, c.at, c.filled, c.over, c.refused)
                         for c in children], now, ended=ended)
        if d.done:
            return await self._finish(account, cid, data, parent, state, d.left, stopped,
                                      now)
        if not d.quantity:
            return 0
        quantity = d.quantity
        rest = _EXACT.subtract(_EXACT.subtract(spec.quantity, filled), quantity)
        if rest > 0 and refused_by(market.check, spec_from_request(
                child_request(cid, spec, rest, state.n + 1, d.slice, spec.price), account)):
            quantity = _EXACT.add(quantity, rest)
        request = child_request(cid, spec, quantity, state.n + 1, d.slice, spec.price)
        refusal = refused_by(market.check, spec_from_request(request, account))
        if refusal is not None:
            log.warning("algo %s: its iceberg child of %s %s would be refused (%s): the "
                        "order ends with it unfilled", cid, quantity, spec.symbol, refusal)
            return await self._finish(account, cid, data, parent, state,
                                      _EXACT.subtract(spec.quantity, filled),
                                      False, now, why=f"its next child would be refused "
                                                      f"({refusal})")
        if not await self._send(account, cid, data, state, children, request, d.slice,
                                quantity, now):
            return 0
        log.info("algo %s (iceberg, %s of %s filled): child %s, %s %s %s at %s", cid,
                 parent.filled_quantity, spec.quantity, request.client_order_id, spec.side,
                 quantity, spec.symbol, spec.price)
        return 1

    async def _send(self, account: str, cid: str, data: bytes, state: Progress,
                    children: list[Sent], request: Request, slice_: int, quantity: Decimal,
                    now: int, *, capped: bool = False) -> bool:
        """Publish ``request``, the algorithm's next child, in the compare-and-set that
        records it in the schedule; False when the schedule changed meanwhile."""
        assert request.client_order_id is not None
        sent = Sent(id=request.client_order_id, slice=slice_, quantity=wire(quantity),
                    at=now, request="$", capped=capped)
        moved = msgspec.structs.replace(state, children=[*children, sent], n=state.n + 1)
        if not await self._write(account, cid, data, moved, [encode(request)]):
            return False
        if self.metrics is not None:
            self.metrics.algo_slices.labels(account).inc()
        return True

    async def _held_back(self, account: str, cid: str, data: bytes, before: Progress,
                         state: Progress, d: Due, now: int) -> int:
        """A child the participation cap holds back (wholly, or below the broker's
        minimum): nothing is sent; the volume counted is kept."""
        if self._every.due(("capped", cid), now):
            log.info("algo %s: slice %d's %s waits for the market's volume (%s traded since "
                     "its start)", cid, d.slice, d.quantity, decimal_text(state.volume))
        if state is before:
            return 0
        return await self._write(account, cid, data, state, [])

    async def _count_volume(self, cid: str, state: Progress, symbol: str, start: int,
                            now: int, market: Market) -> Progress | None:
        """``state`` with the market's volume counted on from where it stopped (read at
        most every ``volume_every_ms``; the source reports a bounded stretch a call, so a
        long gap is caught up over passes); None while the broker reports none."""
        since = max(state.volume_to, start)
        if now - self._volume_read.get(cid, 0) < market.volume_every_ms:
            return state if state.volume_to else None
        self._volume_read[cid] = now
        got = await market.volume(symbol, since)
        if got is None:
            if self._every.due(("no volume", cid), now):
                log.warning("algo %s: no traded volume for %s from its broker; its "
                            "participation cap holds its next child back until there is",
                            cid, symbol)
            return state if state.volume_to else None
        if got.until <= since and state.volume_to:
            return state
        return msgspec.structs.replace(
            state, volume=wire(_EXACT.add(state.volume, got.quantity)),
            volume_to=max(got.until, since))

    def _plan(self, cid: str, parent: Order, step: Decimal | None) -> list[Slice]:
        cached = self._plans.get(cid)
        if cached is None:
            algo, spec = parent.spec.algo, parent.spec
            assert algo is not None and spec.quantity is not None
            _, interval = algo_slices(algo, parent.created_at)
            start, _ = algo_window(algo, parent.created_at)
            cached = plan(spec.quantity, start, interval, weights_of(algo), step=step)
            self._plans[cid] = cached
        return cached

    async def _cancel_children(self, account: str, cid: str, data: bytes, state: Progress,
                               working: list[Sent], *, reprice: bool = False) -> int:
        """Publish a cancel of each working child that has its record (a cancel must not
        overtake the place it cancels), once; ``reprice``: to send what it leaves again, at
        the price then."""
        due_ = [c for c in working if c.seen and not c.cancel]
        if not due_:
            return 0
        ids = {c.id for c in due_}
        moved = msgspec.structs.replace(state, children=[
            msgspec.structs.replace(c, cancel=True, repriced=reprice) if c.id in ids else c
            for c in state.children])
        cancels = [encode(Request(action=Action.CANCEL, client_order_id=c.id,
                                  account=account)) for c in due_]
        wrote = await self._write(account, cid, data, moved, cancels)
        if wrote:
            log.log(logging.INFO if reprice else logging.WARNING,
                    "algo %s %s: its working children %s cancelled", cid,
                    "re-prices" if reprice else "stopped", ", ".join(sorted(ids)))
        return wrote

    async def _finish(self, account: str, cid: str, data: bytes, parent: Order,
                      state: Progress, left: Decimal, stopped: bool, now: int, *,
                      why: str | None = None) -> int:
        """End the parent: filled, or cancelled (stopped) / expired with what is left; then
        forget the schedule."""
        spec = parent.spec
        ctx = Context(now=now, worker=self.worker, request_id=parent.request_id)
        sent = len(state.children)
        summary = (f"{spec.algo.strategy if spec.algo else 'algo'}: filled "
                   f"{parent.filled_quantity} of {spec.quantity} in {sent} child orders")
        slip = None
        if state.arrival is not None and parent.average_price is not None:
            slip = slippage_bps(spec.side, parent.average_price, state.arrival)
            summary += (f", average {decimal_text(parent.average_price)} against "
                        f"{decimal_text(state.arrival)} on arrival ({slip:.2f} bps)")
        events = []
        if parent.state is not OrderState.FILLED and left > 0:
            end = OrderState.CANCELLED if stopped else OrderState.EXPIRED
            why = why or ("cancelled" if stopped else "its end time passed")
            events.append(transition(
                parent, end, ctx, reason_code=None if stopped else ReasonCode.EXPIRED,
                reason=f"{summary}; {why} with {left} left"))
        elif parent.state is not OrderState.FILLED:
            events.append(transition(parent, OrderState.FILLED, ctx, reason=summary))
        if events and not await self._record(parent, events, now,
                                             _fees(state.children, [None] * sent)):
            return 0  # moved meanwhile (a cancel, a fill): read again next pass
        if self.metrics is not None:
            quantity = spec.quantity or Decimal(1)
            self.metrics.algo_fill_ratio.labels(account).observe(
                float(parent.filled_quantity / quantity))
            if slip is not None:
                self.metrics.algo_slippage.labels(account).observe(float(slip))
        log.warning("algo %s is over: %s", cid, summary)
        return await self._end(account, cid, data, [])

    async def _end(self, account: str, cid: str, data: bytes, requests: list[bytes]) -> int:
        self._plans.pop(cid, None)
        return 1 if await self._call("end", account, cid, data, b"", requests) else 0

    async def _write(self, account: str, cid: str, data: bytes, state: Progress,
                     requests: list[bytes]) -> int:
        return 1 if await self._call("write", account, cid, data, encode(state),
                                     requests) else 0

    async def _record(self, parent: Order, events: list[Any], now: int,
                      fees: dict[str, Decimal]) -> bool:
        """The parent's new record and events, a compare-and-set on its seq; False when a
        cancel request moved it meanwhile (nothing written: the next pass reads it
        again). The change that ends it carries its request's one result, with the fees
        its children paid (``fees``, per asset)."""
        answer = (results.late(parent, now, self.worker, fees) if is_terminal(parent.state)
                  else None)
        if await self.store.finish([Outcome(parent.request_id, answer, parent,
                                            parent.seq - len(events), events,
                                            late=True)]):
            return False
        if answer is not None and self.metrics is not None:
            # Counted, not timed: its latency is the schedule's horizon.
            self.metrics.requests.labels(answer.action, parent.spec.account, answer.status,
                                         answer.reason_code or "").inc()
        return True

    async def _call(self, op: str, account: str, cid: str, expected: bytes, new: bytes,
                    requests: list[bytes]) -> Any:
        """lists.lua: 0 when the schedule changed meanwhile (nothing written), else 1 or
        the pending entry id of the last request published."""
        k = self.keys
        wrote = await self.script(
            keys=[k.algos(account), k.algos_cancel, k.emulator_lease(account), k.pending],
            args=[op, self.token, cid, expected, new, *requests])
        if wrote == -2:
            raise LeaseLost
        return wrote


def _seen(sent: Sent, waiting: bool, record: Order | None) -> Sent:
    """``sent`` as it is now: seen with an order, over with what it filled, or refused
    without one (its request answered and gone from the stream)."""
    if sent.over:
        return sent
    if record is not None:
        over = record.state in TERMINAL_STATES
        if sent.seen and not over:
            return sent
        return msgspec.structs.replace(
            sent, seen=True, over=over,
            filled=wire(record.filled_quantity) if over else sent.filled,
            notional=wire(fills_notional(record.fills)) if over else sent.notional,
            commissions=record.commissions if over else sent.commissions)
    if sent.seen:
        # Its record expired before this pass saw it end: counted as it last was.
        return msgspec.structs.replace(sent, over=True)
    if not sent.request or waiting:
        return sent  # still pending
    return msgspec.structs.replace(sent, over=True, refused=True)


def _progress_note(sent: int, n: int, filled: Decimal, notional: Decimal,
                   arrival: Decimal | None, spec: OrderSpec) -> str:
    """What a parent's progress event says: children sent, and the slippage so far."""
    note = f"{sent} child orders for {n} slices"
    if arrival is not None and filled > 0:
        average = notional / filled
        shown = decimal_text(average.quantize(Decimal("1e-12")).normalize())
        note += (f"; average {shown} against {decimal_text(arrival)} on arrival "
                 f"({slippage_bps(spec.side, average, arrival):.2f} bps)")
    return note


def _fees(children: list[Sent], records: list[Order | None]) -> dict[str, Decimal]:
    """The fees the children paid, per asset: from their records while they work, from
    the schedule once they are over."""
    fees: dict[str, Decimal] = {}
    for c, r in zip(children, records, strict=True):
        paid = c.commissions if c.over else (r.commissions if r is not None else {})
        for asset, amount in paid.items():
            fees[asset] = _EXACT.add(fees.get(asset, Decimal(0)), amount)
    return fees


def _totals(children: list[Sent], records: list[Order | None]) -> tuple[Decimal, Decimal]:
    """What the children filled, and at what notional: from their records while they work
    (and are seen), from the schedule once they are over."""
    filled = notional = Decimal(0)
    for c, r in zip(children, records, strict=True):
        f: Decimal
        n: Decimal
        if c.over:
            f, n = c.filled, c.notional
        elif r is not None:
            f, n = r.filled_quantity, fills_notional(r.fills)
        else:
            continue
        filled, notional = _EXACT.add(filled, f), _EXACT.add(notional, n)
    return filled, notional
