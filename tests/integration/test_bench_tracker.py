"""The tracker benchmark runs end to end on a private redis-server and prints the cost of a
pass with the attention index against a full scan (a smoke test: the figures themselves
are for people, on a quiet machine)."""

from __future__ import annotations

import re

import pytest

from bench import tracker


async def test_the_tracker_benchmark_prints_both_passes_and_their_ratio(
        capsys: pytest.CaptureFixture[str]) -> None:
    figures = await tracker.main(orders=60, passes=2)
    out = capsys.readouterr().out
    assert "tracking pass, 60 resting orders, live push feed, nothing due" in out
    rows = dict(re.findall(r"^(full scan|index)\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", out, re.M))
    assert set(rows) == {"full scan", "index"}
    assert re.search(r"^index / full scan: wall [\d.]+%, CPU [\d.]+% \(process \+ redis\)$",
                     out, re.M)
    looked = dict(re.findall(r"^(one by one|together)\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", out,
                             re.M))
    assert set(looked) == {"one by one", "together"}
    assert re.search(r"^together / one by one: wall [\d.]+%, CPU [\d.]+% \(process \+ "
                     r"redis\)$", out, re.M)
    assert "one reconcile period (30 passes)" in out
    assert all(wall > 0 for wall, _, _ in figures.values())
