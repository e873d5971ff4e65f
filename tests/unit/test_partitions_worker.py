"""Partitions on the worker's side: the configuration that can and cannot work, a worker
serving its partition's accounts only, a request sent to the wrong partition refused and
naming the right one, and one process's partitions served as one metrics exposition."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakeredis import FakeAsyncRedis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devtools.chaos import partitions_toml
from executor.config import ConfigError, Settings, load_settings
from executor.host import PartitionHost
from executor.infra.metrics import partitions_registry
from executor.pipeline.job import Job
from executor.pipeline.steps.decode import Decode
from executor.worker import Worker, partition_key_prefix
from producer.contract import ReasonCode, ResultStatus

TWO = partitions_toml(["alpha", "beta"], prefix="desk")


def settings_from(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, {"ORDERSTREAM_CONSUMER": "w1", **(env or {})})


def test_two_partitions_each_with_its_prefix_and_accounts(tmp_path: Path) -> None:
    s = settings_from(tmp_path, TWO)
    assert s.partitions.served() == [0, 1]
    assert partition_key_prefix(s, 0) == "{desk-0}" and partition_key_prefix(s, 1) == "{desk-1}"
    with pytest.raises(ValueError, match="name the partition"):
        partition_key_prefix(s, None)
    with pytest.raises(ValueError, match="partition 2 does not exist"):
        partition_key_prefix(s, 2)
    redis = FakeAsyncRedis()
    worker = Worker(s, redis=redis, partition=1)
    assert worker.keys.pending == "{desk-1}:pending"
    assert set(worker.brokers) == {"beta"}  # alpha is served by partition 0's worker only
    # A cluster needs hash-tagged prefixes; each partition's is, by construction.
    clustered = settings_from(tmp_path, TWO, {"ORDERSTREAM_REDIS_CLUSTER": "true"})
    assert clustered.redis.cluster


def test_the_served_partitions_come_from_the_environment_too(tmp_path: Path) -> None:
    s = settings_from(tmp_path, TWO, {"ORDERSTREAM_PARTITIONS_SERVE": "1"})
    assert s.partitions.served() == [1]
    host = PartitionHost(s, redis=FakeAsyncRedis())
    assert list(host.workers) == [1]
    assert host.workers[1].keys.prefix == "{desk-1}"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("beta = 1", "beta = 2"), "partitions.accounts.beta is 2"),
        (lambda t: t.replace("beta = 1\n", ""), "accounts.beta is in no partition"),
        (lambda t: t + "gamma = 0\n", "partitions.accounts.gamma: no such account"),
        (lambda t: t.replace('prefix = "desk"', 'prefix = "{desk}"'), "no braces"),
        (lambda t: t.replace("count = 2", "count = -1"), "must not be negative"),
        (lambda t: t.replace("count = 2", "count = 2\nserve = []"), "serves nothing|empty"),
        (lambda t: t.replace("count = 2", "count = 2\nserve = [0, 0]"), "twice"),
        (lambda t: t.replace("count = 2", "count = 2\nserve = [3]"), "partition 3"),
        # The accounts of one IP group share one weight window: one partition holds it.
        (lambda t: t + '[limits.alpha]\nip_group = "office"\n'
                       '[limits.beta]\nip_group = "office"\n', "spans partitions 0, 1"),
    ],
)
def test_a_partition_table_that_cannot_work_names_the_field(
        tmp_path: Path, edit: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        settings_from(tmp_path, edit(TWO))  # type: ignore[operator]


def test_unpartitioned_tables_are_refused_without_a_count(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"need partitions\.count"):
        settings_from(tmp_path, "[partitions.accounts]\ndefault = 0\n")


async def test_a_request_for_another_partitions_account_fails_naming_where_it_belongs(
        tmp_path: Path) -> None:
    worker = Worker(settings_from(tmp_path, TWO), redis=FakeAsyncRedis(), partition=0)
    decode = Decode(worker.svc)
    jobs = [Job(f"1700000000000-{i}", {b"data": data}, received_at=1_700_000_000_001)
            for i, data in enumerate([
                b'{"account":"beta","symbol":"BTCUSDT","side":"buy","type":"market",'
                b'"quantity":"0.01"}',
                b'{"action":"cancel","account":"beta","client_order_id":"c-1"}',
                b'{"account":"nobody","symbol":"BTCUSDT","side":"buy","type":"market",'
                b'"quantity":"0.01"}',
                b'{"account":"alpha","symbol":"BTCUSDT","side":"buy","type":"market",'
                b'"quantity":"0.01"}',
            ])]
    decode(jobs)
    wrong, wrong_cancel, unknown, good = jobs
    for job in (wrong, wrong_cancel):
        assert job.result is not None and job.result.status is ResultStatus.FAILED
        assert job.result.reason_code == ReasonCode.WRONG_PARTITION
        assert "`beta` is in partition 1" in (job.result.reason or "")
        assert "{desk-1}:pending" in (job.result.reason or "")
    assert unknown.result is not None and unknown.result.reason_code == ReasonCode.INVALID
    assert "account `nobody` is not configured" in (unknown.result.reason or "")
    assert good.result is None and good.spec is not None and good.spec.account == "alpha"


def test_the_partitions_of_one_process_are_one_exposition_labelled_by_partition() -> None:
    parts: dict[str, CollectorRegistry] = {}
    for name, lag, answered in (("0", 3, 5), ("1", 7, 2)):
        registry = CollectorRegistry()
        Gauge("orderstream_consumer_group_lag", "lag", registry=registry).set(lag)
        Counter("orderstream_requests", "answered", ["account"],
                registry=registry).labels(f"acct{name}").inc(answered)
        parts[name] = registry
    text = generate_latest(partitions_registry(parts)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # Each name once (two families of one name would be an invalid exposition).
    assert sum(line.startswith("# TYPE orderstream_consumer_group_lag ")
               for line in text.splitlines()) == 1
    lag = {s.labels["partition"]: s.value for s in families["orderstream_consumer_group_lag"]
           .samples}
    assert lag == {"0": 3, "1": 7}
    answered = {(s.labels["partition"], s.labels["account"]): s.value
                for s in families["orderstream_requests"].samples
                if s.name == "orderstream_requests_total"}
    assert answered == {("0", "acct0"): 5, ("1", "acct1"): 2}


async def test_a_partition_whose_worker_fails_stops_the_others_and_the_error_surfaces(
        tmp_path: Path) -> None:
    """One process must not go on looking alive with a partition no longer served: the
    error ends every partition's loop, and the process's supervisor restarts it."""
    host = PartitionHost(settings_from(tmp_path, TWO), redis=FakeAsyncRedis())
    stopped: list[int] = []

    async def broken() -> None:
        raise RuntimeError("partition 0 broke")

    async def healthy(n: int = 1) -> None:
        worker = host.workers[n]
        while worker.ready or not stopped:
            await asyncio.sleep(0.01)
            if worker._stopping.is_set():
                stopped.append(n)
                return

    host.workers[0].serve = broken  # type: ignore[method-assign]
    host.workers[1].serve = healthy  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="partition 0 broke"):
        await asyncio.wait_for(host.serve(), 5)
    assert stopped == [1]
