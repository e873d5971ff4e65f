"""What every broker stream of ours shares, broker-neutral: whether it is up, told at a low
rate (``StreamHealth``), and how long to wait before connecting again (``Backoff``).

Without a stream (a venue that refuses it, a network that drops it) the broker covers for
it (open orders or reference prices are polled) and connects again. Each failed attempt is
counted (``orderstream_broker_stream_failures_total``) and the stream's state is a gauge
(``orderstream_broker_stream_up``), both labelled by account and ``feed`` (``orders``: an
account's push feed of order changes; ``prices``: its market data). The log says it once
when the stream is lost, then once every ``repeat_s`` while it stays lost, and once when it
is back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..infra.metrics import Metrics

REPEAT_S = 60.0


class StreamHealth:
    def __init__(self, account: str, metrics: Metrics | None = None, *,
                 what: str, logger: logging.Logger,
                 repeat_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic,
                 feed: str = "orders",
                 meanwhile: str = "open orders are polled until it is back (reconnecting "
                                  "every pass") -> None:
        self.account = account
        # What covers for the stream while it is lost, for the log.
        self.meanwhile = meanwhile
        self.what = what  # the stream's name in the log ("<broker> <account>: ... stream")
        self.log = logger
        self.repeat_s = repeat_s
        self.clock = clock
        self.lost_since: float | None = None  # None: up (or never tried)
        self.failures = 0  # attempts failed since it was lost
        self._logged_at = 0.0
        # Other streams of the account behind the same gauge (Alpaca's stocks and crypto
        # quotes, both feed="prices"): it reads 1 only while none of them is lost.
        self.siblings: list[StreamHealth] = []
        self.metrics, self.feed = metrics, feed
        self._off = False  # not this worker's stream (off): no gauge
        self._up = self._failed = None
        if metrics is not None:
            # feed: which stream of the account (its orders' push feed, or its prices), so
            # one gauge tells them apart.
            self._up = metrics.broker_stream_up.labels(account, feed)
            self._failed = metrics.broker_stream_failures.labels(account, feed)

    def off(self) -> None:
        """Not this worker's stream now (another worker of the account streams it): the
        gauge is not exported (its series removed, so it claims neither up nor down) and
        nothing is logged, until ``on``."""
        self.lost_since, self.failures = None, 0
        self._off = True
        if self._up is not None and self.metrics is not None:
            self._up = None
            self.metrics.broker_stream_up.remove(self.account, self.feed)

    def on(self) -> None:
        """This worker's stream again: the gauge is exported from its first attempt on
        (``up`` or ``lost``); until then there is nothing to say (nothing asked yet)."""
        self._off = False

    def _gauge(self) -> None:
        if self._up is None and not self._off and self.metrics is not None:
            self._up = self.metrics.broker_stream_up.labels(self.account, self.feed)

    def up(self) -> None:
        """A subscription is in place."""
        if self.lost_since is not None:
            self.log.info("%s back after %.0f s (%d failed attempts)", self.what,
                          self.clock() - self.lost_since, self.failures)
        self.lost_since, self.failures = None, 0
        self._gauge()
        if self._up is not None and all(s.lost_since is None for s in self.siblings):
            self._up.set(1)

    def lost(self, why: str) -> None:
        """A subscription could not be made, or the stream broke: counted every time,
        logged when it is lost and then every ``repeat_s`` while it stays lost."""
        now = self.clock()
        self.failures += 1
        if self._failed is not None:
            self._failed.inc()
        self._gauge()
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


@dataclass
class Backoff:
    """Seconds to wait before reconnecting after ``failures`` failed attempts in a row:
    none for the first, then doubling from ``first_s`` up to ``cap_s``. With ``jitter``
    (0 to 1) that share of the delay is drawn at random, so the workers of one IP that
    lost the stream together do not all come back in the same second (venues limit new
    connections: OANDA refuses more than 2 a second)."""

    first_s: float = 0.5
    cap_s: float = 30.0
    failures: int = 0
    jitter: float = 0.0
    rng: Callable[[], float] = random.random

    def delay(self) -> float:
        if self.failures <= 0:
            return 0.0
        full = float(min(self.cap_s, self.first_s * 2 ** (self.failures - 1)))
        return full * (1 - self.jitter * self.rng())

    def failed(self) -> None:
        self.failures += 1

    def reset(self) -> None:
        self.failures = 0
