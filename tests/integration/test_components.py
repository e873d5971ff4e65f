"""The order components of examples/python, run as the scripts their docstrings show
against a real worker on the paper exchange: each publishes its order, which fills, and
prints the result; the component's name and version come back on that result and are in
the order's record and its ``created`` event; the bracket's levels become the entry's exit,
an oco on the other side. The same decision published twice is one order."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from examples.python.risk_sized import RiskSized, RiskSizedConfig
from producer import MarketData, OrderClient, Signal
from producer.components import COMPONENT_KEY, VERSION_KEY
from producer.contract import (
    OrderState,
    OrderType,
    ReasonCode,
    Result,
    ResultStatus,
    Side,
    decode_result,
)
from producer.keys import Keys

from .conftest import events_in, running, settings_for
from .test_lists import fast, order_in, set_price

K = Keys()
D = Decimal
ROOT = Path(__file__).resolve().parents[2]


async def run_example(module: str, redis_url: str) -> Result:
    """``python -m examples.python.<module>`` from the repository's root: the result it
    printed once it came (exit 0)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDERSTREAM_") and k != "REDIS_URL"}
    env.update(REDIS_URL=redis_url, RESULT_TIMEOUT_MS="20000",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH")))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"examples.python.{module}", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return decode_result(out)


async def created_metadata(r: aioredis.Redis, cid: str) -> Any:
    """The metadata of the order's ``created`` event on the events stream."""
    for event in await events_in(r):
        if event.client_order_id == cid and event.state is OrderState.CREATED:
            assert event.order is not None
            return event.order.metadata
    raise AssertionError(f"no created event for {cid}")


async def test_the_risk_sized_example_fills_its_size_and_its_stamp_comes_back(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    await set_price(redis_client, "50000")
    async with running(settings_for(redis_url)):
        result = await run_example("risk_sized", redis_url)
    # 100 USDT at risk, the stop 500 below the entry: 0.2 BTC, bought at market.
    assert (result.status, result.type, result.filled_quantity) == (
        ResultStatus.FILLED, OrderType.MARKET, D("0.2"))
    stamp = {"risk": "100", "stop": "49500", COMPONENT_KEY: "risk_sized", VERSION_KEY: "1.0.0"}
    assert result.metadata == stamp
    assert result.signal_id is not None and result.signal_id.startswith("breakout-")
    assert result.client_order_id is not None
    record = await client.order(result.client_order_id)
    assert record is not None and record.spec.metadata == stamp
    assert record.spec.signal_id == result.signal_id
    assert await created_metadata(redis_client, result.client_order_id) == stamp


async def test_the_bracketed_example_fills_and_its_levels_become_the_exit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    await set_price(redis_client, "50000")
    async with running(fast(redis_url)):
        result = await run_example("bracketed", redis_url)
        assert result.status is ResultStatus.FILLED and result.filled_quantity == D("0.2")
        assert result.metadata is not None
        assert (result.metadata[COMPONENT_KEY], result.metadata[VERSION_KEY]) == (
            "bracketed", "1.0.0")
        assert result.metadata["wraps"] == {COMPONENT_KEY: "risk_sized",
                                            VERSION_KEY: "1.0.0"}
        cid = result.client_order_id
        assert cid is not None
        record = await client.order(cid)
        assert record is not None and record.spec.metadata == result.metadata
        # 200 bps above the ask, 100 bps below.
        assert (record.spec.take_profit, record.spec.stop_loss) == (D("51000"), D("49500"))
        assert await created_metadata(redis_client, cid) == result.metadata
        exit_ = await order_in(client, f"{cid}-x1", OrderState.ACCEPTED)
    assert (exit_.spec.type, exit_.spec.side, exit_.spec.quantity) == (
        OrderType.OCO, Side.SELL, D("0.2"))
    assert (exit_.spec.price, exit_.spec.stop_price) == (D("51000"), D("49500"))
    # The exit names its entry, the entry's signal and the component that made it.
    assert exit_.spec.signal_id == result.signal_id
    assert exit_.spec.metadata == {"list_id": cid, "exit": 1, "component": "bracketed",
                                   "component_version": "1.0.0"}


async def test_the_same_decision_published_twice_is_one_order(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    await set_price(redis_client, "50000")
    component = RiskSized(RiskSizedConfig(risk=D("100"), lot_step=D("0.001")))
    market = MarketData(symbol="BTCUSDT", bid=D("49999.99"), ask=D("50000"), at=1)
    signal = Signal(id="retry-1", side=Side.BUY, stop=D("49000"))
    async with running(settings_for(redis_url)) as worker:
        first = await client.place_from(component, market, signal)
        again = await client.place_from(component, market, signal)  # a retry
        assert first is not None and again is not None
        results = await client.wait_results([first, again], timeout=20)
        received: int = await worker.brokers["default"].received_count()  # type: ignore[attr-defined]
    assert results[first].status is ResultStatus.FILLED
    assert results[first].filled_quantity == D("0.1")
    assert results[again].reason_code == ReasonCode.DUPLICATE
    assert received == 1
