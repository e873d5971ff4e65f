"""Whether an account's user data stream is up, told at a low rate.

Without the stream (a WebSocket API that answers 404, a network that drops it) the tracker
polls, and asks for the stream again every pass: a reconnect attempt a second. Each failed
attempt is counted (``orderstream_broker_stream_failures_total``) and the stream's state is
a gauge (``orderstream_broker_stream_up``), but the log says it once when the stream is lost,
then once every ``repeat_s`` while it stays lost, and once when it is back. python-binance's
own ERROR lines for a refused connection are turned into DEBUG ones (``QuietConnectLog``):
the failure reaches us as an exception and is told here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

REPEAT_S = 60.0
# What python-binance logs at ERROR when its WebSocket connection cannot be made, before
# raising the error we catch (binance/ws/reconnecting_websocket.py, websocket_api.py).
_CONNECT_FAILURES = ("Failed to connect to websocket", "Error ensuring WebSocket connection")


class StreamHealth:
    def __init__(self, account: str, metrics: Metrics | None = None, *,
                 repeat_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic,
                 what: str | None = None, logger: logging.Logger | None = None,
                 feed: str = "orders",
                 meanwhile: str = "open orders are polled until it is back (reconnecting "
                                  "every pass") -> None:
        self.account = account
        # What covers for the stream while it is lost, for the log.
        self.meanwhile = meanwhile
        # The feed's name in the log: Binance's user data stream unless told (OANDA's
        # transactions stream uses this too, with its own logger).
        self.what = what or f"binance {account}: user data stream"
        self.log = logger or log
        self.repeat_s = repeat_s
        self.clock = clock
        self.lost_since: float | None = None  # None: up (or never tried)
        self.failures = 0  # attempts failed since it was lost
        self._logged_at = 0.0
        self._up = self._failed = None
        if metrics is not None:
            # feed: which stream of the account (its orders' push feed, or OANDA's prices),
            # so one gauge tells them apart.
            self._up = metrics.broker_stream_up.labels(account, feed)
            self._failed = metrics.broker_stream_failures.labels(account, feed)

    def up(self) -> None:
        """A subscription is in place."""
        if self.lost_since is not None:
            self.log.info("%s back after %.0f s (%d failed attempts)", self.what,
                          self.clock() - self.lost_since, self.failures)
        self.lost_since, self.failures = None, 0
        if self._up is not None:
            self._up.set(1)

    def lost(self, why: str) -> None:
        """A subscription could not be made, or the stream broke: counted every time,
        logged when it is lost and then every ``repeat_s`` while it stays lost."""
        now = self.clock()
        self.failures += 1
        if self._failed is not None:
            self._failed.inc()
        if self._up is not None:
            self._up.set(0)
        if self.lost_since is None:
            self.lost_since = self._logged_at = now
            self.log.warning("%s lost (%s); %s; told again every %.0f s while it stays "
                             "lost)", self.what, why, self.meanwhile, self.repeat_s)
        elif now - self._logged_at >= self.repeat_s:
            self._logged_at = now
            self.log.warning("%s still lost after %.0f s (%d failed attempts; the last: "
                             "%s); polling", self.what, now - self.lost_since,
                             self.failures, why)


class QuietConnectLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """python-binance's logger for one WebSocket connection, with its ERROR lines about a
    connection that cannot be made at DEBUG (``StreamHealth`` tells those)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR and str(msg).startswith(_CONNECT_FAILURES):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)
