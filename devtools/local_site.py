"""Serving an aiohttp application of a local broker imitation on a port of this machine
(``port`` 0: a free one), for tests and demos."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0
                ) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns its runner (``cleanup()`` stops it) and the port."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
