"""Step 3b: trading state and pre-trade risk checks, after idempotency, before persist.

Per account of the batch (the accounts side by side, their writes in one round trip:
infra/coalesce.py): one snapshot of the shared risk state (safety/risk/state.py), the
batch's new orders checked in order against it in Python with Decimal (safety/risk/rules.py; each
order that passes is added to the in-memory book, so two orders of one batch see each
other), then the passing orders' reservations written by one compare-and-set on the
account's checks version. If another worker (or a limit change) changed the state in
between, the batch is checked again on the new state, a bounded number of times (the
positions projector's pages commute with the commit: safety/risk/state.py); so of two
orders from two workers that each fit but together exceed a limit, one passes and one is
denied. A batch that keeps losing takes the account's turn (``_Turn``, risk_reserve.lua),
so that the other workers' writes of the account wait for its own rather than beat it
again and again. When the state cannot be read or written, or keeps moving, the orders are
denied (``risk_denied:unavailable``): never passed unchecked.

``settle`` runs after persist: a request that ends there without its order (another
request holds the client id) gives its reservation back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from redis.exceptions import RedisError

from producer.contract import Action, ReasonCode, ResultStatus, risk_denied, wire

from ...brokers import sending
from ...brokers.sending import Door, door_for
from ...infra.coalesce import coalescing
from ...infra.lease import Lease
from ...infra.store import NewOrder, ScriptCall
from ...safety.risk.book import Book, Candidate, day_id, reservation_of
from ...safety.risk.limits import AccountLimits, Limits, resolve
from ...safety.risk.rules import Check, Denial, checks_for, evaluate
from ...safety.risk.state import ANY_TURN, RiskState, Snapshot, Write, open_by_symbol
from ...safety.trading import TradingState, effective
from .. import results
from ..job import Job
from ..reads import Reads
from ..services import Services
from ..turn import pass_turn
from . import taken
from .guard import hold, internal_error
from .persist import new_orders, persisted

log = logging.getLogger(__name__)
T = TypeVar("T")

UNAVAILABLE = risk_denied("unavailable")
_MAX_PAUSE_S = 0.1  # between two compare-and-set attempts (2 ms, 4 ms, ... up to this)
# Orders created in the reservations' script at most (Lua unpacks each script's arguments,
# three per order, and it stops near 8,000); more are left to the persist step.
_MAX_PERSISTED = 1_000
# Orders of a speculative write at most: a bigger batch (a burst) reads first, which costs
# little per order, and keeps the guard's arguments well inside what Lua unpacks.
_MAX_SPECULATED = 200
_MAX_MERGED = 4_096  # (account, symbol) pairs whose merged limits are kept
# Limits whose measures value every position of the account at its reference price.
_MARKED = ("max_position_pct", "max_total_exposure", "max_net_long", "max_net_short")


# A batch that lost compare-and-sets to other workers takes its account's turn
# (infra/lua/risk_reserve.lua) before it decides again: the others' writes of the account
# then wait for its own, instead of some batch losing again and again until it runs out
# of attempts (two workers on one account at 2,000 orders/s denied up to 1% of the orders
# so, docs/development.md). Taken after two losses, not one: most batches win their
# second try, and a turn makes the others' writes queue. Held this long at most, should
# its holder stall; waited for this long at most, after which the batch tries without it
# (the compare-and-set decides, as ever).
_TURN_MS = 250
_TURN_AFTER = 2  # lost writes before a batch takes the turn
_TURN_WAIT_S = 0.5


class _Turn:
    """A batch's hold on its account's turn: taken (``take``) once it lost writes
    (``_TURN_AFTER``), given back by the write that applies (the script deletes it), else
    by ``give_back``."""

    def __init__(self, state: RiskState, account: str, token: str) -> None:
        self.state, self.account, self._token = state, account, token
        self.lease: Lease | None = None  # made once needed: most batches never lose
        self.held = False

    @property
    def token(self) -> str:
        return self._token if self.held else ""

    async def take(self) -> None:
        if self.lease is None:
            self.lease = self.state.turn(self.account, self._token)
        deadline = time.monotonic() + _TURN_WAIT_S
        while not await self.lease.hold(_TURN_MS):
            if time.monotonic() >= deadline:
                self.held = False
                return
            pass_turn()  # the next lane reads meanwhile
            await asyncio.sleep(random.uniform(0.0005, 0.002))
        self.held = True

    def written(self) -> None:
        """A write of the batch applied: it gave the turn back."""
        self.held = False

    async def give_back(self) -> None:
        if self.held and self.lease is not None:
            self.held = False
            with contextlib.suppress(RedisError):  # it expires by itself
                await self.lease.release()


def _by_account(jobs: Iterable[Job]) -> dict[str, list[Job]]:
    """The jobs (each with its spec) by account, in the order each account first comes."""
    by_account: dict[str, list[Job]] = {}
    for job in jobs:
        assert job.spec is not None
        by_account.setdefault(job.spec.account, []).append(job)
    return by_account


def pause_s(attempt: int) -> float:
    """The pause after a lost compare-and-set (attempt 0, 1, ...): exponential with full
    jitter. On a loaded machine a batch takes long to decide, and short pauses had two
    workers collide until both ran out of attempts."""
    return random.uniform(0, min(0.002 * 2 ** attempt, _MAX_PAUSE_S))


async def pause(attempt: int) -> None:
    """Wait ``pause_s(attempt)``, the worker's next lane reading meanwhile."""
    pass_turn()
    await asyncio.sleep(pause_s(attempt))


