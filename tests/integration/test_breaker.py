"""The shared circuit breaker: its script on a real Redis, then real workers behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis

from executor.brokers.paper import PaperBroker
from executor.brokers.wrapper import unwrap
from executor.config import Settings
from executor.safety.breaker import Breaker, BreakerSettings, CircuitState
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ReasonCode, ResultStatus
from producer.keys import Keys

from .conftest import replace, running

FAST = BreakerSettings(consecutive_failures=3, window_ms=60_000, min_calls=10,
                       error_rate_percent=50, cooldown_ms=300, probe_ttl_ms=1_000)


def breaker(r: aioredis.Redis, settings: BreakerSettings = FAST) -> Breaker:
    return Breaker(r, Keys(), settings)


async def test_opens_after_consecutive_failures_only(redis_client: aioredis.Redis) -> None:
    b = breaker(redis_client)
    assert (await b.record("a", "FF")).state is CircuitState.CLOSED
    assert (await b.record("a", "S")).state is CircuitState.CLOSED  # a success resets
    assert (await b.record("a", "FF")).state is CircuitState.CLOSED
    verdict = await b.record("a", "F")
    assert (verdict.state, verdict.changed) == (CircuitState.OPEN, True)
    allow = await b.allow("a")
    assert not allow.allowed and 0 < allow.wait_ms <= 300
    assert (await b.allow("b")).allowed  # per account


async def test_opens_on_the_error_rate_over_enough_calls(redis_client: aioredis.Redis) -> None:
    b = breaker(redis_client)
    # Never three in a row, but half of ten calls failed.
    assert (await b.record("a", "FSFSFSFSF")).state is CircuitState.CLOSED  # 9 calls
    assert (await b.record("a", "S")).state is CircuitState.OPEN  # 5 of 10


async def test_authentication_failure_opens_at_once(redis_client: aioredis.Redis) -> None:
    assert (await breaker(redis_client).record("a", "X")).state is CircuitState.OPEN


async def test_half_open_grants_one_trial_whose_outcome_decides(
        redis_client: aioredis.Redis, redis_url: str) -> None:
    b = breaker(redis_client)
    other = aioredis.Redis.from_url(redis_url)  # a second worker's connection
    try:
        b2 = breaker(other)
        await b.record("a", "FFF")
        await asyncio.sleep(0.35)  # the cool-down
        first, second = await asyncio.gather(b.allow("a"), b2.allow("a"))
        assert sorted([first.allowed, second.allowed]) == [False, True]
        assert first.state is second.state is CircuitState.HALF_OPEN
        # The trial failed: open again for a whole cool-down.
        assert (await b.record("a", "F")).state is CircuitState.OPEN
        assert not (await b2.allow("a")).allowed
        await asyncio.sleep(0.35)
        assert (await b2.allow("a")).allowed
        assert (await b2.record("a", "S")).state is CircuitState.CLOSED
        assert (await b.allow("a")).state is CircuitState.CLOSED
        # Closing forgot the old failures: it takes three new ones to open again.
        assert (await b.record("a", "FF")).state is CircuitState.CLOSED
    finally:
        await other.aclose()


async def test_a_trial_that_never_reports_is_granted_again(
        redis_client: aioredis.Redis) -> None:
    b = breaker(redis_client, replace_settings(probe_ttl_ms=200))
    await b.record("a", "X")
    await asyncio.sleep(0.35)
    assert (await b.allow("a")).allowed
    assert not (await b.allow("a")).allowed
    await asyncio.sleep(0.25)  # the trial's worker died: another may try
    assert (await b.allow("a")).allowed


def replace_settings(**changes: int) -> BreakerSettings:
    return msgspec.structs.replace(FAST, **changes)


async def test_workers_refuse_orders_while_the_broker_fails_and_resume_after_a_trial(
        make_settings: Callable[..., Settings], client: OrderClient) -> None:
    settings = replace(make_settings("w1", submit_attempts=1), breaker=FAST)
    other = replace(make_settings("w2", submit_attempts=1), breaker=FAST)
    async with running(settings) as w1, running(other) as w2:
        papers = [unwrap(w.brokers["default"]) for w in (w1, w2)]
        for paper in papers:
            assert isinstance(paper, PaperBroker)
            paper.config.failure_rate = 1.0
        failed = []
        for _ in range(3):
            sub = await client.place("BTCUSDT", "buy", "market", "0.001")
            failed.append(await client.wait_result(sub.request_id, 10))
        assert [r.reason_code for r in failed] == [ReasonCode.RETRIES_EXHAUSTED] * 3
        # Open now, for every worker: orders are refused without reaching the exchange.
        refused = [await client.place("ETHUSDT", "sell", "market", "0.01") for _ in range(6)]
        results = [await client.wait_result(s.request_id, 10) for s in refused]
        assert {r.reason_code for r in results} == {ReasonCode.CIRCUIT_OPEN}
        assert {r.worker for r in results} == {"w1", "w2"}
        assert "circuit breaker of account default is open" in (results[0].reason or "")
        assert await papers[0].received_count() == 0
        assert circuit_metric(w1) == circuit_metric(w2) == 2.0  # open
        for paper in papers:
            paper.config.failure_rate = 0.0
        await asyncio.sleep(0.35)
        trial = await client.place("BTCUSDT", "buy", "market", "0.001")
        trial_result = await client.wait_result(trial.request_id, 10)
        assert trial_result.status is ResultStatus.FILLED
        after = await client.place("BTCUSDT", "buy", "market", "0.001")
        assert (await client.wait_result(after.request_id, 10)).status is ResultStatus.FILLED
        assert await papers[0].received_count() == 2
        trial_worker = w1 if trial_result.worker == "w1" else w2
        assert circuit_metric(trial_worker) == 0.0  # closed again


def circuit_metric(worker: Worker) -> float | None:
    return worker.metrics.registry.get_sample_value("orderstream_circuit_state",
                                                    {"account": "default"})


async def test_hold_mode_waits_for_the_breaker_within_the_deadline(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    hold = msgspec.structs.replace(FAST, cooldown_ms=600, mode="hold", hold_max_ms=5_000)
    async with running(replace(make_settings("w1"), breaker=hold)) as worker:
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        await breaker(redis_client, hold).record("default", "X")
        clock = worker.svc.clock
        late = await client.place("BTCUSDT", "buy", "market", "0.001", deadline=clock() + 200)
        waited = await client.place("BTCUSDT", "buy", "market", "0.001")
        late_result = await client.wait_result(late.request_id, 10)
        assert late_result.reason_code == ReasonCode.CIRCUIT_OPEN
        assert "deadline" in (late_result.reason or "")
        # The other was held until the cool-down ended, then went as the trial.
        assert (await client.wait_result(waited.request_id, 10)).status is ResultStatus.FILLED
        assert await paper.received_count() == 1


async def test_an_unreadable_breaker_refuses(make_settings: Callable[..., Settings],
                                             client: OrderClient,
                                             redis_client: aioredis.Redis) -> None:
    async with running(make_settings("w1")) as worker:
        # A breaker key of the wrong type makes the script fail: the order must not pass.
        await redis_client.set(Keys().breaker("default"), "garbage")
        sub = await client.place("BTCUSDT", "buy", "market", "0.001")
        result = await client.wait_result(sub.request_id, 10)
        assert result.reason_code == ReasonCode.CIRCUIT_OPEN
        assert "unreadable" in (result.reason or "")
        paper = unwrap(worker.brokers["default"])
        assert isinstance(paper, PaperBroker)
        assert await paper.received_count() == 0
