"""The throughput benchmark runs end to end on a real redis-server with real consumer
processes: with --projector, a third row for the worker beside an ``orderstream projector``
process, whose CPU "+ positions" counts (a smoke test: nothing here is timed)."""

from __future__ import annotations

import argparse
import re

import pytest

from bench import throughput


async def test_the_throughput_benchmark_prints_the_split_row_with_the_projector(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)
    await throughput.run(argparse.Namespace(orders=2000, batch=100, rate=50, seconds=0.5,
                                            repeat=1, projector=True))
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if re.match(r"(bare|worker|split) +[0-9,]+ ", line)}
    assert set(rows) == {"bare", "worker", "split"}
    cpu = {name: (float(rows[name][3]), float(rows[name][5])) for name in rows}
    # + positions: the worker's own CPU until the fold caught up, which the split worker's
    # is not; its projector's is added (2,000 folds are many clock ticks of it).
    assert 0 < cpu["worker"][0] <= cpu["worker"][1]
    assert 0 < cpu["split"][0] < cpu["split"][1]
    assert "split / bare loop throughput: " in out
