"""The partitions benchmark runs end to end on a private Redis Cluster of its own with real
worker processes: a row for one partition and a row for two partitions on two different
masters, figures that are sane, every request answered once, and no worker left running
when it fails (a smoke test: the figures themselves are for people, on a quiet machine;
nothing here is timed)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from bench import partitions
from devtools.chaos import WorkerProcess
from devtools.redis_cluster import LocalCluster, find_redis_cli
from devtools.redis_server import find_redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _redis_cli() -> None:
    if find_redis_cli(find_redis_server()) is None:
        pytest.skip("redis-cli not found (it makes the cluster: apt-get install redis-tools)")


async def test_two_partitions_on_two_masters_are_measured_beside_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    rounds = await partitions.run(orders=200, rate=100, seconds=1, partitions=(1, 2),
                                  workers=2, repeat=1)
    out = capsys.readouterr().out

    [(one, two)] = rounds
    assert (one.partitions, two.partitions) == (1, 2)
    # Each partition's requests were XADDed on the master recorded for it, by a client of
    # that node alone (a slot elsewhere would have answered MOVED): two different masters.
    assert len(one.masters) == 1 and len(set(two.masters)) == 2
    for f in (one, two):
        assert f.workers == 2
        # 200 in the burst, 100 paced: each answered once, nothing left unacknowledged.
        assert (f.requests, f.results, f.answered_once, f.unacked) == (300, 300, 300, 0)
        assert f.exactly_once
        assert f.orders_per_s > 0 and f.worker_us > 0
        assert len(f.node_us) == partitions.MASTERS
        assert all(f.node_us[m] > 0 for m in f.masters)
        assert f.redis_us == max(f.node_us) and f.redis_share > 0 and f.redis_ceiling > 0
        assert f.latency_samples > 0 and 0 <= f.p50_ms <= f.p99_ms

    assert f"machine: {os.cpu_count()} CPU cores (os.cpu_count())" in out
    row = (r"\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)" + r"\s+([\d.]+)" * partitions.MASTERS
           + r"\s+(\d+)%\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)$")
    rows = re.findall(r"^(\d) on (m[\d,m]+)" + row, out, re.M)
    assert [r[:2] for r in rows] == [
        ("1", f"m{one.masters[0]}"), ("2", f"m{two.masters[0]},m{two.masters[1]}")]
    assert rows[0][3] == "1.00"  # the 1-partition row is the ratios' base
    assert rows[1][3] == f"{two.orders_per_s / one.orders_per_s:.2f}"
    assert "every request answered exactly once, nothing left pending" in out


async def test_the_workers_are_stopped_when_the_benchmark_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[WorkerProcess] = []

    class Recorded(WorkerProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the burst broke")

    monkeypatch.setattr(partitions, "WorkerProcess", Recorded)
    monkeypatch.setattr(partitions, "measure_burst", broken)
    with LocalCluster(partitions.MASTERS, data_dir=tmp_path / "cluster") as cluster, \
            pytest.raises(RuntimeError, match="the burst broke"):
        await partitions.measure_layout(cluster, 2, workers=2, orders=50, rate=10,
                                        seconds=1, batch=20, workdir=tmp_path)
    assert len(started) == 2
    assert not [w.consumer for w in started if w.alive()]
