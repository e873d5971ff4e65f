"""``Gate``: at most ``cap`` calls of this worker at one broker account at once.

The shared limiter (limiter.py) counts what the broker publishes, but a broker may refuse
sooner (its cap lowered, other programs on the same IP): then it answers 429, the limiter
pauses every worker, and what is already on the wire is refused too. Binance bans an IP
(418) that keeps sending into 429s. A worker holds a slot from before it asks the limiter
until the broker's answer is in and, for a 429, until the pause is shared; so after a
broker's first 429 no more of its calls than the slots of the workers can still arrive.

Slots are handed out first come, first served: a batch asking for many waits its turn and
does not starve, nor get starved by, single calls. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    """A counting semaphore whose ``take`` may ask for several slots (at most ``cap``)."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"a gate needs at least one slot, got {cap}")
        self.cap = cap
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, wanted: int) -> int:
        """Wait for ``min(wanted, cap)`` slots and return that many; give them back with
        ``give``. A cancelled waiter leaves with none."""
        n = max(1, min(wanted, self.cap))
        if not self._waiters and self.used + n <= self.cap:
            self.used += n
            return n
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(n)  # granted, then cancelled before it could use them
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()  # a batch that blocked the head may have left
            raise
        return n

    def give(self, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        assert self.used >= 0, "gave back more slots than were taken"
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.done():  # cancelled, not yet removed by its task
                self._waiters.popleft()
                continue
            if self.used + n > self.cap:
                return
            self._waiters.popleft()
            self.used += n
            future.set_result(None)