class Risk:
    def __init__(self, svc: Services, state: RiskState) -> None:
        self.svc = svc
        self.state = state
        self.settings = svc.settings.risk
        self._swept: dict[str, int] = {}  # account -> when its orphans were last looked for
        # One batch of an account at a time in this process: its lanes would otherwise
        # mostly make each other decide again (the compare-and-set stays for other workers).
        self._locks: dict[str, asyncio.Lock] = {}
        # (account, symbol) -> the run-time limits they were merged with, the limits, and
        # the checks they switch on (``_limits``).
        self._merged: dict[tuple[str, str],
                           tuple[AccountLimits | None, Limits, tuple[Check, ...]]] = {}
        self._turns = itertools.count(1)  # this process's tokens on accounts' turns

    async def __call__(self, jobs: Sequence[Job], *, persist: bool = False) -> None:
        """``persist``: the orders that pass are also created (pipeline/steps/persist.py),
        in the script that makes their reservations: one round trip instead of two. For a
        batch whose steps need nothing between the two (an amend's cancel does)."""
        todo = [j for j in jobs if j.result is None and j.order is None and j.spec is not None
                and j.client_order_id is not None]
        parents = [j for j in todo if j.spec is not None and j.spec.algo is not None]
        if parents:
            await self._parents(parents)
            todo = [j for j in todo if j.spec is not None and j.spec.algo is None]
        for outcome in await self._side_by_side(
                self._locked(account, group, persist)
                for account, group in _by_account(todo).items()):
            if isinstance(outcome, BaseException):
                raise outcome  # a Redis error: the batch stays pending, as ever

    async def _side_by_side(self, runs: Iterable[Awaitable[T]]) -> list[T | BaseException]:
        """Each account's run, side by side: the writes they make in the same turn of the
        event loop go in one round trip (infra/coalesce.py), not one each, in turn. What
        each returned or raised, once all have ended. A batch of one account (the usual
        one) runs as it is, no task made, its exception raised here."""
        pending = list(runs)
        if len(pending) == 1:
            return [await pending[0]]
        with coalescing(self.svc.store.coalescer):
            return await asyncio.gather(*pending, return_exceptions=True)

    async def _locked(self, account: str, jobs: list[Job], persist: bool) -> None:
        async with self._locks.setdefault(account, asyncio.Lock()):
            await self._account(account, jobs, persist)

    async def settle(self, jobs: Sequence[Job]) -> None:
        """Release the reservations of requests that persist did not turn into their own
        order (the client id belongs to another request)."""
        releases: dict[str, list[tuple[str, str]]] = {}
        for job in jobs:
            if not job.reserved:
                continue
            job.reserved = False
            if job.order is None or job.order.request_id != job.request_id:
                assert job.spec is not None and job.client_order_id is not None
                releases.setdefault(job.spec.account, []).append(
                    (job.client_order_id, job.request_id))
        for account, items in releases.items():
            try:
                await self._release(account, items)
            except RedisError as exc:
                log.warning("could not release %d reservations of %s (the orphan sweep "
                            "will): %s", len(items), account, exc)

    async def _release(self, account: str, items: Sequence[tuple[str, str]]) -> bool:
        """Delete the reservations of these (client id, request id) while they are still
        those requests'; False if other workers kept moving the state."""
        owner = dict(items)
        for _ in range(self.settings.attempts):
            day = self._day()
            snap = await self.state.snapshot(account, day, owner)
            drop = [(cid, r) for cid, r in snap.reservations.items()
                    if r.request_id == owner[cid]]
            if not drop or await self.state.commit(account, day, snap, Write(drop=drop),
                                                   ANY_TURN):
                return True
        return False

    def _day(self) -> str:
        return day_id(self.svc.clock(), self.settings.day_offset_ms)

    async def _account(self, account: str, jobs: list[Job], persist: bool) -> None:
        turn = _Turn(self.state, account, f"{self.svc.worker}:{next(self._turns)}")
        try:
            await self._attempts(account, jobs, persist, turn)
        finally:
            await turn.give_back()

    async def _attempts(self, account: str, jobs: list[Job], persist: bool,
                        turn: _Turn) -> None:
        reads = jobs[0].reads
        prices = self._read_prices(account, reads)
        attempts = self.settings.attempts
        # Their reservations are read: a redelivered request's own, an amend's old order's.
        cids = [cid for j in jobs for cid in (j.client_order_id or "", *j.cancelled)]
        for attempt in range(attempts):
            day = self._day()
            try:
                if attempt >= _TURN_AFTER:
                    await turn.take()  # kept losing to other writers: go first now
                # The batch's first read, once: a second attempt reads anew.
                read = (reads.snapshots.pop(account, None)
                        if reads is not None and reads.day == day else None)
                snap = await self.state.snapshot(account, day, cids, read=read)
                decisions, write = await self._check(account, jobs, snap, prices)
                passed = [j for j, d in zip(jobs, decisions, strict=True) if d is None]
                call: ScriptCall | None = None
                if persist and write.put and len(passed) <= _MAX_PERSISTED:
                    items = new_orders(self.svc, passed)
                    call = self.state.commit_call(account, day, snap, write, turn.token)
                elif write:
                    if not await self._commit(account, day, snap, write, turn.token):
                        await pause(attempt)
                        continue
                    turn.written()
            except (RedisError, ValueError) as exc:
                log.warning("risk state of %s unavailable: %s", account, exc)
                self._deny_all(jobs, f"risk state of account {account} could not be read or "
                               f"written ({exc}): denied, not passed unchecked")
                return
            except Exception as exc:
                # A bug in a check must not pass orders, nor keep them pending forever, nor
                # deny the orders it did not trip on: each is checked alone (nothing was
                # reserved, or what was is its own request's, replaced when decided again),
                # and the one that trips it alone fails internal_error.
                if len(jobs) > 1:
                    log.warning("risk checks of %s failed over %d orders (%s); checking each "
                                "alone", account, len(jobs), type(exc).__name__)
                    await turn.give_back()  # each alone takes its own, if it must
                    for job in jobs:
                        await self._account(account, [job], persist)
                    return
                internal_error(self.svc, jobs[0], "risk", exc)
                return
            if call is not None:
                # Outside the denials above: once sent, the orders may exist, so a Redis
                # error leaves the batch pending, as persist's own would (its redelivery
                # finds them, reservations and all, and carries on).
                if not await self._create(account, day, snap, write, jobs, decisions, items,
                                          call):
                    await pause(attempt)
                    continue
                turn.written()
            else:
                self._apply(jobs, decisions)
            await self._sweep(account)
            return
        # Orders refused for a reason of ours, not the trader's: said where operators look
        # (the requests counter by reason_code too, which an alert watches).
        log.warning("denied %d orders of %s (risk_denied:unavailable): its risk state kept "
                    "changing under other workers for %d compare-and-set attempts",
                    len(jobs), account, attempts)
        self._deny_all(jobs, f"risk state of account {account} kept changing under other "
                       f"workers for {attempts} attempts: denied, not passed unchecked")

    async def speculate(self, jobs: Sequence[Job]) -> list[Job]:
        """Decide and write a batch of new orders without reading their accounts' state
        first, at ordinary load the batch's one round trip: per account, the checks run on
        the state as this process's last write of the account left it
        (``RiskState.speculative``), and the write that reserves for and creates the orders
        that pass (and, on the paper exchange, takes them and writes their outcomes) is
        guarded by unchanged.lua, which stands in for every read the usual way makes: the
        idempotency step's records, the gate's breaker, the checks' snapshot. The accounts'
        writes go side by side, in one round trip (infra/coalesce.py). Returns the jobs
        decided, as the usual steps would have: those of the accounts whose write applied.
        The others' (the state moved, a breaker is not closed, a client id is known, no
        write this day yet, nothing passed, a bug) are untouched, nothing of them written,
        and go the usual way, from its first read. Denials alone are never answered from
        here: only a write checks the state they were decided on."""
        todo = [j for j in jobs if j.result is None and j.order is None]
        if (not todo or len(todo) != len(jobs) or len(todo) > _MAX_SPECULATED
                or any(j.action is not Action.PLACE or j.spec is None or j.spec.algo is not None
                       or j.client_order_id is None or j.cancelled for j in todo)):
            return []
        cids = [j.client_order_id or "" for j in todo]
        if len(set(cids)) != len(cids):
            return []  # the usual way answers the second "duplicate"
        by_account = _by_account(todo)
        applied = await self._side_by_side(self._speculate(account, group)
                                           for account, group in by_account.items())
        decided: list[Job] = []
        failed: BaseException | None = None
        for (account, group), outcome in zip(by_account.items(), applied, strict=True):
            if outcome is True:
                decided += group
            elif isinstance(outcome, RedisError) or not isinstance(outcome, Exception | bool):
                failed = failed or outcome  # its write may have applied: the batch stays pending
            elif isinstance(outcome, Exception):
                # Met before its write (after it, ``_create`` holds the jobs itself): nothing
                # of the account is written, and the usual way decides its orders.
                self.svc.metrics.internal_errors.labels("speculate").inc()
                log.error("a speculative write of account %s failed; its orders go the usual "
                          "way", account, exc_info=outcome)
        if failed is not None:
            raise failed
        return decided

    async def _speculate(self, account: str, todo: list[Job]) -> bool:
        """``speculate`` for the new orders of one account; True when its write applied."""
        cids = [j.client_order_id or "" for j in todo]
        async with self._locks.setdefault(account, asyncio.Lock()):
            day = self._day()
            snap = self.state.speculative(account, day)
            if snap is None:
                return False
            try:
                decisions, write = await self._check(account, todo, snap, {})
                passed = [j for j, d in zip(todo, decisions, strict=True) if d is None]
                if not write.put or write.drop:
                    return False
                items = new_orders(self.svc, passed)
                call = self.state.commit_call(account, day, snap, write)
                guard = self.state.guard_call(account, snap, cids)
            except Exception:
                # The usual way meets it again, and answers for it.
                log.debug("no speculative write for %s", account, exc_info=True)
                return False
            applied = await self._create(account, day, snap, write, todo, decisions, items,
                                         call, guard)
            self.svc.metrics.speculative_writes.labels(
                account, "applied" if applied else "missed").inc()
            if not applied:
                self.state.missed(account)
                return False
            self.state.applied(account)
            await self._sweep(account)
        return True

    async def _check(self, account: str, jobs: list[Job], snap: Snapshot,
                     prices: dict[str, Decimal | None]) -> tuple[list[Denial | None], Write]:
        """The jobs checked on ``snap``, with the reference prices they need (``prices``,
        completed here)."""
        merged = [self._limits(account, j.spec.symbol, snap.runtime)
                  for j in jobs if j.spec is not None]
        limits = [lim for lim, _ in merged]
        await self._price(account, prices, jobs, snap, limits)
        return self._decide(account, jobs, snap, merged, prices)

    def _limits(self, account: str, symbol: str, runtime: AccountLimits | None
                ) -> tuple[Limits, tuple[Check, ...]]:
        """The limits of the account's orders in ``symbol`` and the checks they switch on,
        merged once for as long as its run-time limits are the same object (a speculative
        snapshot carries its read's)."""
        key = (account, symbol)
        known = self._merged.get(key)
        if known is not None and known[0] is runtime:
            return known[1], known[2]
        limits = resolve(self.settings, account, symbol, runtime)
        checks = checks_for(limits)
        if len(self._merged) >= _MAX_MERGED:
            self._merged.clear()  # only a cache: bounded whatever the symbols asked for
        self._merged[key] = (runtime, limits, checks)
        return limits, checks

    async def _create(self, account: str, day: str, snap: Snapshot, write: Write,
                      jobs: list[Job], decisions: list[Denial | None],
                      items: list[NewOrder], call: ScriptCall,
                      guard: ScriptCall | None = None) -> bool:
        """Write the reservations (``call``) and create the orders that passed (``items``)
        in one script, guarded by ``guard`` when given; on the paper exchange also take
        them and write their outcomes. False when the write did not apply (nothing
        written, nothing of the jobs changed); else the jobs are decided (or held, where
        a bug met them after the write)."""
        passed = [j for j, d in zip(jobs, decisions, strict=True) if d is None]
        door = self._door(account, passed, items)
        codes: list[int] | None = None
        ahead: list[taken.Taken] | None = None
        finished, elapsed = False, 0.0
        if door is None:
            begun = await self.svc.store.reserve_and_begin(items, call, guard)
        else:
            ahead = self._ahead(passed, items, door)
            started = time.perf_counter()
            got = await self.svc.store.reserve_begin_and_open(
                items, call, door.script, ScriptCall(door.keys, door.args),
                [t.outcome for t in ahead or ()], guard, door.probes)
            begun, codes, finished = (None, None, False) if got is None else got
            elapsed = time.perf_counter() - started
        if begun is None:
            return False
        try:
            self.state.wrote(account, day, snap, write)
            if finished:  # the exchange's call, with no other
                self.svc.metrics.broker_called(account, "submit", elapsed)
            if door is not None and codes is not None and not finished:
                door.opened(codes)
                for job in passed:
                    job.at_record = True
            self._apply(jobs, decisions)
            persisted(self.svc, passed, items, begun)
            if ahead is not None and finished:
                taken.written(ahead)
                await self._taken(account, door)
        except Exception as exc:
            # Their orders are written: left pending, redone from the records.
            hold(self.svc, [j for j in jobs if j.result is None], "risk", exc)
        return True

    def _door(self, account: str, jobs: Sequence[Job], items: Sequence[NewOrder]
              ) -> Door | None:
        """Where the account's exchange can take these new orders in the very script that
        creates them (the paper exchange: brokers/sending.py ``door_for``), its door, each
        order under its delivery's send token; else None."""
        orders = [(item.order.client_order_id, item.order.spec) for item in items]
        try:
            open_door = door_for(self.svc.brokers[account], orders)
            if open_door is None:
                return None
            return open_door(orders, {cid: self.svc.send_token(job)
                                      for (cid, _), job in zip(orders, jobs, strict=True)})
        except Exception:
            # Only a shortcut: the orders go the usual way, through the submit step.
            self.svc.metrics.internal_errors.labels("door").inc()
            log.exception("the door of account %s could not be opened", account)
            return None

    def _ahead(self, jobs: Sequence[Job], items: Sequence[NewOrder], door: Door
               ) -> list[taken.Taken] | None:
        """The outcomes to write in the door's script, where they are known before it
        (pipeline/steps/taken.py); else None."""
        try:
            return taken.outcomes(self.svc, jobs, items, door.reports)
        except Exception:
            # Only a shortcut: the orders are answered the usual way.
            self.svc.metrics.internal_errors.labels("door").inc()
            log.exception("the outcomes of %d orders at their door could not be made",
                          len(jobs))
            return None

    async def _taken(self, account: str, door: Door | None) -> None:
        """Tell the account's guards (the breaker's count) of the answers the door's
        script wrote, which no submit call of theirs will pass."""
        if door is None:
            return
        try:
            await sending.taken(self.svc.brokers[account], door.reports)
        except Exception:
            # Bookkeeping: the outcomes are written whatever becomes of it.
            log.exception("the guards of account %s were not told of %d answers", account,
                          len(door.reports))

    async def _sweep(self, account: str) -> None:
        """Release orphans: old reservations whose request never became their order (it
        was dead-lettered after a crash between the checks and persist, or its client id
        was another request's). Best effort, at most ten times per ``orphan_after_ms``; an
        orphan only ever over-counts."""
        now, after = self.svc.clock(), self.settings.orphan_after_ms
        if now - self._swept.get(account, 0) < after // 10:
            return
        self._swept[account] = now
        try:
            held = await self.state.all_reservations(account)
            stale = [(cid, r.request_id) for cid, r in held.items() if r.at < now - after]
            if not stale:
                return
            recorded = await self.svc.store.load_orders([cid for cid, _ in stale])
            orphans = [(cid, rid) for (cid, rid), order in zip(stale, recorded, strict=True)
                       if order is None or order.request_id != rid]
            if orphans:
                log.warning("releasing %d orphaned reservations of %s: %s", len(orphans),
                            account, ", ".join(cid for cid, _ in orphans))
                await self._release(account, orphans)
        except RedisError as exc:
            log.warning("orphaned reservations of %s not looked for: %s", account, exc)
        except Exception:
            # Best effort: a bug here must not touch the batch it follows.
            self.svc.metrics.internal_errors.labels("risk_sweep").inc()
            log.exception("orphaned reservations of %s not looked for", account)

    async def _commit(self, account: str, day: str, snap: Snapshot, write: Write,
                      turn: str = "") -> bool:
        try:
            return await self.state.commit(account, day, snap, write, turn)
        except RedisError:
            # It may have been applied: give back what it reserved, as its orders are denied.
            try:
                await self._release(account, [(cid, r.request_id) for cid, r, _ in write.put])
            except RedisError as exc:
                log.error("reservations of %d denied orders of %s may be left (the orphan "
                          "sweep will release them): %s", len(write.put), account, exc)
            raise

    def _read_prices(self, account: str, reads: Reads | None) -> dict[str, Decimal | None]:
        """The reference prices the batch's first read got for this account's symbols."""
        prices: dict[str, Decimal | None] = {}
        for (owner, symbol), price in (reads.prices.items() if reads is not None else ()):
            if owner == account:
                prices[symbol] = self._price_of(account, symbol, price)
        return prices

    def _price_of(self, account: str, symbol: str,
                  price: Decimal | BaseException | None) -> Decimal | None:
        if isinstance(price, BaseException):
            log.warning("no reference price for %s/%s: %s", account, symbol, price)
            return None
        # As a wire decimal once: every reservation of the symbol is made of it.
        return None if price is None else wire(price)

    async def _price(self, account: str, prices: dict[str, Decimal | None], jobs: list[Job],
                     snap: Snapshot, limits: list[Limits]) -> None:
        """Fetch the reference prices the checks need that are not known yet: the orders'
        symbols, and every held symbol when a limit values the positions."""
        wanted = {j.spec.symbol for j in jobs if j.spec is not None}
        if any(getattr(lim, name) is not None for lim in limits for name in _MARKED):
            wanted |= {p.symbol for p in snap.positions if p.quantity != 0}
        missing = sorted(wanted - prices.keys())
        got = await self.svc.reference_prices([(account, s) for s in missing])
        for symbol, price in zip(missing, got, strict=True):
            prices[symbol] = self._price_of(account, symbol, price)

    def _decide(self, account: str, jobs: list[Job], snap: Snapshot,
                limits: list[tuple[Limits, tuple[Check, ...]]],
                prices: dict[str, Decimal | None],
                ) -> tuple[list[Denial | None], Write]:
        """Check the jobs in order against the snapshot (``limits``: each job's, with the
        checks they switch on). Pure."""
        write = Write()
        book = Book(account=account, state=snap.state, symbols=open_by_symbol(snap.sums),
                    open_orders=snap.open_orders, day_orders=snap.day_orders,
                    day_pnl=snap.day_pnl, prices=prices)
        for position in snap.positions:
            book.hold(position)
        book.quotes = {symbol: self.svc.quote_asset(account, symbol) for symbol in {
            *book.symbols, *(j.spec.symbol for j in jobs if j.spec is not None)}}
        for job in jobs:
            held = snap.reservations.get(job.client_order_id or "")
            if held is not None and held.request_id == job.request_id:
                book.unreserve(held)  # redelivered: decided again, replaced or dropped
                write.drop.append((job.client_order_id or "", held))
            for cid in job.cancelled:
                # An amend's new order replaces its old one: judged with the old order's
                # reservation and open-order count taken out, not in addition. The old one
                # is cancelled only if this passes; the projector releases its reservation
                # when it folds the cancel, till then it only does not count here.
                old = snap.reservations.get(cid)
                if old is not None:
                    book.unreserve(old)
        now = self.svc.clock()
        decisions: list[Denial | None] = []
        for job, (lim, checks) in zip(jobs, limits, strict=True):
            assert job.spec is not None and job.client_order_id is not None
            cid = job.client_order_id
            held = snap.reservations.get(cid)
            if held is not None and held.request_id != job.request_id:
                decisions.append(Denial(ReasonCode.DUPLICATE, (
                    f"client_order_id {cid} is being placed by request {held.request_id}")))
                continue
            candidate = Candidate(cid, job.request_id, job.spec, prices.get(job.spec.symbol))
            denial = evaluate(candidate, book, lim, checks)
            decisions.append(denial)
            if denial is None:
                reservation = reservation_of(candidate, now)
                book.reserve(reservation)
                book.day_orders += held is None
                write.put.append((cid, reservation, held is None))
        return decisions, write

    async def _parents(self, jobs: list[Job]) -> None:
        """An algorithm's parent reserves nothing and passes no limit itself: it sends
        nothing, and each of its children passes the checks as it goes. The trading state
        applies to it still: a halted account takes no schedule, a reducing one only a
        ``reduce_only`` one (whose children reduce, or are denied)."""
        states: Any = await self.svc.store.redis.hgetall(self.svc.store.keys.trading)
        now = self.svc.clock()
        for job in jobs:
            assert job.spec is not None
            account = job.spec.account
            state = effective(states, account)
            why = (f"account {account} is halted: no new orders" if state is
                   TradingState.HALTED else
                   f"account {account} is reducing: only a reduce_only algorithm passes"
                   if state is TradingState.REDUCING and not job.spec.reduce_only else None)
            if why is not None:
                job.result = results.failure(job, ReasonCode.HALTED, why, now,
                                             self.svc.worker, status=ResultStatus.DENIED)

    def _apply(self, jobs: list[Job], decisions: list[Denial | None]) -> None:
        now = self.svc.clock()
        for job, denial in zip(jobs, decisions, strict=True):
            if denial is None:
                job.reserved = True
            else:
                status = (ResultStatus.FAILED if denial.code == ReasonCode.DUPLICATE
                          else ResultStatus.DENIED)
                job.result = results.failure(job, denial.code, denial.message, now,
                                             self.svc.worker, status=status)

    def _deny_all(self, jobs: list[Job], message: str) -> None:
        now = self.svc.clock()
        for job in jobs:
            job.result = results.failure(job, UNAVAILABLE, message, now, self.svc.worker,
                                         status=ResultStatus.DENIED)
