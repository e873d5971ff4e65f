"""A hostile request costs nobody else anything, on a real redis-server and a real worker:
hostile entries mixed into batches of valid ones are each refused with their reason code,
and every valid one is answered normally on its first delivery (the visibility timeout is
two minutes: a request that had to wait for a redelivery could not be answered within the
test's wait, and nothing is reclaimed). A bug of ours met on one request, in any step, fails
that request alone: ``internal_error`` before anything of it is written, else it stays
pending (redone on redelivery, from its order record, never sent twice)."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.config import Settings
from executor.pipeline.job import Job
from executor.pipeline.steps import deadline as deadline_step
from executor.pipeline.steps import decode as decode_step
from executor.pipeline.steps import risk as risk_step
from executor.pipeline.steps.submit import Submit
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import MAX_DEPTH, ResultStatus
from producer.keys import GROUP, Keys
from producer.replies import text

from .conftest import running

K = Keys()
VISIBILITY_MS = 120_000
WAIT_S = 40  # well inside the visibility timeout: no answer here came from a redelivery


def body(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def market(cid: str, **extra: Any) -> bytes:
    return body(client_order_id=cid, symbol="BTCUSDT", side="buy", type="market",
                quantity="0.001", **extra)


def nested(levels: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * levels + leaf + b"}" * levels


PLACE_HEAD = b'{"symbol":"BTCUSDT","side":"buy","type":"market",'

# name -> (entry fields, the field or words its refusal names). Each is refused `invalid`.
HOSTILE: dict[str, tuple[dict[str, bytes], str]] = {
    "metadata 1,100 levels deep (2 KB)": (
        {"data": PLACE_HEAD + b'"quantity":"1","metadata":' + b"[" * 1100 + b"]" * 1100
         + b"}"}, "`metadata` nests"),
    "objects 1,100 levels deep": ({"data": PLACE_HEAD + b'"quantity":"1","metadata":'
                                   + nested(1100) + b"}"}, "`metadata` nests"),
    "a top-level array 50,000 deep": ({"data": b"[" * 50_000}, "`data` nests"),
    "quantity 1e9999999999": ({"data": PLACE_HEAD + b'"quantity":1e9999999999}'},
                              "quantity"),
    "price 1e-999999": ({"data": PLACE_HEAD.replace(b"market", b"limit")
                         + b'"quantity":"1","price":1e-999999}'}, "price"),
    "metadata number 1e999999999": ({"data": PLACE_HEAD + b'"quantity":"1",'
                                     b'"metadata":{"x":1e999999999}}'}, "metadata"),
    "quantity of 21 integer digits": ({"data": PLACE_HEAD
                                       + b'"quantity":123456789012345678901}'}, "quantity"),
    "quantity of 21 fraction digits": ({"data": PLACE_HEAD
                                        + b'"quantity":0.000000000000000000001}'},
                                       "quantity"),
    "quantity with an exponent as text": ({"data": PLACE_HEAD + b'"quantity":"1e5"}'},
                                          "quantity"),
    "invalid UTF-8": ({"data": PLACE_HEAD + b'"quantity":"1","strategy_id":"\xff\xfe"}'},
                      "data"),
    "not an object": ({"data": b"[1,2,3]"}, "data"),
    "NaN": ({"data": PLACE_HEAD + b'"quantity":NaN}'}, "data"),
    "no data field": ({"payload": b"{}"}, "data"),
    "empty data": ({"data": b""}, "data"),
    "over max_request_bytes": ({"data": PLACE_HEAD + b'"quantity":"1","metadata":{"x":"'
                                + b"x" * 70_000 + b'"}}'}, "bytes"),
    "wrong type": ({"data": PLACE_HEAD + b'"quantity":{"a":1}}'}, "quantity"),
    "control characters in the client id": ({"data": market("a\u0000b")}, "client_order_id"),
    "unknown account": ({"data": market("acct-1", account="nope")}, "account"),
    "unknown field": ({"data": market("unk-1", colour="red")}, "colour"),
}


def valid_entries(count: int) -> list[tuple[str, bytes, ResultStatus]]:
    """(client id, data, the status it must end in): market orders fill, limits rest."""
    out = []
    for i in range(count):
        cid = f"ok-{i}"
        if i % 3 == 0:
            data = body(client_order_id=cid, symbol="ETHUSDT", side="buy", type="limit",
                        quantity="0.01", price="2000")
            out.append((cid, data, ResultStatus.ACCEPTED))
        elif i % 3 == 1:
            out.append((cid, market(cid), ResultStatus.FILLED))
        else:
            # Metadata nested right up to the limit is a valid request.
            deep = b'{"a":' + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2) + b"}"
            data = market(cid)[:-1] + b',"metadata":' + deep + b"}"
            out.append((cid, data, ResultStatus.FILLED))
    return out


class Deliveries(Counter[str]):
    """The entry ids a worker was handed, batch by batch."""

    batches: list[list[str]]


def count_deliveries(worker: Worker) -> Deliveries:
    seen = Deliveries()
    seen.batches = []
    process = worker.process

    async def counting(entries: Sequence[tuple[Any, Any]]) -> None:
        batch = [text(entry_id) for entry_id, _ in entries]
        seen.update(batch)
        seen.batches.append(batch)
        await process(entries)

    worker.process = counting  # type: ignore[method-assign]
    return seen


async def pending_count(r: aioredis.Redis) -> int:
    return int((await r.xpending(K.pending, GROUP))["pending"])


def reclaimed(worker: Worker) -> float:
    return worker.metrics.registry.get_sample_value("orderstream_reclaimed_total") or 0.0


async def test_hostile_entries_mixed_into_batches_cost_the_valid_ones_nothing(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis
) -> None:
    rng = random.Random(13)
    valid = valid_entries(120)
    hostile = [(name, fields, needle) for name, (fields, needle) in HOSTILE.items()
               for _ in range(3)]
    entries: list[tuple[str, dict[str, bytes]]] = (
        [(cid, {"data": data}) for cid, data, _ in valid]
        + [(name, fields) for name, fields, _ in hostile])
    rng.shuffle(entries)
    # Published before the worker starts, so every batch it reads mixes the two.
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    ids: dict[str, list[str]] = {}
    for name, fields in entries:
        entry_id = (await redis_client.xadd(K.pending, fields)).decode()  # type: ignore[arg-type]
        ids.setdefault(name, []).append(entry_id)
    settings = make_settings(visibility_timeout_ms=VISIBILITY_MS, batch_size=25)
    async with running(settings) as worker:
        deliveries = count_deliveries(worker)
        results = await client.wait_results([i for group in ids.values() for i in group],
                                            WAIT_S)
        received = await worker.brokers["default"].received_count()  # type: ignore[attr-defined]
        assert reclaimed(worker) == 0
    # Each entry was delivered once, in batches that mixed valid and hostile entries.
    assert sorted(deliveries.elements()) == sorted(i for group in ids.values() for i in group)
    assert len(deliveries.batches) >= 5
    hostile_ids = {i for name, _, _ in hostile for i in ids[name]}
    mates = {i: set(b) - hostile_ids for b in deliveries.batches for i in b if i in hostile_ids}
    assert all(mates[i] for i in hostile_ids)  # every hostile entry had valid batch-mates
    for cid, _data, status in valid:
        (rid,) = ids[cid]
        result = results[rid]
        assert (result.status, result.reason_code) == (status, None), (cid, result.reason)
        assert result.client_order_id == cid
    for name, _fields, needle in hostile:
        for rid in ids[name]:
            result = results[rid]
            assert result.status is ResultStatus.FAILED, name
            assert result.reason_code == "invalid", (name, result.reason_code, result.reason)
            assert needle in (result.reason or ""), (name, result.reason)
            assert len(result.reason or "") < 1_000, name  # no echo of the hostile input
    # Exactly one answer each, nothing left pending, and only the valid orders were sent.
    assert await redis_client.xlen(K.completed) + await redis_client.xlen(K.failed) == \
        len(entries)
    assert await pending_count(redis_client) == 0
    assert received == len(valid)


# -- a bug of ours on one request, step by step ----------------------------------------------

BOOM = "boom-1"


class Bug(Exception):
    """A bug of ours, injected: it trips on the request with client id BOOM."""


def tripping(step: Callable[[Sequence[Job]], Awaitable[Any]]
             ) -> Callable[[Sequence[Job]], Awaitable[Any]]:
    """``step`` with a bug that fails any call whose batch holds the BOOM request."""
    async def buggy(jobs: Sequence[Job], **options: Any) -> Any:
        if any(BOOM in (j.client_order_id, *j.cancelled) for j in jobs):
            raise Bug("tripped")
        return await step(jobs, **options)
    return buggy


@contextmanager
def bug_in(step: str, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inject a bug tripping on BOOM into one step of ``worker``."""
    if step == "decode":
        real = decode_step.check_request

        def check(request: Any, now: int | None = None) -> None:
            if request.client_order_id == BOOM:
                raise Bug("tripped")
            real(request, now)
        monkeypatch.setattr(decode_step, "check_request", check)
    elif step == "deadline":
        real_past = deadline_step.past_deadline

        def past(job: Job, now: int) -> str | None:
            if job.client_order_id == BOOM:
                raise Bug("tripped")
            return real_past(job, now)
        monkeypatch.setattr(deadline_step, "past_deadline", past)
    elif step == "risk check":
        # Inside the risk step, which decides a batch's orders together.
        real_evaluate = risk_step.evaluate

        def evaluate(candidate: Any, *args: Any) -> Any:
            if candidate.client_order_id == BOOM:
                raise Bug("tripped")
            return real_evaluate(candidate, *args)
        monkeypatch.setattr(risk_step, "evaluate", evaluate)
    elif step == "submit":
        # After the broker was called: applying its report fails for BOOM only.
        real_apply = Submit._apply

        def apply(self: Submit, job: Job, report: Any) -> bool:
            if job.client_order_id == BOOM:
                raise Bug("tripped")
            return real_apply(self, job, report)
        monkeypatch.setattr(Submit, "_apply", apply)
    elif step == "finish":
        real_finish = worker.store.finish

        async def finish(outcomes: Any, group: str = GROUP) -> list[str]:
            outcomes = list(outcomes)
            if any(o.result is not None and o.result.client_order_id == BOOM
                   for o in outcomes):
                raise TypeError("cannot encode")  # raised before the script is called
            return await real_finish(outcomes, group)
        monkeypatch.setattr(worker.store, "finish", finish)
    elif step == "amend":
        # Its cancelling half (after the checks); prepare, which only reads, stays as it is.
        amend = worker.amend
        real_call = amend.__call__

        class Tripping:
            prepare = amend.prepare
            __call__ = staticmethod(tripping(real_call))
        monkeypatch.setattr(worker, "amend", Tripping())
    else:
        monkeypatch.setattr(worker, step, tripping(getattr(worker, step)))
    yield
    monkeypatch.undo()


