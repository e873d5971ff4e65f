"""A local exchange served from its own thread and event loop: for tests whose own loop
blocks (waiting for worker processes to exit) while workers still talk to the exchange."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol, TypeVar


class Startable(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def in_thread(server: S) -> Iterator[S]:
    """Serve ``server`` from its own thread and event loop until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-exchange", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
