"""New connections to OANDA are paced at 2 a second: a burst of them waits, in turn, until
the second after the earliest; connections spread out wait for nothing."""

from __future__ import annotations

import asyncio

from executor.brokers.oanda.connections import ConnectionPacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


async def test_a_burst_waits_its_turn_and_spread_out_connections_do_not() -> None:
    t = FakeTime()
    pacer = ConnectionPacer(2, clock=t.clock, sleep=t.sleep)
    await asyncio.gather(*(pacer.wait() for _ in range(5)))
    # Two a second: at 100, 100, 101, 101 and 102.
    assert t.slept == [1.0, 1.0] and t.now == 102.0
    assert pacer.started == 5
    t.now += 5.0  # a quiet while: nothing recent
    t.slept.clear()
    await pacer.wait()
    t.now += 0.6
    await pacer.wait()
    assert t.slept == []


async def test_the_adapters_session_opens_its_connections_through_the_pacer() -> None:
    pacer = ConnectionPacer()
    config = pacer.trace_config()
    assert len(config.on_connection_create_start) == 1
    await config.on_connection_create_start[0](None, None, None)  # type: ignore[arg-type]
    assert pacer.started == 1
