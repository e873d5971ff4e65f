"""Orders flow end to end on a real redis-server and the paper broker: every request gets
exactly one result, bad input fails alone and the worker keeps serving."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from executor.config import Settings
from producer.client import OrderClient
from producer.contract import (
    Action,
    OrderState,
    OrderType,
    Request,
    ResultStatus,
    Side,
    decode_events,
    parse_decimal,
)
from producer.keys import Keys

from .conftest import events_in, running

K = Keys()


async def results_by_request(r: aioredis.Redis) -> dict[str, list[dict[str, Any]]]:
    seen: dict[str, list[dict[str, Any]]] = {}
    for stream in (K.completed, K.failed):
        for _id, fields in await r.xrange(stream):
            data = json.loads(fields[b"data"])
            data["_stream"] = stream
            seen.setdefault(fields[b"request_id"].decode(), []).append(data)
    return seen


async def test_raw_xadd_like_redis_cli_round_trip(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Other languages publish with a plain XADD of a `data` field: that must just work."""
    data = ('{"action":"place","client_order_id":"s1-0001","symbol":"BTCUSDT","side":"buy",'
            '"type":"limit","quantity":"0.010","price":"50000","time_in_force":"gtc"}')
    cli = shutil.which("redis-cli")
    async with running(make_settings()):
        if cli:
            port = redis_url.rsplit(":", 1)[1].split("/")[0]
            out = subprocess.run([cli, "-p", port, "XADD", K.pending, "*", "data", data],
                                 capture_output=True, text=True, check=True)
            request_id = out.stdout.strip()
        else:
            request_id = (await redis_client.execute_command(
                "XADD", K.pending, "*", "data", data)).decode()
        client = OrderClient(redis_client)
        result = await client.wait_result(request_id, 10)
    assert result.client_order_id == "s1-0001"
    assert result.status is ResultStatus.FILLED  # a buy limit at the reference price
    assert result.filled_quantity == Decimal("0.010")
    assert result.average_price is not None and result.average_price <= Decimal("50000")
    assert result.request_id == request_id
    assert result.enqueued_at <= result.received_at <= result.completed_at
    record = await redis_client.hgetall(K.order("s1-0001"))
    assert record[b"state"] == b"filled"
    events = await events_in(redis_client)
    assert [e.state for e in events] == [
        OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED, OrderState.FILLED]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    # One entry per write (event v2): the paper exchange takes the order, and its outcome
    # is written, in the script that records it (pipeline/steps/taken.py): one write. At a
    # remote broker: persisted before the send, then its outcome ([[1, 2], [3, 4]]).
    entries = await redis_client.xrange(K.events)
    assert [[e.seq for e in decode_events(f[b"data"])] for _, f in entries] == [[1, 2, 3, 4]]
    assert {f[b"client_order_id"] for _, f in entries} == {b"s1-0001"}


async def test_requests_published_before_the_first_worker_are_executed(
    make_settings: Callable[..., Settings], client: OrderClient
) -> None:
    early = await client.place("ETHUSDT", "buy", "market", "0.5")
    async with running(make_settings()):
        result = await client.wait_result(early.request_id, 10)
    assert result.status is ResultStatus.FILLED


def mixed_request(i: int, rng: random.Random) -> Request:
    symbol = rng.choice(["BTCUSDT", "ETHUSDT", "EUR_USD"])
    step = {"BTCUSDT": "0.001", "ETHUSDT": "0.01", "EUR_USD": "1000"}[symbol]
    ref = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000), "EUR_USD": Decimal("1.085")}
    side = rng.choice([Side.BUY, Side.SELL])
    kind = rng.choice(["market", "limit_rest", "limit_take", "ioc", "bad"])
    qty = parse_decimal(str(Decimal(step) * rng.randint(1, 5)))
    cid = f"mix-{i}"
    below = side is Side.BUY
    tick = Decimal("0.00001") if symbol == "EUR_USD" else Decimal("0.01")
    away = (ref[symbol] * Decimal("0.9" if below else "1.1")).quantize(tick)
    if kind == "market":
        return Request(client_order_id=cid, symbol=symbol, side=side,
                       type=OrderType.MARKET, quantity=qty)
    if kind == "limit_rest":
        return Request(client_order_id=cid, symbol=symbol, side=side, type=OrderType.LIMIT,
                       quantity=qty, price=parse_decimal(str(away)))
    if kind == "limit_take":
        through = (ref[symbol] * Decimal("1.01" if below else "0.99")).quantize(tick)
        return Request(client_order_id=cid, symbol=symbol, side=side, type=OrderType.LIMIT,
                       quantity=qty, price=parse_decimal(str(through)))
    if kind == "ioc":
        return Request(client_order_id=cid, symbol=symbol, side=side, type=OrderType.LIMIT,
                       quantity=qty, price=parse_decimal(str(away)), time_in_force="ioc")
    return Request(client_order_id=cid, symbol="NOPE", side=side, type=OrderType.MARKET,
                   quantity=qty)


