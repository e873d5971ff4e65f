"""The turn to read: a worker's lanes (worker.py) take turns at the requests stream.

A lane takes the turn, reads a batch, and keeps the turn while the batch only computes in
this process and talks to this worker's Redis; the next lane reads once it is passed on.
Until then the lane holding it reads the next batch too: at ordinary load one lane reads
every batch, and the others only wait for a batch that waits.
So at ordinary load the requests that come while a batch is being decided and written wait
in the stream and make the next batch together, rather than a batch of one each read by
an idle lane: what a batch costs beyond its orders (the reads and the write's round trips,
the checks' snapshot, the script's own work) is paid once for them all, which is what lets
one worker keep up with a steady flow of orders sent one at a time.

A batch that is about to wait on anything else (a broker over the network or with a
simulated latency, a rate limit's capacity, a breaker's trial, a pause before trying
again) passes the turn on first (``pass_turn``): the next lane reads meanwhile, as every
lane always could, so one slow broker or account holds back no other request.

Pure asyncio; no I/O.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar


class Turn:
    """One lane's hold of the turn; passed on once, however often asked."""

    __slots__ = ("_lock", "passed")

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self.passed = False

    def pass_on(self) -> None:
        if not self.passed:
            self.passed = True
            self._lock.release()

    def batch(self) -> _Batch:
        """``with turn.batch()`` around each batch the lane reads while it holds the turn:
        what ``pass_turn`` passes within it, and from the tasks it starts until it ends."""
        return _Batch(self)


class _Hold:
    """A claim on a turn that ``pass_turn`` may use while it lasts: a lane's whole hold
    (``Turns.take``) or one of its batches (``Turn.batch``)."""

    __slots__ = ("ended", "turn")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.ended = False


# The claim of the running batch (or lane). Tasks it starts inherit it: passing it from
# one of them once the claim ended passes nothing, though the lane may hold the same turn
# still, for the batches it reads after.
_HELD: ContextVar[_Hold | None] = ContextVar("orderstream_turn", default=None)


class _Batch:
    """``Turn.batch``'s context: a class rather than a generator, as it runs for every
    batch."""

    __slots__ = ("_hold", "_token")

    def __init__(self, turn: Turn) -> None:
        self._hold = _Hold(turn)

    def __enter__(self) -> None:
        self._token = _HELD.set(self._hold)

    def __exit__(self, *exc: object) -> None:
        _HELD.reset(self._token)
        self._hold.ended = True


class Turns:
    """The turn of one worker's lanes: one lane holds it at a time, in the order they
    asked (asyncio.Lock is first come, first served)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def take(self) -> _Taking:
        """``async with turns.take() as turn``: wait for the turn and hold it for the block
        (or until passed on within it)."""
        return _Taking(self._lock)


class _Taking:
    """``Turns.take``'s context: a class rather than a generator, as it runs for every
    batch."""

    __slots__ = ("_hold", "_lock", "_token")

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def __aenter__(self) -> Turn:
        await self._lock.acquire()
        self._hold = _Hold(Turn(self._lock))
        self._token = _HELD.set(self._hold)
        return self._hold.turn

    async def __aexit__(self, *exc: object) -> None:
        _HELD.reset(self._token)
        self._hold.ended = True
        self._hold.turn.pass_on()


def pass_turn() -> None:
    """Let the next lane read now: called before the running batch waits on anything but
    this process and its Redis. Outside a lane's batch (a background pass, the reclaimer, a
    task of a batch that ended), or when already passed, it does nothing."""
    hold = _HELD.get()
    if hold is not None and not hold.ended:
        hold.turn.pass_on()
