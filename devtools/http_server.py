"""Serving a local imitation of a broker's HTTP API (devtools/*_exchange) on a port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0
                ) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: a free port): its runner (``cleanup()`` to stop)
    and the port it listens on."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


async def send_queued(ws: web.WebSocketResponse, out: asyncio.Queue[Any],
                      dumps: Callable[[Any], str] = json.dumps) -> None:
    """Send what is put on ``out`` to ``ws``, as JSON text frames, until cancelled or the
    connection is closed (a local server's stream: its answers and events in order)."""
    while True:
        frame = await out.get()
        if ws.closed:
            return
        await ws.send_str(dumps(frame))
