"""The shared pre-trade risk state of an account in Redis, read in one snapshot and written
by compare-and-set scripts, so the checks hold across any number of workers. Reading it
costs the same whatever the number of open orders: their totals are kept per symbol.

Keys (``Keys.risk(account, name)``):

- ``open``: hash client id -> Reservation JSON (book.py) of every open order that passed
  the checks. Created here; shrunk by fills and deleted on the order's end by the
  positions projector (projector.py, safety/risk/fills.py, infra/lua/positions.lua).
- ``sums``: hash of the open reservations' totals per symbol and side, decimal text:
  ``<symbol>|<side>|q+`` / ``n+`` (quantity / notional reserved, less what this step
  released itself; written only by the checks, under the version) and ``q-`` / ``n-``
  (released by fills and ends; written only by the projector, under its lease and cursor).
  Open = ``+`` minus ``-``: each field has a single writer, so neither needs to read the
  other's under a lock. ``<symbol>|n``: open orders of the symbol (an integer, HINCRBY by
  both). HLEN of ``open`` is the account's number of open orders.
- ``day:<YYYYMMDD>``: hash of the trading day (days start at ``risk.day_reset_utc``):
  ``orders`` (integer: orders that passed the checks, written here) and ``pnl`` (decimal
  text: realized PnL net of commission of the day's fills, written by the projector).
  Expires two days after its last write.
- ``v``: integer version, incremented by every change of the above, of the account's
  positions (projector) and of its run-time limits (``orderstream risk set``). Read with
  the snapshot: the guard of a speculative write (infra/lua/unchanged.lua) compares it, so
  that a batch decided without a read is written only on the state it assumed.
- ``cv``: the checks' version, what their compare-and-set compares: incremented by their
  own writes and by changes of the run-time limits, not by the projector. A page the
  projector writes between a batch's snapshot and its commit commutes with the commit
  (the projector writes positions, the ``-`` fields and day PnL the checks never write,
  increments the counts, and touches only reservations of orders that already have events,
  which a batch creates none of), so the outcome is that of the batch deciding and
  committing just before the page: the same as a projector a few ms later. The one thing
  both may change, a reservation the batch drops (a redelivered request's own), is
  compared by its JSON as read. Two batches, or a batch and a limit change, still
  exclude each other through ``cv``; the projector no longer makes a third of the
  batches decide again.

Every deletion of a reservation is conditional on it being what the deleter read (the
checks by the version, the projector by comparing the stored JSON), so a reservation is
released exactly once whoever gets to it first.

With ``Keys.positions`` (the account's fields alone, named by ``Keys.positions_of``),
``Keys.trading`` and ``Keys.risk_limits`` they make the snapshot. A trading state changes
no version (``orderstream trading`` writes the hash alone), so the commit compares the
account's and the global one as read: no order decided before a halt is reserved after it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from producer.contract import Side, decoder, encode
from producer.keys import Keys
from producer.replies import text

from ...infra.batch_read import BatchRead, BatchReader, raise_failed
from ...infra.lease import Lease
from ...infra.store import ScriptCall
from ...model.positions import Position, decode_position, position_key, split_key
from ..trading import GLOBAL, TradingState, effective, stored
from .book import EXACT, ZERO, Reservation, SymbolBook
from .limits import AccountLimits, decode_runtime

DAY_TTL_MS = 2 * 86_400_000
# A commit's turn token that applies whoever holds the account's turn: a release of
# reservations only gives back, and holds no other writer up.
ANY_TURN = "*"
_MAX_SKIPPED = 64  # batches of an account between two speculative writes, at most
_reservation = decoder(Reservation)


def decode_reservation(data: bytes | str) -> Reservation:
    reservation: Reservation = _reservation.decode(data)
    return reservation


def version_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "v")


def checks_version_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "cv")


def open_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "open")


def sums_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "sums")


def day_key(keys: Keys, account: str, day: str) -> str:
    return keys.risk(account, f"day:{day}")


def turn_key(keys: Keys, account: str) -> str:
    """Who goes first at the account's checks (risk_reserve.lua, pipeline/steps/risk.py)."""
    return keys.risk(account, "turn")


