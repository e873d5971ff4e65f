"""A broker's push feed drained by a background task, for tests of ``updates()``."""

from __future__ import annotations

import asyncio
import contextlib

from executor.background.tracker import PushFeed
from executor.brokers.base import BrokerOrder


class Feed:
    """``broker.updates()`` drained into a queue by a background task."""

    def __init__(self, b: PushFeed) -> None:
        self.reports: asyncio.Queue[BrokerOrder] = asyncio.Queue()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(b))

    async def _run(self, b: PushFeed) -> None:
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
