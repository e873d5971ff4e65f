"""What another worker left behind: requests idle past the visibility timeout are reclaimed
and answered exactly once; an order persisted or even sent before the crash is looked up,
never sent twice; an entry delivered too often is dead-lettered with its raw fields."""

from __future__ import annotations

import asyncio
import json
import signal
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.config import Settings, load_settings
from executor.infra.streams import positions_caught_up
from executor.safety.risk.state import open_key
from producer.client import OrderClient
from producer.contract import (
    OrderState,
    ResultStatus,
)
from producer.keys import GROUP, Keys

from .conftest import (
    died_after_pending_cancel,
    events_in,
    hand_over,
    persisted_by_the_dead_worker,
    running,
    taken_by_a_dead_worker,
)
from .test_operator_commands import cli, cli_json

K = Keys()


def settings(redis_url: str, **extra: str) -> Settings:
    env = {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
           "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "300",
           "ORDERSTREAM_LOOKUP_WINDOW_MS": "300", **extra}
    return load_settings(None, env)


async def received(r: aioredis.Redis) -> list[bytes]:
    return [f[b"client_order_id"] for _, f in await r.xrange(K.paper("default", "received"))]


async def test_a_request_a_dead_worker_took_is_reclaimed_and_answered_once(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED and result.worker == "w1"
    assert await redis_client.xlen(K.completed) == 1
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await received(redis_client) == [sub.client_order_id.encode()]


async def test_a_crash_after_persist_is_sent_once_after_the_lookup_finds_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    # The dead worker got as far as persisting the order (pending_submit), no further.
    await persisted_by_the_dead_worker(redis_client, sub)
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(redis_client) == [sub.client_order_id.encode()]
    states = [e.state for e in await events_in(redis_client)]
    assert states == [OrderState.CREATED, OrderState.PENDING_SUBMIT, OrderState.SUBMITTED,
                      OrderState.FILLED]


async def test_a_crash_between_the_broker_call_and_the_result_never_sends_twice(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    spec = await persisted_by_the_dead_worker(redis_client, sub)
    # ... and the exchange took the order, then the worker died before writing the outcome.
    exchange = PaperBroker("default", PaperAccount(), redis_client, K)
    await exchange.start(background=False)
    sent = await exchange.submit(sub.client_order_id, spec)
    await exchange.close()
    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert result.broker_order_id == sent.broker_order_id
    assert result.filled_quantity == sent.filled_quantity
    assert await received(redis_client) == [sub.client_order_id.encode()], "sent twice"


async def test_an_entry_delivered_too_often_is_dead_lettered_with_its_raw_fields(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = OrderClient(redis_client)
    sub = await taken_by_a_dead_worker(redis_client, client)
    await redis_client.xclaim(K.pending, GROUP, "dead", 0, [sub.request_id], idle=60_000,
                              retrycount=3)
    async with running(settings(redis_url, ORDERSTREAM_MAX_DELIVERIES="3")):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FAILED and result.reason_code == "poison"
    ((_, fields),) = await redis_client.xrange(K.failed)
    assert fields[b"request_id"].decode() == sub.request_id
    raw = json.loads(fields[b"raw:data"])
    assert raw["client_order_id"] == sub.client_order_id
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.xlen(K.pending) == 0  # answered: deleted, kept on the result
    assert await received(redis_client) == []


# The paper exchange takes a plain order in the script that records it (PaperAccount
# take_with_record): off, it is taken in the submit step's call, as a remote broker's is.
SEND_AT_SUBMIT = {"ORDERSTREAM_ACCOUNTS_DEFAULT_TAKE_WITH_RECORD": "false"}


@pytest.mark.parametrize("point, at_submit, reached_the_exchange, answered", [
    ("after_submit", True, True, False),  # sent, its outcome not written
    ("after_persist", True, False, False),  # recorded, not sent
    # Taken and answered with its record (pipeline/steps/taken.py): nothing left to do.
    ("after_persist", False, True, True),
])
async def test_a_worker_killed_at_a_failpoint_is_finished_by_another_without_a_resend(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path, point: str,
    at_submit: bool, reached_the_exchange: bool, answered: bool,
) -> None:
    """A real worker process SIGKILLs itself exactly there; another one finishes it."""
    client = OrderClient(redis_client)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    doomed = WorkerProcess(redis_url, "doomed", tmp_path / "doomed.log",
                           ORDERSTREAM_FAILPOINT=point,
                           **(SEND_AT_SUBMIT if at_submit else {}))
    code = await asyncio.to_thread(doomed.proc.wait, 60)
    assert code == -signal.SIGKILL, (tmp_path / "doomed.log").read_text()
    assert await redis_client.xlen(K.completed) == (1 if answered else 0)
    sent = await received(redis_client)
    assert sent == ([sub.client_order_id.encode()] if reached_the_exchange else [])
    record = json.loads(await redis_client.hget(K.order(sub.client_order_id), "record"))
    assert record["state"] == ("filled" if answered else "pending_submit")

    async with running(settings(redis_url)):
        result = await client.wait_result(sub.request_id, 15)
    assert result.status is ResultStatus.FILLED
    assert await received(redis_client) == [sub.client_order_id.encode()], "sent twice"
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    assert await redis_client.xlen(K.completed) == 1


async def resting(client: OrderClient, *prices: str) -> list[str]:
    subs = [await client.place("BTCUSDT", "buy", "limit", "0.001", price=p) for p in prices]
    answers = await client.wait_results([s.request_id for s in subs], 10)
    assert {answers[s.request_id].status for s in subs} == {ResultStatus.ACCEPTED}
    return [s.client_order_id or "" for s in subs]


async def states(r: aioredis.Redis, cids: list[str]) -> list[str]:
    return [(await r.hget(K.order(c), "state") or b"").decode() for c in cids]


async def test_a_cancel_whose_worker_died_after_pending_cancel_is_sent_on_redelivery(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    client = OrderClient(redis_client)
    async with running(settings(redis_url)):
        (cid,) = await resting(client, "40000")
    cancel = await client.cancel(cid)
    await died_after_pending_cancel(redis_url, tmp_path / "doomed.log")
    assert await states(redis_client, [cid]) == ["pending_cancel"]
    await hand_over(redis_client, cancel.request_id)
    async with running(settings(redis_url, ORDERSTREAM_VISIBILITY_TIMEOUT_MS="10000")):
        result = await client.wait_result(cancel.request_id, 15)
    assert result.status is ResultStatus.CANCELLED and result.worker == "w1"
    assert await states(redis_client, [cid]) == ["cancelled"]


async def test_a_cancel_all_whose_worker_died_after_pending_cancel_cancels_every_order(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    client = OrderClient(redis_client)
    async with running(settings(redis_url)):
        cids = await resting(client, "40000", "41000")
    everything = await client.cancel_all()
    await died_after_pending_cancel(redis_url, tmp_path / "doomed.log")
    # It died after the first pending_cancel it wrote (the other may have been written too).
    assert "pending_cancel" in await states(redis_client, cids)
    await hand_over(redis_client, everything.request_id)
    async with running(settings(redis_url, ORDERSTREAM_VISIBILITY_TIMEOUT_MS="10000")):
        result = await client.wait_result(everything.request_id, 15)
    assert result.status is ResultStatus.CANCELLED
    assert sorted(result.cancelled) == sorted(cids), "an order left pending_cancel skipped"
    assert await states(redis_client, cids) == ["cancelled", "cancelled"]
    exchange = PaperBroker("default", PaperAccount(), redis_client, K)
    for cid in cids:
        assert (await exchange.get_order(cid, "BTCUSDT")).status.value == "cancelled"


async def die_on_every_delivery(redis_url: str, tmp_path: Path, point: str) -> None:
    """Two worker processes in turn take the request and SIGKILL themselves at ``point``:
    with max_deliveries 2, the next worker's reclaim dead-letters it."""
    fast = {"ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "300", "ORDERSTREAM_MAX_DELIVERIES": "2",
            "ORDERSTREAM_LOOKUP_WINDOW_MS": "300"}
    for n in (1, 2):
        log = tmp_path / f"doomed{n}.log"
        doomed = WorkerProcess(redis_url, f"doomed{n}", log, ORDERSTREAM_FAILPOINT=point,
                               **fast, **SEND_AT_SUBMIT)
        assert await asyncio.to_thread(doomed.proc.wait, 60) == -signal.SIGKILL, \
            log.read_text()


async def test_a_request_that_fails_after_persist_on_every_delivery_strands_nothing(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    """Its worker dies between the broker call and the write of its outcome on every
    delivery. Dead-lettered as poison, it hands its order over: resolved at the exchange by
    client id and recorded with its events, the producer told the client id, the state and
    not to place it again, the risk reservation given back."""
    client = OrderClient(redis_client)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    cid = sub.client_order_id or ""
    await die_on_every_delivery(redis_url, tmp_path, "after_submit")
    assert await received(redis_client) == [cid.encode()]  # sent once, looked up after
    assert await states(redis_client, [cid]) == ["pending_submit"]
    assert await redis_client.hlen(open_key(K, "default")) == 1  # its reservation

    async with running(settings(redis_url, ORDERSTREAM_MAX_DELIVERIES="2",
                                ORDERSTREAM_TRACK_INTERVAL_MS="100")):
        result = await client.wait_result(sub.request_id, 15)
        assert result.reason_code == "poison"
        assert result.client_order_id == cid
        assert result.status is ResultStatus.SUBMITTED
        assert result.order_state is OrderState.SUBMITTED
        assert "do not place it again" in (result.reason or "")
        assert f"orderstream order {cid}" in (result.reason or "")
        for _ in range(100):  # the tracker looks it up at the exchange
            order = await client.order(cid)
            if order is not None and order.state is OrderState.FILLED:
                break
            await asyncio.sleep(0.05)
        assert await positions_caught_up(redis_client, K, 10)
    assert order is not None and order.state is OrderState.FILLED
    assert order.filled_quantity == Decimal("0.010") and len(order.fills) == 1
    events = await events_in(redis_client)
    assert [e.state for e in events] == [OrderState.CREATED, OrderState.PENDING_SUBMIT,
                                         OrderState.SUBMITTED, OrderState.FILLED]
    assert "dead-lettered" in (events[2].reason or "")
    assert events[2].request_id == sub.request_id
    assert events[3].fill is not None
    assert await received(redis_client) == [cid.encode()], "sent twice"
    assert await redis_client.hlen(open_key(K, "default")) == 0, "reservation leaked"
    assert not await redis_client.sismember(K.open, cid)
    ((_, fields),) = await redis_client.xrange(K.failed)
    assert fields[b"client_order_id"].decode() == cid
    assert json.loads(fields[b"raw:data"])["client_order_id"] == cid
    assert (await redis_client.xpending(K.pending, GROUP))["pending"] == 0
    # What the result tells the producer to run.
    code, out = await cli(redis_url, "order", cid)
    assert code == 0 and out.startswith("FILLED") and cid in out, out
    code, shown = await cli_json(redis_url, "order", cid)
    assert shown["state"] == "filled" and shown["request_id"] == sub.request_id
    assert (await cli(redis_url, "order", "no-such-order"))[0] == 1


async def test_a_request_dead_lettered_before_its_order_was_ever_sent_ends_it_rejected(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path,
) -> None:
    """Its worker dies right after persisting, on every delivery: nobody ever took the
    order's send token, so the dead letter takes it (nobody can send it now) and ends the
    order rejected, never sent, its reservation given back; not a 10-minute unknown."""
    client = OrderClient(redis_client)
    sub = await client.place("BTCUSDT", "buy", "market", "0.010")
    cid = sub.client_order_id or ""
    await die_on_every_delivery(redis_url, tmp_path, "after_persist")
    assert await states(redis_client, [cid]) == ["pending_submit"]
    async with running(settings(redis_url, ORDERSTREAM_MAX_DELIVERIES="2")):
        result = await client.wait_result(sub.request_id, 15)
        assert await positions_caught_up(redis_client, K, 10)
    assert result.reason_code == "poison" and result.client_order_id == cid
    assert result.status is ResultStatus.REJECTED
    assert result.order_state is OrderState.REJECTED
    assert "never sent" in (result.reason or "")
    assert await received(redis_client) == []
    assert (await redis_client.hget(K.order(cid), "sender") or b"").startswith(b"poison:")
    assert await redis_client.hlen(open_key(K, "default")) == 0, "reservation leaked"
    assert not await redis_client.sismember(K.open, cid)