def sum_field(symbol: str, side: Side, what: str) -> str:
    """``what``: ``q+``, ``n+`` (reserved, the checks' fields), ``q-``, ``n-`` (released,
    the projector's)."""
    return f"{symbol}|{side}|{what}"


def count_field(symbol: str) -> str:
    return f"{symbol}|n"


def parse_sums(raw: dict[Any, Any]) -> dict[str, Decimal]:
    return {text(k): Decimal(text(v)) for k, v in raw.items()}


# The checks' per-side sums (a field "<symbol>|<side>|<q or n><+ or ->"): the SymbolBook
# total each moves, and whether it adds (reserved) or subtracts (released).
_SUMS: dict[str, tuple[str, bool]] = {
    f"{side}|{what}{sign}": (f"{side}_{'quantity' if what == 'q' else 'notional'}",
                             sign == "+")
    for side in (Side.BUY.value, Side.SELL.value) for what in "qn" for sign in "+-"}


def open_by_symbol(sums: dict[str, Decimal]) -> dict[str, SymbolBook]:
    """The open reservations' totals per symbol: reserved minus released."""
    books: dict[str, SymbolBook] = {}
    # Exact arithmetic through the context's methods: a localcontext() per batch cost more
    # than the sums it guards.
    add, subtract = EXACT.add, EXACT.subtract
    for name, value in sums.items():
        symbol, _, rest = name.partition("|")
        book = books.get(symbol)
        if book is None:
            book = books[symbol] = SymbolBook()
        if "|" not in rest:  # "<symbol>|n": the symbol's open orders
            book.orders = int(value)
            continue
        attr, adds = _SUMS[rest]
        setattr(book, attr, (add if adds else subtract)(getattr(book, attr), value))
    return books


@dataclass(slots=True)
class Snapshot:
    """An account's risk state at one instant (read in one script call)."""

    version: str  # the checks' version (``cv``)
    reservations: dict[str, Reservation]  # of the client ids asked for, where there is one
    open_orders: int
    sums: dict[str, Decimal]
    day_orders: int
    day_pnl: Decimal
    positions: list[Position]
    state: TradingState
    runtime: AccountLimits | None
    raw: dict[str, bytes] = field(default_factory=dict)  # the reservations' JSON, as read
    # The account's and the global trading states as stored (b"": absent), which the
    # commit compares: an order decided before a halt is not reserved after it.
    trading: tuple[bytes, bytes] = (b"", b"")
    full: str = "0"  # the account's version (``v``), moved by every change of the above
    # Of this process: its positions projector's pages of the account told before the
    # read (``RiskState.moving``); a page told after it may be missing from it.
    moves: int = 0


@dataclass(slots=True)
class Write:
    """Reservations to create (with whether each counts as an order of the day) and to
    delete (as read), applied by one compare-and-set on the version."""

    put: list[tuple[str, Reservation, bool]] = field(default_factory=list)
    drop: list[tuple[str, Reservation]] = field(default_factory=list)
    # sum_changes' answer, for the sums it was made on and the lengths of put and drop
    # then: the write's call and the state it leaves (``carried``) both need it.
    summed: tuple[dict[str, Decimal], int, int, dict[str, str], dict[str, int]] | None = field(
        default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.put or self.drop)


def sum_changes(sums: dict[str, Decimal], write: Write) -> tuple[dict[str, str], dict[str, int]]:
    """The new values of the checks' ``+`` fields and the changes of the order counts."""
    known = write.summed
    if (known is not None and known[0] is sums and known[1] == len(write.put)
            and known[2] == len(write.drop)):
        return known[3], known[4]
    # Summed per symbol and side first, then added to the stored values once: exact
    # arithmetic, so the same values (and text) as adding one reservation at a time, with
    # a field name made per symbol and side rather than per reservation.
    deltas: dict[tuple[str, Side], tuple[Decimal, Decimal]] = {}
    counts: dict[str, int] = {}
    changes = [(r, 1) for _, r, _ in write.put] + [(r, -1) for _, r in write.drop]
    for r, sign in changes:
        step = EXACT.add if sign > 0 else EXACT.subtract
        group = (r.symbol, r.side)
        quantity, notional = deltas.get(group) or (ZERO, ZERO)
        deltas[group] = (step(quantity, r.quantity), step(notional, r.notional))
        name = count_field(r.symbol)
        counts[name] = counts.get(name, 0) + sign
    totals: dict[str, str] = {}
    for (symbol, side), amounts in deltas.items():
        for what, amount in zip(("q+", "n+"), amounts, strict=True):
            name = sum_field(symbol, side, what)
            totals[name] = format(EXACT.add(sums.get(name, ZERO), amount), "f")
    write.summed = (sums, len(write.put), len(write.drop), totals, counts)
    return totals, counts


