"""The durability benchmark runs end to end on a private primary and replica and prints
its figures (a smoke test: the figures themselves are for people, on a quiet machine)."""

from __future__ import annotations

import re

import pytest

from bench import durability


async def test_the_durability_benchmark_measures_both_ways(
        capsys: pytest.CaptureFixture[str]) -> None:
    await durability.run(orders=200, rate=100, seconds=1.0, repeat=1)
    out = capsys.readouterr().out
    rows = re.findall(r"^(none|wait)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["none", "wait"]
    assert all(float(r[1].replace(",", "")) > 0 for r in rows)
    assert "wait - none, p50 ms:" in out and "wait / none throughput:" in out
