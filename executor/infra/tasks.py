"""Ending tasks that may swallow a cancel, keeping background loops running, and handing
the event loop back from a long pass."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], what: str, *,
                          wait_s: float = 0.5, rounds: int = 20) -> set[asyncio.Task[object]]:
    """Cancel ``tasks`` and wait for them to end, cancelling again those that go on: redis-py
    can swallow a cancel that lands inside a command (redis-py issue 2028; its cluster
    client then retries the command), and a loop that never saw it would run for ever.
    Gives up after ``rounds`` waits of ``wait_s``, logging ``what`` tasks it leaves running;
    returns them."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    if pending:
        log.error("%s %s did not stop within %g s; left running", what,
                  sorted(t.get_name() for t in pending), rounds * wait_s)
    return pending


async def supervised(name: str, loop: Callable[[], Awaitable[None]], *,
                     running: Callable[[], bool], sleep: Callable[[float], Awaitable[None]],
                     failed: Callable[[str], None], start_s: float = 0.1,
                     max_s: float = 5.0) -> None:
    """Run a background loop while ``running()``. Each loop rides out Redis errors itself;
    anything else (a bug, a record it cannot read) is logged, told to ``failed`` (a metric
    an alert watches) and the loop starts again after a pause doubling from ``start_s`` to
    ``max_s``, since a gather of the process's tasks would otherwise end with it. A loop
    that keeps failing keeps saying so: positions that stop moving must not go unnoticed."""
    delay = start_s
    while running():
        started = time.monotonic()
        try:
            await loop()
            return
        except Exception:
            failed(name)
            if time.monotonic() - started > max_s:
                delay = start_s  # it had been working: a new failure
            log.exception("background loop %s failed; restarting it in %.1fs", name, delay)
            await sleep(delay)
            delay = min(delay * 2, max_s)


class Slices:
    """Hands the event loop back (``await slices.pause()`` between items of a pass) once
    the pass has run ``budget_s`` since it last did: a background pass that keeps the loop
    for milliseconds holds up every request that arrives meanwhile, by all of it (at 200
    orders/s, a positions fold page of 40 orders was most of the worker's p99). A pause
    that is not due costs a clock read; a loop over many small items asks ``due()`` and
    awaits ``hand_back()`` only then, as even an await that does not suspend makes a
    coroutine (a fold awaited one per event, a few per cent of its CPU)."""

    def __init__(self, budget_s: float = 0.0005) -> None:
        self.budget_s = budget_s
        self._since = time.perf_counter()

    def start(self) -> None:
        """A new pass: its time counts from now (its awaits on Redis handed the loop back)."""
        self._since = time.perf_counter()

    def due(self) -> bool:
        """Whether the pass has run its budget since it last handed the loop back."""
        return time.perf_counter() - self._since >= self.budget_s

    async def pause(self) -> None:
        if self.due():
            await self.hand_back()

    async def hand_back(self) -> None:
        # One turn of the loop. What is ready runs before the pass goes on; a reply that
        # arrives during a slice is read after the next one, and its lane runs then: a
        # request waits a slice or two, not the whole pass.
        await asyncio.sleep(0)
        self._since = time.perf_counter()