@dataclass(slots=True, frozen=True)
class Committed:
    """This process's last write of an account's checks that applied (``RiskState.wrote``):
    what carries a snapshot read at the version it compared against to the one it left."""

    snap: Snapshot  # what it was decided on
    day: str
    write: Write

    @property
    def before(self) -> str:
        return self.snap.version  # the checks' version it was compared against

    @property
    def after(self) -> str:
        return str(int(self.before) + 1)  # risk_reserve.lua increments it once


def carried(snap: Snapshot, cids: Iterable[str] | None, write: Write) -> Snapshot:
    """``snap`` as ``write`` leaves it, applied as infra/lua/risk_reserve.lua applies it:
    the same snapshot as a read just after the write would take (with no projector page
    between, which commutes with it: the module's docstring). ``cids``: the client ids
    whose reservations the snapshot holds, carried over the write; None: the snapshot
    returned holds none (the state a speculative write is decided on, ``wrote``). Pure."""
    totals, counts = sum_changes(snap.sums, write)
    sums = dict(snap.sums)
    sums.update((name, Decimal(value)) for name, value in totals.items())
    for name, delta in counts.items():
        count = sums.get(name, ZERO) + delta
        if count == 0:
            sums.pop(name, None)  # the script deletes a count that reaches 0
        else:
            sums[name] = count
    reservations: dict[str, Reservation] = {}
    raw: dict[str, bytes] = {}
    if cids is not None:
        reservations, raw = dict(snap.reservations), dict(snap.raw)
        for cid, _ in write.drop:
            reservations.pop(cid, None)
            raw.pop(cid, None)
        asked = set(cids)
        for cid, reservation, _ in write.put:
            if cid in asked:
                reservations[cid] = reservation
                raw[cid] = encode(reservation)
    # A put of a field that was there was its own drop first (a redelivered request's).
    return replace(snap, version=str(int(snap.version) + 1), full=str(int(snap.full) + 1),
                   reservations=reservations, raw=raw, sums=sums,
                   open_orders=snap.open_orders - len(write.drop) + len(write.put),
                   day_orders=snap.day_orders + sum(c for _, _, c in write.put))


@dataclass(slots=True, frozen=True)
class Page:
    """What one page of the positions fold wrote of one account's risk state
    (safety/risk/fills.py, infra/lua/positions.lua), and the version it left."""

    full: str  # the account's version (``v``) once the page's bump made it
    positions: list[Position]  # the account's positions it wrote, whole
    reservations: dict[str, Reservation | None]  # client id -> shrunk, or None: deleted
    totals: dict[str, Decimal]  # the released (``-``) totals it set
    counts: dict[str, int]  # the order counts it moved (one that reaches 0 is deleted)
    day_pnl: dict[str, Decimal]  # day -> the realized PnL it set


def paged(snap: Snapshot, day: str, page: Page) -> Snapshot:
    """``snap``, of the trading day ``day`` and holding no reservation (a speculative
    write's: ``RiskState.speculative``), as ``page`` leaves it when the page came right
    after it, applied as positions.lua applies it: the same snapshot as a read just after
    the page would take (but for the positions' order). Pure."""
    positions = {position_key(p.account, p.symbol): p for p in snap.positions}
    positions.update((position_key(p.account, p.symbol), p) for p in page.positions)
    sums = dict(snap.sums)
    sums.update(page.totals)
    for name, delta in page.counts.items():
        count = sums.get(name, ZERO) + delta
        if count == 0:
            sums.pop(name, None)
        else:
            sums[name] = count
    # The fold deletes a reservation only where it read one (its 'expect').
    deleted = sum(1 for now in page.reservations.values() if now is None)
    return replace(snap, full=page.full, positions=list(positions.values()), sums=sums,
                   open_orders=snap.open_orders - deleted,
                   day_pnl=page.day_pnl.get(day, snap.day_pnl))


