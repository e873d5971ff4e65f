"""Whether an account's push feed (a broker's stream of order changes) is up, told at a low
rate.

Without the feed the tracker polls, and asks for the feed again every pass. Each failed
attempt is counted (``orderstream_broker_stream_failures_total``) and the feed's state is a
gauge (``orderstream_broker_stream_up``), but the log says it once when the feed is lost,
then once every ``repeat_s`` while it stays lost, and once when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..infra.metrics import Metrics

REPEAT_S = 60.0


class StreamHealth:
    """A push feed's health; a subclass names its broker, its feed and its logger."""

    broker = "broker"
    feed = "push feed"
    log = logging.getLogger(__name__)

    def __init__(self, account: str, metrics: Metrics | None = None, *,
                 repeat_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account = account
        self.repeat_s = repeat_s
        self.clock = clock
        self.lost_since: float | None = None  # None: up (or never tried)
        self.failures = 0  # attempts failed since it was lost
        self._logged_at = 0.0
        self._up = self._failed = None
        if metrics is not None:
            self._up = metrics.broker_stream_up.labels(account)
            self._failed = metrics.broker_stream_failures.labels(account)

    def up(self) -> None:
        """A subscription is in place."""
        if self.lost_since is not None:
            self.log.info("%s %s: %s back after %.0f s (%d failed attempts)", self.broker,
                          self.account, self.feed, self.clock() - self.lost_since,
                          self.failures)
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
            self.log.warning("%s %s: %s lost (%s); open orders are polled until it is "
                             "back (reconnecting every pass; told again every %.0f s while "
                             "it stays lost)", self.broker, self.account, self.feed, why,
                             self.repeat_s)
        elif now - self._logged_at >= self.repeat_s:
            self._logged_at = now
            self.log.warning("%s %s: %s still lost after %.0f s (%d failed attempts; the "
                             "last: %s); polling", self.broker, self.account, self.feed,
                             now - self.lost_since, self.failures, why)
