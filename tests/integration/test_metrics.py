"""The metrics and health endpoints of real workers on a real redis-server, scraped over
HTTP after a known mix of requests: the counters add up to what was sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from executor.background import probes
from executor.background.probes import OPEN_STATES, Probe
from executor.brokers.paper import PaperBroker
from executor.config import Settings
from executor.infra.metrics import Metrics
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import Action, Request
from producer.keys import GROUP, Keys

from .conftest import events_in, running, taken_by_a_dead_worker

K = Keys()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, worker: Worker) -> Samples:
    async with http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as resp:
        assert resp.status == 200
        body = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: list[Samples], name: str, **labels: str) -> float:
    """The sum over workers of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for s in samples for (n, lab), v in s.items()
               if n == name and want <= set(lab))


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@contextlib.asynccontextmanager
async def fleet(make_settings: Callable[..., Settings]) -> AsyncIterator[list[Worker]]:
    extra = {"visibility_timeout_ms": 300, "max_deliveries": 3, "lag_interval_ms": 100}
    async with running(make_settings("w1", **extra)) as w1, \
            running(make_settings("w2", **extra)) as w2:
        yield [w1, w2]


async def test_the_counters_of_two_workers_add_up_to_what_was_sent(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    poison = await taken_by_a_dead_worker(redis_client, client, client_order_id="poison-1")
    await redis_client.xclaim(K.pending, GROUP, "dead", 0, [poison.request_id],
                              idle=60_000, retrycount=3)
    async with fleet(make_settings) as workers:
        subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(6)]
        subs += [await client.place("ETHUSDT", "sell", "market", "0.01") for _ in range(3)]
        subs += [await client.place("BTCUSDT", "buy", "limit", "0.01", price="30000",
                                    client_order_id=f"rest-{i}") for i in range(3)]
        subs.append(await client.place("NOSUCH", "buy", "market", "1"))  # invalid
        subs.append(await client.publish(Request(action=Action.CANCEL,
                                                 client_order_id="nobody")))  # not_found
        await client.wait_results([s.request_id for s in subs], 15)
        dup = await client.place("BTCUSDT", "buy", "limit", "0.01", price="30000",
                                 client_order_id="rest-0")
        cancel = await client.cancel("rest-1")
        await client.wait_results([dup.request_id, cancel.request_id, poison.request_id], 15)

        fills = [e for e in await events_in(redis_client) if e.fill is not None]
        assert fills, "market orders fill"
        sides = {"BTCUSDT": "buy", "ETHUSDT": "sell"}
        want_fills = Counter(sides[e.symbol] for e in fills)
        notional = {side: sum(float(e.fill.quantity * e.fill.price) for e in fills
                              if e.fill and sides[e.symbol] == side) for side in want_fills}
        async with aiohttp.ClientSession() as http:
            # Results land a moment before their worker counts them, positions and fills
            # lag by a fold, the gauges by a probe: scrape until the last figure is in.
            for _ in range(300):
                samples = [await scrape(http, w) for w in workers]
                done = (
                    total(samples, "orderstream_requests_total") == len(subs) + 3
                    and total(samples, "orderstream_fills_total") == len(fills)
                    and all(one(s, "orderstream_position_quantity", account="default",
                                symbol="ETHUSDT") == -0.03 for s in samples)
                    # Counted by one worker only (the first live one by name).
                    and total(samples, "orderstream_open_orders", state="accepted") == 2
                )
                if done:
                    break
                await asyncio.sleep(0.1)
            bodies = [await (await http.get(
                f"http://127.0.0.1:{w.metrics_port}/metrics")).text() for w in workers]

    req = "orderstream_requests_total"
    assert total(samples, req, action="place", account="default", outcome="filled",
                 reason_code="") == 9
    assert total(samples, req, action="place", outcome="accepted") == 3
    assert total(samples, req, action="place", account="", reason_code="invalid") == 1
    assert total(samples, req, action="place", reason_code="duplicate") == 1
    assert total(samples, req, action="cancel", reason_code="not_found") == 1
    assert total(samples, req, action="cancel", outcome="cancelled") == 1
    assert total(samples, req, reason_code="poison") == 1
    assert total(samples, "orderstream_dead_letters_total", reason="poison") == 1
    assert total(samples, "orderstream_dead_letters_total", reason="deleted") == 0
    assert total(samples, "orderstream_request_latency_seconds_count") == len(subs) + 3

    for side, count in want_fills.items():
        assert total(samples, "orderstream_fills_total", account="default",
                     side=side) == count
        got = total(samples, "orderstream_filled_notional_total", account="default",
                    side=side, quote_asset="USDT")
        assert abs(got - notional[side]) < 1e-6 * notional[side]
    for s in samples:  # every worker reports the fleet-wide gauges alike
        assert one(s, "orderstream_position_quantity", account="default",
                   symbol="BTCUSDT") == float(Decimal("0.006"))
        assert one(s, "orderstream_position_quantity", account="default",
                   symbol="EUR_USD") == 0
        assert one(s, "orderstream_redis_up") == 1
        assert one(s, "orderstream_broker_up", account="default") == 1
        assert one(s, "orderstream_stream_length", stream="completed") == len(subs) - 2 + 1
        assert one(s, "orderstream_pending_entries") == 0

    first, second = samples
    assert one(first, "orderstream_open_orders", state="accepted") == 2
    assert one(first, "orderstream_open_orders", state="pending_submit") == 0
    assert total([second], "orderstream_open_orders") == 0, "w2 leaves the count to w1"
    assert not any(name == "orderstream_open_orders" for name, _ in second)

    # The paper exchange takes the places and their outcomes are written in the risk
    # step's script (pipeline/steps/taken.py): persist and submit have nothing to do.
    steps = {"decode", "deadline", "prefetch", "idempotency", "gate", "risk", "finish",
             "cancel"}
    for step in steps:
        assert total(samples, "orderstream_step_seconds_count", step=step) > 0, step
    assert total(samples, "orderstream_step_seconds_count", step="amend") == 0
    # 12 places sent in at most 12 batched calls; the cancel's call; the open orders' lookups.
    assert 1 <= total(samples, "orderstream_broker_request_seconds_count",
                      operation="submit") <= 12
    assert total(samples, "orderstream_broker_request_seconds_count", operation="cancel") == 1
    assert total(samples, "orderstream_broker_request_seconds_bucket", operation="cancel",
                 le="10.0") == 1
    infos = {one(s, "orderstream_worker_info", version=w.metrics.info._value["version"],
                 worker=w.consumer, mode="paper") for s, w in zip(samples, workers, strict=True)}
    assert infos == {1.0}
    for body in bodies:  # no client id, no free text ever becomes a label
        for cid in ("rest-0", "poison-1", "nobody", "NOSUCH"):
            assert cid not in body


