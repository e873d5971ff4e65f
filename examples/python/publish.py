"""What both examples do once their component exists: publish its order for one signal and
print the result. Reads ``REDIS_URL``, ``ORDERSTREAM_PREFIX`` and ``RESULT_TIMEOUT_MS`` as
the Node and Go examples do."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from decimal import Decimal

from producer import MarketData, OrderClient, OrderComponent, Side, Signal
from producer.contract import encode


async def publish_one(component: OrderComponent, market: MarketData,
                      signal: Signal | None) -> int:
    """Publish the order and print its result's JSON on stdout (what happened on stderr);
    the exit status: 0 once the result came, whatever it says (a refusal is a result too),
    or when the component made no order; 1 when no result came in time."""
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    prefix = os.environ.get("ORDERSTREAM_PREFIX", "orders")
    timeout = int(os.environ.get("RESULT_TIMEOUT_MS", "30000")) / 1000
    async with OrderClient.from_url(url, prefix) as client:
        sub = await client.place_from(component, market, signal)
        if sub is None:
            print(f"{component.name}: no order for this signal", file=sys.stderr)
            return 0
        print(f"published {sub.client_order_id} as {sub.request_id}", file=sys.stderr)
        try:
            result = await client.wait_result(sub, timeout)
        except TimeoutError:
            print(f"no result for {sub.request_id} within {timeout} s", file=sys.stderr)
            return 1
    print(encode(result).decode())
    return 0


def run(component: OrderComponent) -> None:
    """Publish ``component``'s order for a BTCUSDT breakout: a buy signal with its stop at
    49500, the ask at 50000; exit with ``publish_one``'s status."""
    now = int(time.time() * 1000)
    # A strategy has these from its market data feed and its signal source; the signal's
    # id is the run's, so that each run is a new decision (the same id: the same order).
    market = MarketData(symbol="BTCUSDT", bid=Decimal("49999.99"), ask=Decimal("50000"),
                        at=now)
    signal = Signal(id=f"breakout-{now}", side=Side.BUY, stop=Decimal("49500"))
    sys.exit(asyncio.run(publish_one(component, market, signal)))