async def test_one_thousand_mixed_orders_through_two_workers_answered_exactly_once(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    rng = random.Random(7)
    requests = [mixed_request(i, rng) for i in range(1_000)]
    # Every 50th request reuses an earlier client id: a producer retry, never a 2nd order.
    retried_valid = 0
    for i in range(50, 1_000, 50):
        retried_valid += requests[i - 7].symbol != "NOPE"  # an invalid one made no order
        requests[i] = Request(client_order_id=requests[i - 7].client_order_id,
                              symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET,
                              quantity=parse_decimal("0.001"))
    async with running(make_settings("w1", batch_size=50)), \
            running(make_settings("w2", batch_size=50)):
        ids = []
        for chunk in range(0, 1_000, 100):
            ids += [(await client.publish(r)).request_id for r in requests[chunk:chunk + 100]]
            await asyncio.sleep(0.01)
        results = await client.wait_results(ids, 60)
    assert len(results) == 1_000
    seen = await results_by_request(redis_client)
    assert set(seen) == set(ids)
    assert all(len(v) == 1 for v in seen.values()), "a request was answered twice"
    workers = Counter(v[0]["worker"] for v in seen.values())
    assert set(workers) == {"w1", "w2"}, workers
    info = await redis_client.xinfo_groups(K.pending)
    assert info[0]["pending"] == 0
    by_kind = Counter(r.status for r in results.values())
    assert by_kind[ResultStatus.FILLED] > 100 and by_kind[ResultStatus.ACCEPTED] > 100
    assert by_kind[ResultStatus.EXPIRED] > 50
    invalid = [r for r in results.values() if r.reason_code == "invalid"]
    assert invalid and all("symbol" in (r.reason or "") for r in invalid)
    # Of a client id and its retry, exactly one makes an order; the other is refused as a
    # duplicate, or (on a loaded machine, where the two workers' risk compare-and-sets
    # keep colliding) denied unchecked, fail-safe: never two orders.
    refused = ("duplicate", "risk_denied:unavailable")
    pairs = [(results[ids[i - 7]], results[ids[i]]) for i in range(50, 1_000, 50)
             if requests[i - 7].symbol != "NOPE"]
    assert len(pairs) == retried_valid > 5
    for first, retry in pairs:
        assert sum(r.reason_code in refused for r in (first, retry)) == 1, (first, retry)
    dupes = [r for r in results.values() if r.reason_code == "duplicate"]
    assert len(dupes) > retried_valid // 2  # contention is the exception
    # One order per client id: the exchange received each id once.
    received = await redis_client.xrange(K.paper("default", "received"))
    cids = [f[b"client_order_id"] for _, f in received]
    assert len(cids) == len(set(cids))


async def test_malformed_entries_each_fail_alone_and_the_worker_keeps_serving(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    bad: dict[str, dict[str, Any]] = {
        "not json": {"data": "{not json"},
        "wrong field name": {"data": '{"symbol":"BTCUSDT","side":"buy","type":"market",'
                                     '"qty":"1"}'},
        "negative quantity": {"data": '{"symbol":"BTCUSDT","side":"buy","type":"market",'
                                      '"quantity":"-1","client_order_id":"neg-1"}'},
        "missing data": {"payload": '{"symbol":"BTCUSDT"}'},
        "1 MB payload": {"data": '{"symbol":"BTCUSDT","metadata":{"x":"' + "x" * 1_048_576
                                 + '"}}'},
        "binary garbage": {"data": b"\xff\xfe\x00\x81"},
        "array": {"data": "[1,2,3]"},
    }
    async with running(make_settings()):
        ids = {name: (await redis_client.xadd(K.pending, fields)).decode()
               for name, fields in bad.items()}
        good = await client.place("BTCUSDT", "sell", "market", "0.001")
        results = await client.wait_results([*ids.values(), good.request_id], 15)
    for name, rid in ids.items():
        result = results[rid]
        assert result.status is ResultStatus.FAILED, name
        assert result.reason_code == "invalid", name
        assert result.reason, name
    assert "quantity" in (results[ids["negative quantity"]].reason or "")
    assert results[ids["negative quantity"]].client_order_id == "neg-1"
    assert "qty" in (results[ids["wrong field name"]].reason or "")
    assert "data" in (results[ids["missing data"]].reason or "")
    assert "bytes" in (results[ids["1 MB payload"]].reason or "")
    assert results[good.request_id].status is ResultStatus.FILLED
    failed = await redis_client.xlen(K.failed)
    assert failed == len(bad)
    # Nothing bad reached the exchange.
    assert await redis_client.xlen(K.paper("default", "received")) == 1


async def test_duplicate_client_id_gets_the_first_orders_state(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    async with running(make_settings()):
        first = await client.place("BTCUSDT", "buy", "limit", "0.010", price="40000",
                                   client_order_id="dup-1")
        r1 = await client.wait_result(first.request_id, 10)
        again = await client.place("BTCUSDT", "buy", "market", "5", client_order_id="dup-1")
        r2 = await client.wait_result(again.request_id, 10)
    assert r1.status is ResultStatus.ACCEPTED
    assert r2.status is ResultStatus.FAILED and r2.reason_code == "duplicate"
    assert r2.order_state is OrderState.ACCEPTED
    assert r2.quantity == Decimal("0.010")  # the first order's, not the retry's
    assert await redis_client.xlen(K.paper("default", "received")) == 1


async def test_deadline_passed_is_expired_and_never_sent(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    stale = await client.place("BTCUSDT", "buy", "market", "0.01",
                               deadline=int(time.time() * 1000) - 1)
    async with running(make_settings()):
        result = await client.wait_result(stale.request_id, 10)
    assert result.status is ResultStatus.EXPIRED and result.reason_code == "expired"
    assert "deadline" in (result.reason or "")
    assert not await redis_client.exists(K.order(stale.client_order_id or ""))
    assert await redis_client.xlen(K.paper("default", "received")) == 0


async def test_cancel_resting_unknown_and_terminal_orders(
    make_settings: Callable[..., Settings], client: OrderClient
) -> None:
    async with running(make_settings()):
        rest = await client.place("BTCUSDT", "buy", "limit", "0.01", price="40000",
                                  client_order_id="rest-1")
        filled = await client.place("BTCUSDT", "buy", "market", "0.01",
                                    client_order_id="fill-1")
        await client.wait_results([rest.request_id, filled.request_id], 10)
        c1 = await client.cancel("rest-1")
        c2 = await client.cancel("fill-1")
        c3 = await client.cancel("nobody")
        results = await client.wait_results([c1.request_id, c2.request_id, c3.request_id], 10)
        again = await client.cancel("rest-1")
        r4 = await client.wait_result(again.request_id, 10)
    r1, r2, r3 = (results[x.request_id] for x in (c1, c2, c3))
    assert r1.status is ResultStatus.CANCELLED and r1.order_state is OrderState.CANCELLED
    assert r2.reason_code == "not_cancellable" and r2.order_state is OrderState.FILLED
    assert r3.reason_code == "not_found"
    assert r4.reason_code == "not_cancellable" and r4.order_state is OrderState.CANCELLED


async def test_cancel_all_by_symbol(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    async with running(make_settings()):
        placed = [
            await client.place("BTCUSDT", "buy", "limit", "0.01", price="40000",
                               client_order_id="btc-1"),
            await client.place("BTCUSDT", "sell", "limit", "0.01", price="60000",
                               client_order_id="btc-2"),
            await client.place("ETHUSDT", "buy", "limit", "1", price="2000",
                               client_order_id="eth-1"),
        ]
        await client.wait_results([p.request_id for p in placed], 10)
        sub = await client.cancel_all(symbol="BTCUSDT")
        result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.CANCELLED
    assert result.cancelled == ["btc-1", "btc-2"]
    states = {cid: (await redis_client.hget(K.order(cid), "state")) for cid in
              ("btc-1", "btc-2", "eth-1")}
    assert states == {"btc-1": b"cancelled", "btc-2": b"cancelled", "eth-1": b"accepted"}
    assert await redis_client.smembers(K.open) == {b"eth-1"}


async def test_a_cancel_behind_its_place_in_the_same_batch_sees_the_order(
    make_settings: Callable[..., Settings], client: OrderClient
) -> None:
    place = await client.place("BTCUSDT", "buy", "limit", "0.01", price="40000",
                               client_order_id="same-batch")
    cancel = await client.cancel("same-batch")
    async with running(make_settings(batch_size=100)):
        results = await client.wait_results([place.request_id, cancel.request_id], 10)
    assert results[place.request_id].status is ResultStatus.ACCEPTED
    assert results[cancel.request_id].status is ResultStatus.CANCELLED


async def test_metrics_and_health_endpoints(
    make_settings: Callable[..., Settings], client: OrderClient
) -> None:
    async with running(make_settings()) as worker:
        subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(5)]
        subs.append(await client.publish(Request(action=Action.CANCEL, client_order_id="x")))
        # An account nobody configured must not become a label value.
        subs.append(await client.publish(Request(action=Action.CANCEL, client_order_id="x",
                                                 account="made-up-by-a-producer")))
        await client.wait_results([s.request_id for s in subs], 10)
        base = f"http://127.0.0.1:{worker.metrics_port}"
        expected = [
            'orderstream_requests_total{account="default",action="place",outcome="filled",'
            'reason_code=""} 5.0',
            'orderstream_requests_total{account="",action="cancel",outcome="failed",'
            'reason_code="not_found"} 1.0',
            'orderstream_requests_total{account="",action="cancel",outcome="failed",'
            'reason_code="invalid"} 1.0',
        ]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            # A result is visible in Redis a moment before the worker counts it: scrape
            # until the last one is counted.
            for _ in range(100):
                async with http.get(f"{base}/metrics") as resp:
                    text = await resp.text()
                if all(line in text for line in expected):
                    break
                await asyncio.sleep(0.05)
    for line in expected:
        assert line in text
    assert "made-up-by-a-producer" not in text
    assert "orderstream_request_latency_seconds_bucket" in text
    assert 'le="0.0005"' in text and 'le="10.0"' in text
    assert "orderstream_batch_size_count" in text
    assert "orderstream_consumer_group_lag" in text
    # The mode it trades in, for dashboards and alerts (a live worker where none should be).
    assert re.search(r'orderstream_worker_info\{[^}]*mode="paper"[^}]*\} 1\.0', text)


async def test_an_idle_worker_survives_blocks_longer_than_its_socket_timeout(
    make_settings: Callable[..., Settings], client: OrderClient
) -> None:
    """redis-py issue 3138: XREADGROUP BLOCK near the socket timeout raises a timeout."""
    settings = make_settings(block_ms=1_500)
    settings.redis.socket_timeout_s = 1.0  # a misconfiguration the worker must survive
    async with running(settings):
        await asyncio.sleep(4)
        sub = await client.place("BTCUSDT", "buy", "market", "0.001")
        result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.FILLED



async def test_the_worker_lives_through_a_redis_restart(
    make_settings: Callable[..., Settings], redis_server: Any, redis_url: str
) -> None:
    """A restart without persistence also drops the stream and the group: the worker
    reconnects, recreates the group and serves again; it never dies of it."""
    async with running(make_settings()) as worker:
        before = OrderClient.from_url(redis_url)
        first = await before.place("BTCUSDT", "buy", "market", "0.001")
        assert (await before.wait_result(first.request_id, 10)).status is ResultStatus.FILLED
        await before.aclose()
        redis_server.restart()
        await asyncio.sleep(1.5)
        after = OrderClient.from_url(redis_url)
        try:
            second = await after.place("ETHUSDT", "sell", "market", "0.01")
            result = await after.wait_result(second.request_id, 20)
        finally:
            await after.aclose()
        assert result.status is ResultStatus.FILLED
        errors = worker.metrics.registry.get_sample_value("orderstream_redis_errors_total")
        assert errors is not None and errors >= 1


async def test_a_broker_that_stays_unavailable_exhausts_retries_and_sends_nothing(
    redis_url: str, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    from executor.config import load_settings

    def failing(attempts: int) -> Settings:
        return load_settings(None, {
            "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
            "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_SUBMIT_ATTEMPTS": str(attempts),
            "ORDERSTREAM_ACCOUNTS_DEFAULT_FAILURE_RATE": "1",
            # Retries are under test here, not the breaker (test_breaker.py), which would
            # refuse the second order after the first one's failures.
            "ORDERSTREAM_BREAKER_CONSECUTIVE_FAILURES": "1000000",
            "ORDERSTREAM_BREAKER_MIN_CALLS": "1000000"})

    async with running(failing(3)):
        plain = await client.place("BTCUSDT", "buy", "market", "0.001")
        result = await client.wait_result(plain.request_id, 20)
    assert result.status is ResultStatus.REJECTED
    assert result.reason_code == "retries_exhausted" and "3 attempts" in (result.reason or "")
    assert result.order_state is OrderState.REJECTED

    # With attempts to spare, the deadline ends the retries: never sent, so expired.
    async with running(failing(1_000)):
        deadline = int(time.time() * 1000) + 3_000
        hurried = await client.place("BTCUSDT", "buy", "market", "0.001", deadline=deadline)
        late = await client.wait_result(hurried.request_id, 20)
    assert late.status is ResultStatus.EXPIRED and late.reason_code == "expired"
    assert late.order_state is OrderState.EXPIRED
    assert "never sent" in (late.reason or "") and late.completed_at >= deadline
    # The backoff (up to 2 s a wait) is cut short at the deadline, not slept through.
    assert late.completed_at - deadline < 1_500
    assert await redis_client.xlen(K.paper("default", "received")) == 0
