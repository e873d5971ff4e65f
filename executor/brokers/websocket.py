"""A price stream's WebSocket connection (aiohttp), broker-neutral: opening it and reading
its data frames, every way it ends told as ``StreamLost`` with a text safe to log (the
exception's type or a status, never the URL, which may name an account, or a header).

Silence is measured by aiohttp's heartbeat: a ping after two thirds of ``timeout_ms`` of
silence, the connection closed when its pong does not come within the last third.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from .price_stream import StreamLost

_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


async def connect(session: aiohttp.ClientSession, url: str, timeout_ms: int
                  ) -> aiohttp.ClientWebSocketResponse:
    """The connection to ``url``, within ``timeout_ms`` and kept alive by pings."""
    timeout_s = timeout_ms / 1000
    try:
        return await asyncio.wait_for(
            session.ws_connect(url, heartbeat=timeout_s * 2 / 3, autoping=True), timeout_s)
    except aiohttp.WSServerHandshakeError as exc:
        raise StreamLost(f"refused: HTTP {exc.status}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # Named by its type only (the same rule as for every stream of ours).
        raise StreamLost(f"connection failed ({type(exc).__name__})") from None


async def frames(ws: aiohttp.ClientWebSocketResponse, timeout_ms: int
                 ) -> AsyncIterator[str | bytes]:
    """The data frames (text or binary) as they come; raises ``StreamLost`` once the
    connection ends, fails or goes silent (no pong within ``timeout_ms``)."""
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            yield msg.data
        elif msg.type is aiohttp.WSMsgType.ERROR:
            error = ws.exception()
            if isinstance(error, aiohttp.ServerTimeoutError):
                raise StreamLost(f"no pong within {timeout_ms} ms")
            raise StreamLost(f"connection failed ({type(error).__name__})")
        elif msg.type in _ENDED:
            if isinstance(ws.exception(), aiohttp.ServerTimeoutError):
                raise StreamLost(f"no pong within {timeout_ms} ms")
            raise StreamLost("closed by the server")