class Flaky(PaperBroker):
    """A paper broker whose ping fails while ``down``."""

    down = False

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("connection refused (test)")
        await super().ping()


async def get(http: aiohttp.ClientSession, worker: Worker, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{worker.metrics_port}{path}") as resp:
        return resp.status, await resp.text()


async def test_readyz_needs_redis_the_group_and_every_broker(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis,
) -> None:
    settings = make_settings(lag_interval_ms=50)
    broker = Flaky("default", settings.accounts["default"], redis_client, K)
    async with running(settings, brokers={"default": broker}) as worker, \
            aiohttp.ClientSession() as http:
        assert await get(http, worker, "/readyz") == (200, "ready\n")
        assert await get(http, worker, "/healthz") == (200, "ok\n")

        broker.down = True
        status, text = await get(http, worker, "/readyz")
        assert (status, text) == (503, "broker default: ping failed (ConnectionError)\n")
        assert (await get(http, worker, "/healthz"))[0] == 200, "alive all the same"
        await asyncio.sleep(0.3)
        assert one(await scrape(http, worker), "orderstream_broker_up", account="default") == 0
        broker.down = False
        assert (await get(http, worker, "/readyz"))[0] == 200


async def test_readyz_needs_the_consumer_group(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis,
) -> None:
    # Started, not serving: a serving worker recreates a deleted group at its next read.
    worker = Worker(make_settings())
    await worker.start()
    try:
        async with aiohttp.ClientSession() as http:
            assert (await get(http, worker, "/readyz"))[0] == 200
            await redis_client.xgroup_destroy(K.pending, GROUP)
            assert await get(http, worker, "/readyz") == (
                503, f"consumer group {GROUP} does not exist on {K.pending}\n")
            await redis_client.delete(K.pending)
            assert (await get(http, worker, "/readyz"))[0] == 503
    finally:
        await worker.close()


async def test_readyz_says_redis_when_redis_is_gone(
    make_settings: Callable[..., Settings],
) -> None:
    worker = Worker(make_settings())
    worker.probe.redis = aioredis.Redis(port=1, socket_connect_timeout=0.5)  # nobody there
    why = await worker.probe.not_ready()
    assert why is not None and why.startswith("redis: not reachable (")
    await worker.probe.once()
    assert worker.metrics.redis_up._value.get() == 0
    await worker.probe.redis.aclose()
    await worker.redis.aclose()


async def test_a_broker_without_ping_counts_as_up(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis,
) -> None:
    class Plain:  # the least of a broker: no ping
        account = "default"

    worker = Worker(make_settings(), brokers={"default": Plain()})  # type: ignore[dict-item]
    assert await worker.probe.ping_brokers() == []
    assert worker.metrics.broker_up.labels("default")._value.get() == 1
    await worker.redis.aclose()


async def test_many_open_orders_are_counted_in_steps_that_each_hold_redis_briefly(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting thousands of open orders in one script held Redis, so every worker's
    requests, for tens of milliseconds: each call now counts one SSCAN step."""
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(1200):
            state = "accepted" if i % 3 else "partially_filled"
            pipe.hset(K.order(f"c{i}"), mapping={"state": state, "seq": 1})
            pipe.sadd(K.open, f"c{i}")
        await pipe.execute()
    monkeypatch.setattr(probes, "_COUNTED_AT_ONCE", 100)
    metrics = Metrics()
    probe = Probe(redis_client, K, metrics, {}, {})
    counted: list[int] = []  # orders counted by each call
    script = probe._open_states

    async def step(**kwargs: Any) -> Any:
        reply = await script(**kwargs)
        counted.append(sum(int(n) for n in reply[3::2]))
        return reply

    probe._open_states = step  # type: ignore[assignment]
    await probe._orders()
    gauge = metrics.open_orders
    assert gauge.labels("accepted")._value.get() == 800
    assert gauge.labels("partially_filled")._value.get() == 400
    assert sum(counted) == 1200 and len(counted) >= 6 and max(counted) <= 300, counted


async def test_open_orders_are_counted_by_state_up_to_a_limit(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i, state in enumerate(["accepted", "accepted", "partially_filled"]):
        await redis_client.hset(K.order(f"c{i}"), mapping={"state": state, "seq": 1})
        await redis_client.sadd(K.open, f"c{i}")
    await redis_client.sadd(K.open, "no-record")  # counted in no state
    metrics = Metrics()
    probe = Probe(redis_client, K, metrics, {}, {})
    await probe._orders()
    gauge = metrics.open_orders
    assert gauge.labels("accepted")._value.get() == 2
    assert gauge.labels("partially_filled")._value.get() == 1
    assert gauge.labels("pending_submit")._value.get() == 0
    assert {s.labels["state"] for m in metrics.registry.collect() for s in m.samples
            if s.name == "orderstream_open_orders"} == {s.value for s in OPEN_STATES}
    monkeypatch.setattr(probes, "OPEN_ORDERS_COUNTED", 3)  # 4 open orders: too many
    await probe._orders()
    assert not [s for m in metrics.registry.collect() for s in m.samples
                if s.name == "orderstream_open_orders"], "no figure rather than a stale one"
