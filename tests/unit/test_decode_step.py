"""The decode step: every malformed entry becomes one `invalid` result naming the field,
and a good one becomes an order spec with a deterministic client id."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis

from executor.brokers.registry import create_broker
from executor.config import load_settings
from executor.infra.metrics import Metrics
from executor.infra.store import Store
from executor.pipeline.job import Job
from executor.pipeline.services import Services
from executor.pipeline.steps.deadline import Deadline
from executor.pipeline.steps.decode import Decode
from producer.contract import Action, ReasonCode, ResultStatus
from producer.keys import Keys


def services(now: int = 1_700_000_000_000) -> Services:
    settings = load_settings(None, {"ORDERSTREAM_CONSUMER": "w1"})
    redis = FakeAsyncRedis()
    keys = Keys()
    brokers = {name: create_broker(name, acct, redis, keys)
               for name, acct in settings.accounts.items()}
    store = Store(redis, keys, results_maxlen=100, order_ttl_ms=1000)
    return Services(settings, store, brokers, Metrics(), "w1", clock=lambda: now)


def job(data: bytes | None, entry: str = "1700000000000-0") -> Job:
    fields = {} if data is None else {b"data": data}
    return Job(entry, fields, received_at=1_700_000_000_001)


def run(*jobs: Job) -> list[Job]:
    Decode(services())(jobs)
    return list(jobs)


def test_good_place_becomes_a_spec_with_a_deterministic_id() -> None:
    (j,) = run(job(b'{"symbol":"ETHUSDT","side":"sell","type":"market","quantity":"0.5"}'))
    assert j.result is None and j.spec is not None
    assert j.spec.account == "default" and j.spec.quantity == Decimal("0.5")
    assert j.client_order_id and j.client_order_id.startswith("ETHUSDT-S-")
    (again,) = run(job(b'{"symbol":"ETHUSDT","side":"sell","type":"market","quantity":"0.5"}'))
    assert again.client_order_id == j.client_order_id  # same entry id, same client id


def invalid(j: Job) -> str:
    assert j.result is not None
    assert j.result.status is ResultStatus.FAILED
    assert j.result.reason_code == ReasonCode.INVALID
    assert j.result.worker == "w1" and j.result.request_id == j.request_id
    return j.result.reason or ""


def test_each_kind_of_bad_entry_names_its_field() -> None:
    jobs = run(
        job(None),
        job(b"{"),
        job(b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1","x":1}'),
        job(b'{"symbol":"DOGE","side":"buy","type":"market","quantity":"1"}'),
        job(b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"0.000001"}'),
        job(b'{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1",'
            b'"price":"50000.001"}'),
        job(b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
            b'"account":"nope"}'),
        job(b'{"client_order_id":"c-1","symbol":"BTCUSDT","side":"buy","type":"market",'
            b'"quantity":"-1"}'),
        job(b"x" * 70_000),
    )
    reasons = [invalid(j) for j in jobs]
    assert "data" in reasons[0] and "data" in reasons[1]
    assert "x" in reasons[2]
    assert "symbol" in reasons[3] and "BTCUSDT" in reasons[3]  # lists the known symbols
    assert "quantity" in reasons[4]
    assert "price" in reasons[5]
    assert "account" in reasons[6]
    assert "quantity" in reasons[7]
    assert jobs[7].client_order_id == "c-1"  # salvaged so the producer can match it
    assert "bytes" in reasons[8]


def test_cancel_keeps_its_action_and_target() -> None:
    (j,) = run(job(b'{"action":"cancel","client_order_id":"abc"}'))
    assert j.result is None and j.action is Action.CANCEL and j.client_order_id == "abc"


def test_deadline_step_expires_late_requests_only() -> None:
    svc = services(now=2_000)
    late, on_time = job(b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
                        b'"deadline":1999}'), job(
        b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1","deadline":2000}')
    Decode(svc)([late, on_time])
    Deadline(svc)([late, on_time])
    assert on_time.result is None
    assert late.result is not None and late.result.reason_code == ReasonCode.EXPIRED
    assert late.result.status is ResultStatus.EXPIRED


def test_nesting_and_number_bounds_are_invalid_naming_the_field() -> None:
    head = b'{"client_order_id":"c-9","symbol":"BTCUSDT","side":"buy","type":"market",'
    deep, huge, fine = run(
        job(head + b'"quantity":"1","metadata":' + b'{"a":' * 1100 + b"1" + b"}" * 1101),
        job(head + b'"quantity":1e9999999999}'),
        job(head + b'"quantity":1e-3}'),
    )
    assert "`metadata` nests" in invalid(deep) and deep.result is not None
    assert "quantity" in invalid(huge) and "exponent" in invalid(huge)
    assert huge.client_order_id == "c-9"  # salvaged as before
    assert fine.result is None and fine.spec is not None
    assert fine.spec.quantity == Decimal("0.001")


def test_a_bug_on_one_entry_is_its_internal_error_and_the_others_are_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from executor.pipeline.steps import decode as decode_module

    real = decode_module.check_request

    def buggy(request: Any, now: int | None = None) -> None:
        if request.client_order_id == "boom":
            raise KeyError("a bug of ours")
        real(request, now)

    monkeypatch.setattr(decode_module, "check_request", buggy)
    svc = services()
    before, boom, after = jobs = [
        job(b'{"client_order_id":"' + cid + b'","symbol":"BTCUSDT","side":"buy",'
            b'"type":"market","quantity":"1"}', f"1700000000000-{i}")
        for i, cid in enumerate((b"ok-1", b"boom", b"ok-2"))]
    Decode(svc)(jobs)
    assert before.result is None and after.result is None
    assert before.spec is not None and after.spec is not None
    assert boom.result is not None and boom.result.reason_code == ReasonCode.INTERNAL_ERROR
    assert boom.result.reason == ("internal error in step decode (KeyError); the request was "
                                  "not executed and nothing was changed")
    assert boom.result.client_order_id == "boom"
    assert svc.metrics.registry.get_sample_value(
        "orderstream_internal_errors_total", {"step": "decode"}) == 1
