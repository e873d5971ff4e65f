"""New connections to OANDA, paced: OANDA refuses more than 2 new connections a second
(per IP), and a process opens them in bursts (at start, after a dropped stream, when
concurrent calls outgrow the connections kept alive). Each new connection waits here
until fewer than ``per_second`` were started in the second before it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

NEW_CONNECTIONS_PER_SECOND = 2
# Connections kept per host (REST, and the streams' host: the transactions and pricing
# streams hold one each): calls beyond them wait for one to be free instead of opening more.
MAX_CONNECTIONS = 4


class ConnectionPacer:
    def __init__(self, per_second: int = NEW_CONNECTIONS_PER_SECOND, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.per_second = per_second
        self.clock = clock
        self.sleep = sleep
        self.started = 0  # connections started through this pacer
        self._recent: deque[float] = deque()  # start times within the last second
        self._lock = asyncio.Lock()  # first come, first served

    async def wait(self) -> None:
        """Until a new connection may start; counts it as started."""
        async with self._lock:
            now = self.clock()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_second:
                await self.sleep(self._recent[0] + 1.0 - now)
                now = self.clock()
                self._recent.popleft()
            self._recent.append(now)
            self.started += 1

    def trace_config(self) -> aiohttp.TraceConfig:
        """For an aiohttp session: every new connection it makes waits its turn here."""
        config = aiohttp.TraceConfig()

        async def on_create(_session: Any, _context: Any, _params: Any) -> None:
            await self.wait()
        config.on_connection_create_start.append(on_create)
        return config
