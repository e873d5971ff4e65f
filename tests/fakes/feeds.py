"""A broker's push feed (``updates()``) drained into a queue by a background task, for the
stream tests of every adapter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from executor.brokers.base import BrokerOrder


class Feed:
    """``broker.updates()`` drained into a queue by a background task."""

    def __init__(self, b: Any) -> None:
        self.reports: asyncio.Queue[BrokerOrder] = asyncio.Queue()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(b))

    async def _run(self, b: Any) -> None:
        try:
            async for report in b.updates():
                self.reports.put_nowait(report)
        except Exception as exc:
            self.error = exc

    async def next(self, timeout: float = 5.0) -> BrokerOrder:
        return await asyncio.wait_for(self.reports.get(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def following(b: Any, connected: Callable[[], bool]) -> AsyncIterator[Feed]:
    """A ``Feed`` of ``b``, yielded once ``connected()`` (or the feed ended, or 3 s)."""
    f = Feed(b)
    for _ in range(300):
        if connected() or f.task.done():
            break
        await asyncio.sleep(0.01)
    try:
        yield f
    finally:
        await f.stop()
