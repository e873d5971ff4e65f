"""Ending tasks that may swallow a cancel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

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
