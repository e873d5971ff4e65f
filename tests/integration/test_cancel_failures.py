"""A cancel the broker could not take: sent again while the broker is unavailable or its
answer was lost, ``rate_limited`` when our limiter held it back, ``retries_exhausted`` when
the broker stayed unavailable, ``broker_rejected`` when it refused; the order stays working
each time and a later cancel still works. A deferred cancel (one that came while its order
was being submitted) that fails so is kept and sent again until the order is final."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.background.tracker import Tracker
from executor.brokers.base import (
    BrokerError,
    BrokerOrder,
    PermanentError,
    RetryableError,
    Throttled,
    UnknownOutcome,
)
from executor.brokers.paper import PaperBroker
from executor.config import Settings
from executor.infra.metrics import Metrics
from executor.infra.store import Store
from executor.pipeline.services import Services
from producer.client import OrderClient
from producer.contract import OrderState, ReasonCode, ResultStatus
from producer.keys import Keys

from .conftest import running, until


class FailingCancels(PaperBroker):
    """A paper broker whose next cancels fail as queued (``before``: without cancelling;
    ``after``: having cancelled, as a lost answer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[str, BrokerError]] = []
        self.calls = 0
        self.slow_s = 0.0  # how long a failing cancel takes to fail

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        self.calls += 1
        if self.failures:
            when, exc = self.failures.pop(0)
            await asyncio.sleep(self.slow_s)
            if when == "after":
                await super().cancel(client_order_id, symbol)
            raise exc
        return await super().cancel(client_order_id, symbol)


async def resting_order(client: OrderClient) -> str:
    sub = await client.place("BTCUSDT", "buy", "limit", "0.010", price="40000")
    result = await client.wait_result(sub.request_id, 10)
    assert result.order_state is OrderState.ACCEPTED and result.client_order_id
    return result.client_order_id


@pytest.mark.parametrize(("failures", "code", "calls"), [
    ([("before", RetryableError("HTTP 503 (test)"))], None, 2),
    ([("after", UnknownOutcome("read timeout (test)"))], None, 2),
    ([("before", RetryableError("HTTP 503 (test)"))] * 3, ReasonCode.RETRIES_EXHAUSTED, 3),
    ([("before", Throttled("orders_10s full until after the deadline (test)"))],
     ReasonCode.RATE_LIMITED, 1),
    ([("before", PermanentError("-2011 unknown reason (test)"))],
     ReasonCode.BROKER_REJECTED, 1),
])
async def test_a_cancel_the_broker_could_not_take(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, failures: list[tuple[str, BrokerError]],
    code: ReasonCode | None, calls: int,
) -> None:
    settings = make_settings()
    broker = FailingCancels("default", settings.accounts["default"], redis_client, Keys())
    async with running(settings, brokers={"default": broker}):
        cid = await resting_order(client)
        broker.failures = list(failures)
        sub = await client.cancel(cid)
        result = await client.wait_result(sub.request_id, 15)
        assert broker.calls == calls
        if code is None:
            # Sent again; a cancel whose answer was lost is then "already final" and
            # looked up: either way the order ends cancelled and is recorded so.
            order = await broker.get_order(cid, "BTCUSDT")
            assert order.status.value == "cancelled"
            if result.status is not ResultStatus.CANCELLED:
                assert result.reason_code == ReasonCode.NOT_CANCELLABLE
            assert result.order_state is OrderState.CANCELLED
            return
        assert result.status is ResultStatus.FAILED
        assert result.reason_code == code
        assert result.reason and "(test)" in result.reason
        assert result.order_state is OrderState.ACCEPTED  # still working
        # The producer can try again, and this time it goes through.
        again = await client.cancel(cid)
        final = await client.wait_result(again.request_id, 10)
        assert final.status is ResultStatus.CANCELLED
        assert final.order_state is OrderState.CANCELLED


UNAVAILABLE = [("before", RetryableError("HTTP 503 (test)"))] * 3
TIMING_OUT = [("before", UnknownOutcome("read timeout (test)"))] * 3


@pytest.mark.parametrize("failures", [
    pytest.param(UNAVAILABLE, id="retries_exhausted"),
    pytest.param(TIMING_OUT, id="unavailable"),
    pytest.param([("before", Throttled("orders_10s full (test)"))], id="rate_limited"),
    pytest.param([("before", PermanentError("-2011 unknown reason (test)"))],
                 id="broker_rejected"),
])
async def test_a_deferred_cancel_the_broker_could_not_take_is_sent_again_until_final(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, failures: list[tuple[str, BrokerError]],
) -> None:
    settings = make_settings()
    async with running(settings):
        cid = await resting_order(client)
    k = Keys()
    store = Store(redis_client, k, results_maxlen=1000, order_ttl_ms=60_000)
    # A cancel that came while the place was pending; the order is working now.
    await store.defer_cancels({cid: "1-1"})
    broker = FailingCancels("default", settings.accounts["default"], redis_client, k)
    await broker.start(background=False)
    try:
        tracker = Tracker(Services(settings, store, {"default": broker}, Metrics(), "w1"),
                          None, interval_ms=100, market_timeout_ms=300_000)
        broker.failures = list(failures)
        await tracker.cancel_deferred()
        assert broker.calls == len(failures)
        assert await redis_client.hget(k.order(cid), "state") == b"accepted"
        assert await store.deferred_cancels() == {cid: "1-1"}, "the cancel was dropped"
        # The broker takes it on the next pass.
        assert await tracker.cancel_deferred() == 1
        assert (await broker.get_order(cid, "BTCUSDT")).status.value == "cancelled"
    finally:
        await broker.close()
    assert await redis_client.hget(k.order(cid), "state") == b"cancelled"
    assert await store.deferred_cancels() == {}


async def test_a_failed_cancel_of_a_list_entry_keeps_its_list(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """The entry of a bracket works on after its cancel failed: its list is not cancelled,
    so when it fills its exit is still placed."""
    r = redis_client
    await r.hset(Keys().paper("default", "prices"), "BTCUSDT", "50000")
    settings = make_settings(emulator_interval_ms=100, emulator_lease_ms=1000)
    broker = FailingCancels("default", settings.accounts["default"], r, Keys())
    async with running(settings, brokers={"default": broker}):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.010", price="49900",
                                 client_order_id="L1", take_profit="51000",
                                 stop_loss="49000")
        await client.wait_result(sub.request_id, 10)
        broker.failures = [("before", PermanentError("-2011 unknown reason (test)"))]
        # Slow to fail: several passes of the list watcher see the cancel under way.
        broker.slow_s = 0.5
        failed = await client.wait_result((await client.cancel("L1")).request_id, 15)
        assert failed.reason_code == ReasonCode.BROKER_REJECTED
        assert "contingent list" not in (failed.reason or "")
        assert not await r.hexists(Keys().lists_cancel, "L1")
        await r.hset(Keys().paper("default", "prices"), "BTCUSDT", "49900")

        async def placed() -> bool:
            status = await client.order("L1-x1")
            return status is not None and status.state is OrderState.ACCEPTED
        await until(placed, 15)