# Before anything of the request is written: answered internal_error.
DECIDED = ("decode", "deadline", "idempotency", "gate", "risk", "risk check")
# After its order may be written or sent: left pending, redone on redelivery.
HELD = ("persist", "submit", "finish")


async def _publish(r: aioredis.Redis, datas: Sequence[bytes]) -> list[str]:
    return [(await r.xadd(K.pending, {"data": d})).decode() for d in datas]


def internal_errors(worker: Worker, step: str) -> float:
    return worker.metrics.registry.get_sample_value(
        "orderstream_internal_errors_total", {"step": step}) or 0.0


@pytest.mark.parametrize("step", [*DECIDED, *HELD])
async def test_a_bug_on_one_place_fails_that_request_alone(
    step: str, make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await redis_client.xgroup_create(K.pending, GROUP, id="0", mkstream=True)
    mates = [f"mate-{i}" for i in range(8)]
    ids = await _publish(redis_client, [market(c) for c in mates[:4]] + [market(BOOM)]
                         + [market(c) for c in mates[4:]])
    boom_id = ids.pop(4)
    # The steps after the risk step run for a paper order only when the exchange does not
    # take it and write its outcome in the script that records it (take_with_record), as
    # for a remote broker's order.
    settings = make_settings(visibility_timeout_ms=VISIBILITY_MS, batch_size=50,
                             concurrency=1, accounts_default_take_with_record=str(
                                 step not in HELD).lower())
    async with running(settings) as worker:
        with bug_in(step, worker, monkeypatch):
            results = await client.wait_results(ids, WAIT_S)
            if step in DECIDED:
                boom = await client.wait_result(boom_id, WAIT_S)
        received = await worker.brokers["default"].received_count()  # type: ignore[attr-defined]
        assert internal_errors(worker, step.split()[0]) == 1
        assert reclaimed(worker) == 0
    assert {r.status for r in results.values()} == {ResultStatus.FILLED}
    if step in DECIDED:
        assert boom.reason_code == "internal_error" and boom.status is ResultStatus.FAILED
        assert f"step {step.split()[0]} (Bug)" in (boom.reason or "")
        assert received == len(mates)
        assert not await redis_client.exists(K.order(BOOM))
        assert await pending_count(redis_client) == 0
        return
    # Held: no answer, still pending on its first delivery.
    assert await pending_count(redis_client) == 1
    (entry,) = await redis_client.xpending_range(K.pending, GROUP, "-", "+", 10)
    assert entry["message_id"].decode() == boom_id and entry["times_delivered"] == 1
    # Recorded, and sent unless the bug was met before the submit step.
    assert received == len(mates) + (step != "persist")
    # Redelivered (the bug gone) to another worker, it is finished from its record: looked
    # up at the exchange when it was sent, never sent a second time.
    async with running(make_settings("w2", visibility_timeout_ms=300)) as other:
        boom = await client.wait_result(boom_id, WAIT_S)
        assert await other.brokers["default"].received_count() == \
            len(mates) + 1  # type: ignore[attr-defined]
    assert boom.status is ResultStatus.FILLED and boom.client_order_id == BOOM


@pytest.mark.parametrize("action", ["cancel", "amend"])
async def test_a_bug_on_one_cancel_or_amend_fails_that_request_alone(
    action: str, make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    resting = [BOOM, *(f"rest-{i}" for i in range(5))]
    settings = make_settings(visibility_timeout_ms=VISIBILITY_MS, batch_size=50,
                             concurrency=1)
    async with running(settings):
        placed = [await client.place("ETHUSDT", "buy", "limit", "0.01", price="2000",
                                     client_order_id=cid) for cid in resting]
        await client.wait_results([p.request_id for p in placed], WAIT_S)
    extra = {"price": "2001"} if action == "amend" else {}
    # Published while no worker runs: the next one reads them in one batch.
    ids = await _publish(redis_client, [body(action=action, client_order_id=cid, **extra)
                                        for cid in resting])
    boom_id, ids = ids[0], ids[1:]
    async with running(settings) as worker:
        with bug_in(action, worker, monkeypatch):
            results = await client.wait_results(ids, WAIT_S)
        assert internal_errors(worker, action) == 1
    expected = ResultStatus.CANCELLED if action == "cancel" else ResultStatus.ACCEPTED
    assert {r.status for r in results.values()} == {expected}
    assert {r.reason_code for r in results.values()} == {None}
    (entry,) = await redis_client.xpending_range(K.pending, GROUP, "-", "+", 10)
    assert entry["message_id"].decode() == boom_id and entry["times_delivered"] == 1