@dataclass(slots=True)
class Read:
    """A snapshot queued on a batch read (``RiskState.queue_snapshot``), to be parsed later."""

    cids: list[str]  # whose reservations it reads
    writes: int  # this process's checks' writes of the account when it was queued
    size: int  # how many replies it makes
    replies: list[Any] = field(default_factory=list)
    moves: int = 0  # this process's projector pages of the account told before it


def parse_snapshot(replies: list[Any], account: str, wanted: list[str],
                   moves: int = 0) -> Snapshot:
    """The snapshot from the replies of ``RiskState.queue_snapshot``. Raises the error
    reply of a read that failed, ValueError / msgspec errors on state it cannot read."""
    raise_failed(replies)
    version, full, n_open, sums, (orders, pnl), positions, trading, runtime = replies[:8]
    held = replies[8] if wanted else []
    prefix = f"{account}:"
    raw = {cid: bytes(v) for cid, v in zip(wanted, held, strict=True) if v}
    return Snapshot(
        version=_version(version),
        reservations={cid: decode_reservation(v) for cid, v in raw.items()},
        open_orders=int(n_open),
        sums=parse_sums(sums),
        day_orders=int(orders or 0),
        day_pnl=Decimal(text(pnl)) if pnl is not None else ZERO,
        positions=[decode_position(v) for f, v in positions.items()
                   if text(f).startswith(prefix) and split_key(text(f))[0] == account],
        state=effective(trading, account),
        runtime=decode_runtime(runtime),
        raw=raw,
        trading=(_stored(trading, account), _stored(trading, GLOBAL)),
        full=_version(full),
        moves=moves,
    )


def _version(reply: Any) -> str:
    """A version as read (risk_reserve.lua's ``or '0'``: absent is 0)."""
    return "0" if reply is None else text(reply)


def _stored(states: dict[Any, Any], scope: str) -> bytes:
    value = stored(states, scope)
    return b"" if value is None else value.encode() if isinstance(value, str) else bytes(value)


