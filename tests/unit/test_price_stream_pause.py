"""A paused ``PriceStream`` (price_stream.py): holds no connection (the last one closed in
the background), vouches for no price, neither logs nor exports its health, and, resumed,
connects again to every symbol asked meanwhile, once the paused connection is closed."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from executor.brokers.price_stream import PriceStream
from executor.brokers.prices import PriceCache
from executor.infra.metrics import Metrics

log = logging.getLogger(__name__)


class Held(PriceStream):
    """A connection that is accepted, prices each symbol at 1 and lasts until cancelled;
    it takes a moment to close, as a websocket's closing handshake does."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__("test-prices:a", "a", "a: test stream", PriceCache("a", 60_000),
                         metrics, log=log)
        self.open: list[frozenset[str]] = []  # the connections not closed yet
        self.opened: list[frozenset[str]] = []
        self.side_by_side = False  # a connection opened next to one not closed yet

    def _alive(self) -> bool:
        return True

    async def _open(self, names: frozenset[str]) -> None:
        self.side_by_side = self.side_by_side or bool(self.open)
        self.open.append(names)
        self.opened.append(names)
        try:
            self._opened()
            for name in names:
                self._priced(name, Decimal(1))
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.3)  # closing: longer than SETTLE_S
            self.open.remove(names)


def gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("orderstream_broker_stream_up",
                                             {"account": "a", "feed": "prices"})


async def test_paused_it_holds_nothing_and_resumed_it_connects_once_the_last_is_closed(
        ) -> None:
    metrics = Metrics()
    stream = Held(metrics)
    stream._start()
    stream.add("X")
    for _ in range(100):
        if stream.current("X") is not None:
            break
        await asyncio.sleep(0.01)
    assert stream.current("X") == Decimal(1) and gauge(metrics) == 1

    stream.pause()  # returns at once
    assert not stream.running and stream.current("X") is None
    assert gauge(metrics) is None  # not exported while paused
    stream.add("Y")  # asked while paused: kept for the next connection
    stream.resume()
    await asyncio.sleep(0.6)
    assert stream.opened == [frozenset({"X"}), frozenset({"X", "Y"})]
    assert not stream.side_by_side
    assert stream.current("Y") == Decimal(1) and gauge(metrics) == 1

    stream.pause()
    await stream.close()  # waits for the paused connection
    assert stream.open == []


async def test_resumed_with_nothing_asked_it_exports_nothing_yet() -> None:
    metrics = Metrics()
    stream = Held(metrics)
    stream.pause()
    stream.resume()
    await asyncio.sleep(0.05)
    assert gauge(metrics) is None and stream.opened == []
    await stream.close()
