"""The health of an account's user data stream: its ``StreamHealth``
(../stream_health.py) logs with this module's logger. Without the stream (a WebSocket API
that answers 404, a network that drops it) the tracker polls, and asks for the stream again
every pass: a reconnect attempt a second, told at a low rate. python-binance's own ERROR
lines for a refused connection are turned into DEBUG ones (``QuietConnectLog``): the
failure reaches us as an exception and is told by ``StreamHealth``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# What python-binance logs at ERROR when its WebSocket connection cannot be made, before
# raising the error we catch (binance/ws/reconnecting_websocket.py, websocket_api.py).
_CONNECT_FAILURES = ("Failed to connect to websocket", "Error ensuring WebSocket connection")


class QuietConnectLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """python-binance's logger for one WebSocket connection, with its ERROR lines about a
    connection that cannot be made at DEBUG (``StreamHealth`` tells those)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR and str(msg).startswith(_CONNECT_FAILURES):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)