class RiskState:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        # account -> writes of this process's checks so far (``wrote``): a snapshot read
        # before one of them is stale for certain, and not worth a compare-and-set as read.
        self.writes: dict[str, int] = {}
        self.last: dict[str, Committed] = {}  # account -> the last of them
        # account -> (its trading day, its state as this process knows it whole: after its
        # last write, with the positions fold's pages since carried over it), what a
        # speculative write is decided on (``speculative``).
        self._after: dict[str, tuple[str, Snapshot]] = {}
        # account -> the pages of this process's positions projector told of it
        # (``moving``), and of those the ones not written yet.
        self._moves: dict[str, int] = {}
        self._folding: dict[str, int] = {}
        # account -> speculative writes that did not apply in a row, batches to go before
        # the next.
        self._misses: dict[str, list[int]] = {}
        self._script = redis.register_script(
            (resources.files("executor.infra") / "lua" / "risk_reserve.lua").read_text())
        self._reader = BatchReader(redis)

    async def snapshot(self, account: str, day: str, cids: Iterable[str] = (), *,
                       read: Read | None = None) -> Snapshot:
        """Read the account's state, with the reservations of ``cids``. Raises RedisError,
        or ValueError / msgspec errors on state it cannot read (the caller denies: what is
        unreadable is not checked). ``read``: what ``queue_snapshot`` read (the batch's
        first read), taken instead when it covers ``cids`` and this process's checks wrote
        nothing for the account since. When they did (another lane's batch, whose write
        this read was made before or beside), the read is taken as it is if it saw the
        last write, or carried over that write if it was made at the version the write
        compared against (``carried``: the write is known here in full), so that the lane
        that waited does not read again; else it is read anew, as it would fail the
        compare-and-set for certain. Whatever is taken, the compare-and-set on the version
        it names still decides."""
        wanted = list(dict.fromkeys(cids))
        if read is not None and read.replies and set(wanted) <= set(read.cids):
            if read.writes == self.writes.get(account, 0):
                return parse_snapshot(read.replies, account, read.cids, read.moves)
            last = self.last.get(account)
            version = read.replies[0]
            seen = None if isinstance(version, Exception) else _version(version)
            if last is not None and last.day == day and seen in (last.before, last.after):
                snap = parse_snapshot(read.replies, account, read.cids, read.moves)
                return snap if seen == last.after else carried(snap, read.cids, last.write)
        batch = BatchRead()
        read = self.queue_snapshot(batch, account, day, wanted)
        return parse_snapshot(await self._reader.execute(batch), account, wanted, read.moves)

    def queue_snapshot(self, pipe: BatchRead, account: str, day: str,
                       wanted: list[str]) -> Read:
        """Queue the snapshot's reads on ``pipe``, made in one call so that they see one
        instant (the batch's first read queues them with its other reads:
        pipeline/steps/prefetch.py); returns the read, whose ``size`` replies are to be put
        in its ``replies``."""
        k = self.keys
        read = Read(wanted, self.writes.get(account, 0), 8 + bool(wanted),
                    moves=self._moves.get(account, 0))
        pipe.get(checks_version_key(k, account))
        pipe.get(version_key(k, account))
        pipe.hlen(open_key(k, account))
        pipe.hgetall(sums_key(k, account))
        pipe.hmget(day_key(k, account, day), ["orders", "pnl"])
        # The account's positions alone (the hash holds every account's).
        pipe.positions(k.positions, k.positions_indexed, k.positions_of(account))
        pipe.hgetall(k.trading)
        pipe.hget(k.risk_limits, account)
        if wanted:
            pipe.hmget(open_key(k, account), wanted)
        return read

    def turn(self, account: str, token: str) -> Lease:
        """The account's turn (risk_reserve.lua), as ``token`` takes and gives it back."""
        return Lease(self.redis, turn_key(self.keys, account), token)

    async def commit(self, account: str, day: str, snap: Snapshot, write: Write,
                     turn: str = "") -> bool:
        """Apply ``write`` if the account's checks version is still the snapshot's and the
        reservations it drops are still as read, and nobody else holds the account's turn
        (``turn``: the caller's token, ``commit_call``). False when not (nothing written)."""
        call = self.commit_call(account, day, snap, write, turn)
        done: bool = await self._script(keys=call.keys, args=call.args) == 1
        if done:
            self.wrote(account, day, snap, write)
        return done

    def wrote(self, account: str, day: str, snap: Snapshot, write: Write) -> None:
        """This process's checks applied ``write``, decided on ``snap``, to the account."""
        self.writes[account] = self.writes.get(account, 0) + 1
        self.last[account] = Committed(snap, day, write)
        self._after[account] = (day, carried(snap, None, write))

    def moving(self, accounts: Iterable[str]) -> None:
        """This process's positions projector is writing a page that moves these accounts'
        state: no speculative write of theirs until it is written (``paged``), and none on
        a state read before it that it is not carried over."""
        for account in accounts:
            self._moves[account] = self._moves.get(account, 0) + 1
            self._folding[account] = self._folding.get(account, 0) + 1

    def paged(self, pages: Mapping[str, Page | None]) -> None:
        """The page told of by ``moving`` is over: written, what it wrote of each account
        (with the version it left), or None where it was not. The state this process knows
        of an account is carried over the page when the page came right after it (the
        version it left is that state's plus one; whatever else came between, it is not);
        else it is not speculated on until a write decided on a read made after this."""
        for account, page in pages.items():
            self._folding[account] = self._folding.get(account, 1) - 1
            moves = self._moves.get(account, 0)
            known = self._after.get(account)
            if (page is not None and known is not None and known[1].moves == moves - 1
                    and int(known[1].full) + 1 == int(page.full)):
                day, snap = known
                self._after[account] = (day, replace(paged(snap, day, page), moves=moves))
            else:
                self._moves[account] = moves + 1

    def speculative(self, account: str, day: str) -> Snapshot | None:
        """The account's state as this process's last write of it today left it, with the
        pages of its positions fold since carried over it, without a read: what a read
        would find if nothing else changed it since, which ``guard_call`` makes the write
        that follows check. None when there is no such write, while a page of this
        process's fold is being written or after one not carried (the write would not
        apply), and for a while after speculative writes that did not apply (``missed``:
        other processes write the account, and a write that does not apply costs a round
        trip). It holds no reservation: the guard finds none under the client ids decided
        on it."""
        known = self._after.get(account)
        if (known is None or known[0] != day or self._folding.get(account)
                or known[1].moves != self._moves.get(account, 0)):
            return None
        misses = self._misses.get(account)
        if misses is not None and misses[1] > 0:
            misses[1] -= 1
            return None
        return known[1]

    def missed(self, account: str) -> None:
        """A speculative write of the account did not apply: the next ones wait for 2, 4,
        ... up to 64 batches of it after as many misses in a row."""
        misses = self._misses.setdefault(account, [0, 0])
        misses[0] += 1
        misses[1] = min(2 ** misses[0], _MAX_SKIPPED)

    def applied(self, account: str) -> None:
        """A speculative write of the account applied."""
        self._misses.pop(account, None)

    def guard_call(self, account: str, snap: Snapshot, cids: Sequence[str]) -> ScriptCall:
        """unchanged.lua's call, first in the script of a write decided on ``snap`` from
        ``speculative``, for new orders under ``cids``: it passes only if the account's state
        is still ``snap`` (its version ``v``), its breaker closed and no reservation or order
        record exists under those client ids."""
        k = self.keys
        return ScriptCall(
            keys=[version_key(k, account), k.breaker(account), open_key(k, account),
                  turn_key(k, account), *(k.order(cid) for cid in cids)],
            args=[snap.full, *cids])

    def commit_call(self, account: str, day: str, snap: Snapshot, write: Write,
                    turn: str = "") -> ScriptCall:
        """``commit``'s script call (infra/lua/risk_reserve.lua), to be made on its own or
        first in the script that also creates the orders (Store.reserve_and_begin).
        ``turn``: the caller's token on the account's turn ('' none; ``ANY_TURN``: a
        release, which applies whoever holds it)."""
        k = self.keys
        totals, counts = sum_changes(snap.sums, write)
        args: list[Any] = [snap.version, DAY_TTL_MS, sum(c for _, _, c in write.put),
                           account, GLOBAL, *snap.trading, turn]
        args.append(len(write.drop))
        for cid, _ in write.drop:
            args += [cid, snap.raw[cid]]
        args.append(len(write.put))
        for cid, reservation, _ in write.put:
            args += [cid, encode(reservation)]
        args.append(len(totals))
        for name, value in totals.items():
            args += [name, value]
        for name, delta in counts.items():
            args += [name, delta]
        return ScriptCall(
            keys=[checks_version_key(k, account), open_key(k, account), sums_key(k, account),
                  day_key(k, account, day), version_key(k, account), k.trading,
                  turn_key(k, account)],
            args=args)

    async def all_reservations(self, account: str) -> dict[str, Reservation]:
        """Every open reservation of the account (the orphan sweep, ``risk show``)."""
        raw: Any = await self.redis.hgetall(open_key(self.keys, account))
        return {text(cid): decode_reservation(v) for cid, v in raw.items()}


def released(sums: dict[str, Decimal], reservation: Reservation, quantity: Decimal,
             into: dict[str, Decimal]) -> None:
    """Count ``quantity`` of ``reservation`` as released in the projector's ``-`` fields
    (``into`` holds the new values, starting from ``sums``)."""
    # Context methods rather than localcontext(): the same exact arithmetic, for less (the
    # fold calls this for every fill).
    q_field, n_field = _released_fields(reservation.symbol, reservation.side)
    into[q_field] = EXACT.add(into.get(q_field, sums.get(q_field, ZERO)), quantity)
    into[n_field] = EXACT.add(into.get(n_field, sums.get(n_field, ZERO)),
                              EXACT.multiply(quantity, reservation.price))


@functools.lru_cache(maxsize=4096)
def _released_fields(symbol: str, side: Side) -> tuple[str, str]:
    # A fold meets a few symbols over and over: their field names are made once.
    return sum_field(symbol, side, "q-"), sum_field(symbol, side, "n-")

