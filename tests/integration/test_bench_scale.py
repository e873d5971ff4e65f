"""The fleet benchmark runs end to end on a real redis-server with real worker processes: a
row per fleet size whose figures are sane, every request answered once, and no worker
left running when it fails (a smoke test: the figures themselves are for people, on a
quiet machine; nothing here is timed)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench import scale
from devtools.chaos import WorkerProcess
from producer.keys import Keys


async def test_the_scale_benchmark_prints_a_sane_row_per_fleet_size(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    rounds = await scale.run(orders=200, rate=100, seconds=1, workers=(1, 2), repeat=2,
                             url=redis_url)
    out = capsys.readouterr().out

    assert [[f.workers for f in fleets] for fleets in rounds] == [[1, 2], [1, 2]]
    for f in rounds[0] + rounds[1]:
        # 200 in the burst, 100 paced: each answered once, nothing left unacknowledged.
        assert (f.requests, f.results, f.answered_once, f.unacked) == (300, 300, 300, 0)
        assert f.exactly_once
        assert f.orders_per_s > 0 and f.worker_us > 0 and f.redis_us > 0
        assert f.redis_share > 0 and f.redis_ceiling > 0
        assert f.latency_samples > 0 and 0 <= f.p50_ms <= f.p99_ms

    # The last fleet's Redis is left as it was: count its answers apart from the bench.
    r = aioredis.Redis.from_url(redis_url)
    try:
        keys = Keys()
        answers: Counter[bytes] = Counter()
        for stream in (keys.completed, keys.failed):
            entries: Any = await r.xrange(stream)
            answers.update(fields[b"request_id"] for _, fields in entries)
    finally:
        await r.aclose()
    assert len(answers) == 300 and set(answers.values()) == {1}

    assert f"machine: {os.cpu_count()} CPU cores (os.cpu_count())" in out
    row = (r"\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)%\s+([\d,]+)\s+([\d.]+)"
           r"\s+([\d.]+)$")
    rows = re.findall(r"^(\d) \((\d)\)" + row, out, re.M)
    assert [r[:2] for r in rows] == [("1", "1"), ("2", "1"), ("1", "2"), ("2", "2")]
    for k, fleets in enumerate(rounds):
        # The first fleet size is the ratios' base, within the same round.
        assert rows[2 * k][3] == "1.00"
        assert rows[2 * k + 1][3] == f"{fleets[1].orders_per_s / fleets[0].orders_per_s:.2f}"
    assert "medians of 2 rounds:" in out
    medians = re.findall(r"^(\d)" + row, out, re.M)
    assert [m[0] for m in medians] == ["1", "2"]
    assert "every request answered exactly once, nothing left pending" in out


async def test_the_workers_are_stopped_when_the_benchmark_fails(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[WorkerProcess] = []

    class Recorded(WorkerProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    async def broken(*_args: Any, **_kwargs: Any) -> list[int]:
        raise RuntimeError("the paced phase broke")

    monkeypatch.setattr(scale, "WorkerProcess", Recorded)
    monkeypatch.setattr(scale, "paced_latencies", broken)
    with pytest.raises(RuntimeError, match="the paced phase broke"):
        await scale.measure_fleet(redis_url, 2, orders=50, rate=10, seconds=1, batch=20,
                                  logdir=tmp_path)
    assert len(started) == 2
    assert not [w.consumer for w in started if w.alive()]


def test_a_request_answered_twice_or_not_at_all_is_reported_not_hidden(
        capsys: pytest.CaptureFixture[str]) -> None:
    def fleet(workers: int, results: int, answered_once: int, unacked: int = 0) -> scale.Fleet:
        return scale.Fleet(workers=workers, orders_per_s=1000.0, worker_us=100.0,
                           redis_us=50.0, redis_share=0.05, p50_ms=1.0, p99_ms=2.0,
                           latency_samples=10, requests=300, results=results,
                           answered_once=answered_once, unacked=unacked)

    fine, twice, lost = fleet(1, 300, 300), fleet(2, 301, 299), fleet(4, 299, 299, 1)
    assert fine.exactly_once and not twice.exactly_once and not lost.exactly_once
    scale.print_table([[fine, twice, lost]], orders=200, rate=100, seconds=1, batch=200)
    out = capsys.readouterr().out
    assert ("NOT EXACTLY ONCE with 2 workers: 300 requests, 301 results, 299 answered once, "
            "0 pending") in out
    assert "NOT EXACTLY ONCE with 4 workers" in out and "with 1 workers" not in out
    assert "every request answered exactly once" not in out
