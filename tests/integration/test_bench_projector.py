"""The positions-fold benchmark runs end to end on a private redis-server and prints its
figures (a smoke test: figures themselves are for people, on a quiet machine)."""

from __future__ import annotations

import re

import pytest

from bench import projector


async def test_the_projector_benchmark_folds_every_event_and_prints_its_cost(
        capsys: pytest.CaptureFixture[str]) -> None:
    await projector.main(orders=40, repeat=2)
    out = capsys.readouterr().out
    assert "positions fold: 40 events entries of 40 market orders" in out
    rows = re.findall(r"^fold (\d)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(float(cpu) > 0 for _, cpu, _, _ in rows)
    assert "lowest CPU per order" in out
