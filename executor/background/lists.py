"""Contingent lists: places the exits of entries with ``take_profit`` / ``stop_loss`` as
they fill, and cancels them with the entry (model/lists.py decides; this reads and
writes). The worker that emulates an account watches its lists, under the account's
emulator lease (background/emulator.py), so one worker decides at a time and a dead one's
lists move with its lease: nothing lives only in a process's memory.

A list is registered in ``Keys.lists`` by the script that creates its entry
(infra/lua/begin.lua), so an entry never exists without it. Each exit is published as a
request on the pending stream in the script that records it in the list
(infra/lua/lists.lua), under a client id derived from the entry's: published once per
decision, and a duplicate, never a second order, if it ever were twice. The request goes
the way of every request: validation, the gate, the risk checks (``reduce_only``), the
send token, its own result (``metadata.list_id`` names the entry).

What became of an exit is read each pass: its order's state; without a record, its
request still on the pending stream (not handled yet), or gone from it (answered without
an order: refused, placed again after ``RETRY_MS`` under the next id), or, for an exit
once seen with an order, a record expired since (over).

A cancel of the entry marks its list (``Keys.lists_cancel``, pipeline/steps/cancel.py):
the watcher then publishes a cancel of each open exit, once every published exit has its
record (a cancel must not overtake its place), and forgets the list.

Requests a worker publishes cannot be signed: with ``[auth] keys`` an entry with levels
is refused when placed (pipeline/steps/decode.py); one found anyway (the keys configured
since) gets no exit (an error log each minute per list) until it is cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.contract import (
    TERMINAL_STATES,
    Action,
    OrderSpec,
    OrderState,
    Request,
    decoder,
    encode,
    wire,
)
from producer.keys import Keys
from producer.replies import text

from ..brokers.base import refused_by
from ..infra.logs import Every
from ..infra.metrics import Metrics
from ..infra.store import decode_order
from ..model.lists import (
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
from ..model.order import Order, spec_from_request
from ..model.positions import decode_position, position_key
from ..safety.risk.state import open_key
from .exits import LeaseLost

log = logging.getLogger(__name__)

SCRIPT = (resources.files("executor.infra") / "lua" / "lists.lua").read_text()
_progress = decoder(Progress)
# Cancels what the broker holds natively as an entry's exit (entry id, symbol, whether the
# exit is an oco): whether nothing of it is left open there.
EndNative = Callable[[str, str, bool], Awaitable[bool]]


class ListWatcher:
    def __init__(self, redis: aioredis.Redis, keys: Keys, token: str, *,
                 signed: bool = False, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.token = token
        self.signed = signed
        self.metrics = metrics
        self.script = redis.register_script(SCRIPT)
        self._every = Every()  # what was logged, when: once a minute, not every pass

    def queue_read(self, pipe: Any, account: str) -> None:
        """Queue the read of ``account``'s lists on ``pipe`` (two replies, for ``parse``):
        the emulator reads all it watches in one round trip."""
        pipe.hgetall(self.keys.lists(account))
        pipe.hlen(self.keys.legacy_lists)

    async def parse(self, raw: Any, legacy: int, account: str, now: int
                    ) -> dict[str, bytes]:
        """The lists of ``account``'s entries: entry client id -> stored progress (those
        an older worker left in ``legacy_lists`` moved first, and read again)."""
        if legacy and await self._move(now):
            raw = await self.redis.hgetall(self.keys.lists(account))
        return {text(cid): data for cid, data in raw.items()}

    async def _move(self, now: int) -> int:
        """Move the lists that workers before per-account lists wrote (``legacy_lists``,
        one hash for every account) to their accounts' hashes; how many moved. Any worker
        may: a move is a compare-and-set, and changes no list."""
        k = self.keys
        raw: Any = await self.redis.hgetall(k.legacy_lists)
        moved = 0
        for cid, data in raw.items():
            try:
                account = _progress.decode(data).account
            except msgspec.DecodeError:
                if self._every.due(("unreadable", text(cid)), now):
                    log.error("list of %s: unreadable (%r) in %s; left there", text(cid),
                              data[:200], k.legacy_lists)
                continue
            moved += await self.script(keys=[k.legacy_lists, k.lists(account)],
                                       args=["move", cid, data])
        if moved:
            log.info("%d contingent lists moved from %s to their accounts' hashes", moved,
                     k.legacy_lists)
        return moved

    async def once(self, account: str, lists: dict[str, bytes], now: int,
                   step: Callable[[str], Decimal | None],
                   check: Callable[[OrderSpec], object],
                   end_native: EndNative | None = None) -> int:
        """One pass over the account's lists; returns how many it wrote. ``check``: the
        broker's own check of an order (``Broker.check``), which an exit must pass to be
        placed; ``end_native``: cancels at the broker what an entry sent natively holds
        as its exit (``brokers.emulating.end_native_exits``), asked before such a list
        ends without an exit of ours."""
        done = blocked = 0
        for cid, data in sorted(lists.items()):
            try:
                wrote = await self._one(account, cid, data, now, step, check, end_native)
            except LeaseLost:
                raise
            except Exception:
                # One list's bug or garbled record holds up no other list.
                log.exception("list of %s: its pass failed", cid)
                if self.metrics is not None:
                    self.metrics.background_errors.labels("lists").inc()
                continue
            if wrote is None:
                blocked += 1
            else:
                done += wrote
        if self.metrics is not None:
            self.metrics.exits_blocked.labels(account, "list").set(blocked)
        return done

    async def _one(self, account: str, cid: str, data: bytes, now: int,
                   step: Callable[[str], Decimal | None],
                   check: Callable[[OrderSpec], object],
                   end_native: EndNative | None = None) -> int | None:
        """How many writes it made; None: an exit is due that the broker's rules refuse."""
        try:
            progress = _progress.decode(data)
        except msgspec.DecodeError:
            if self._every.due(("unreadable", cid), now):
                log.error("list of %s: unreadable (%r); left as it is", cid, data[:200])
            return 0
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.order(cid), "record")
        pipe.hget(open_key(k, account), cid)  # HGET: the worker's ACL has no HEXISTS
        pipe.hget(k.lists_cancel, cid)
        for e in progress.exits:
            queue_published(pipe, k, e.request, e.id)
        record, reserved, cancel, *rows = await pipe.execute()
        found = published(rows)
        records = [r for _, r in found]
        exits = {e.id: _exit_state(e, waiting, None if r is None else r.state)
                 for e, (waiting, r) in zip(progress.exits, found, strict=True)}
        # What the exits working at the broker have not filled yet.
        holding = sum((r.spec.quantity - r.filled_quantity for r in records
                       if r is not None and r.spec.quantity is not None
                       and r.state not in TERMINAL_STATES), Decimal(0))
        seen = newly_seen(progress, exits)
        if seen is not None:
            # So that a record gone later is known to have expired, not to be a refusal.
            if await self._write("write", account, cid, data, encode(seen), []) == 0:
                return 0
            progress, data = seen, encode(seen)
        if record is None:
            # begin.lua writes the entry with its list, so it has expired since (a finished
            # order's record lives order_ttl_ms; its exits may rest longer).
            decision = decide(None, OrderState.FILLED, Decimal(0), True, progress, exits,
                              Decimal(0), None, now, cancel is not None, holding=holding)
            entry = None
        else:
            entry = decode_order(record)
            spec = entry.spec
            raw = await self.redis.hget(k.positions, position_key(account, spec.symbol))
            position = decode_position(raw).quantity if raw else Decimal(0)
            decision = decide(spec, entry.state, entry.filled_quantity, reserved is None,
                              progress, exits, position, step(spec.symbol), now,
                              cancel is not None, holding=holding)
        if decision.act is Act.WAIT:
            return 0
        if decision.act is Act.RELEASE:
            assert entry is not None
            if self.signed:
                if self._every.due(("unsigned", cid), now):
                    log.error("list of %s: an exit of %s is due, but requests must be signed "
                              "and a worker has no key: not placed; protect the position by "
                              "hand", cid, decision.quantity)
                return 0
            request = exit_request(cid, entry.spec, decision.quantity, progress.n + 1)
            assert request.client_order_id is not None
            refusal = refused_by(check, spec_from_request(request, account))
            if refusal is not None:
                # It would be refused (and again each RETRY_MS, each time with a failed
                # result): it waits for more fills, or for the position to be closed.
                if self._every.due(("blocked", cid), now):
                    working = entry.state not in TERMINAL_STATES
                    log.log(logging.INFO if working else logging.ERROR,
                            "list of %s: its exit of %s %s is not placed, as the broker's "
                            "rules refuse it (%s): %s", cid, decision.quantity,
                            entry.spec.symbol, refusal,
                            "it waits for more of the entry to fill" if working else
                            "the position is not protected until it is closed")
                return None
            moved = released(progress, exits, Exit(
                id=request.client_order_id, quantity=wire(decision.quantity), at=now,
                request="$"))
            if await self._write("write", account, cid, data, encode(moved),
                                 [encode(request)]) == 0:
                return 0
            if self.metrics is not None:
                self.metrics.list_exits.labels(account).inc()
            log.warning("list of %s (entry %s, filled %s of %s): exit %s placed, %s %s %s%s",
                        cid, entry.state, entry.filled_quantity, entry.spec.quantity,
                        request.client_order_id, request.type, request.side,
                        decision.quantity, f" ({decision.why})" if decision.why else "")
            return 1
        if (end_native is not None and entry is not None and entry.native_exits
                and not any(isinstance(exits.get(e.id), OrderState) for e in progress.exits)
                and not await end_native(cid, entry.spec.symbol,
                                         entry.spec.take_profit is not None
                                         and entry.spec.stop_loss is not None)):
            # The broker placed (or may place) the exit itself, and none of ours took it
            # over: the list ends only once that exit is gone, never left untracked there.
            return 0
        cancels = [encode(Request(action=Action.CANCEL, client_order_id=i, account=account))
                   for i in decision.ids]
        if await self._write("end", account, cid, data, b"", cancels) == 0:
            return 0
        if decision.act is Act.CANCEL:
            log.warning("list of %s cancelled: exits %s cancelled", cid,
                        ", ".join(decision.ids) or "(none open)")
        else:
            log.info("list of %s is over: %s", cid, decision.why)
        return 1

    async def _write(self, op: str, account: str, cid: str, expected: bytes, new: bytes,
                     requests: list[bytes]) -> Any:
        """lists.lua: 0 when the list changed meanwhile (nothing written), else 1 or the
        pending entry id of the last request published."""
        k = self.keys
        wrote = await self.script(
            keys=[k.lists(account), k.lists_cancel, k.emulator_lease(account), k.pending],
            args=[op, self.token, cid, expected, new, *requests])
        if wrote == -2:
            raise LeaseLost
        return wrote

def queue_published(pipe: Any, keys: Keys, request: str, cid: str) -> None:
    """Queue the reads that tell what became of a request a worker published (its pending
    entry ``request``, '' before it is known; the order ``cid`` it may have made), for
    ``published``. The entry first: gone from the stream, its record (if it made an
    order) was written before (finish.lua), so the HGET after it sees it."""
    at = request or "0-1"  # no entry has that id: none to look for
    pipe.xrange(keys.pending, min=at, max=at, count=1)
    pipe.hget(keys.order(cid), "record")


def published(rows: list[Any]) -> list[tuple[bool, Order | None]]:
    """``queue_published``'s replies, per request: whether its entry still waits on the
    pending stream, and its order's record (None: none, or expired)."""
    return [(bool(entries), None if r is None else decode_order(r))
            for entries, r in zip(rows[::2], rows[1::2], strict=True)]


def _exit_state(exit: Exit, waiting: bool, state: OrderState | None) -> ExitState:
    """What became of a published exit: its order's state, or without a record, whether
    its request waits on the pending stream, was answered without an order, or had one
    whose record has expired."""
    if state is not None:
        return state
    if exit.seen:
        return Seen.GONE
    if not exit.request or waiting:
        return Seen.PENDING
    return Seen.REFUSED

