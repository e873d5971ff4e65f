"""The archive benchmark runs end to end on a private redis-server and prints its figures
beside the worker's baseline (a smoke test: the figures are for people, on a quiet machine)."""

from __future__ import annotations

import re

import pytest

from bench import archive


async def test_the_archive_benchmark_stores_every_entry_and_prints_its_rates(
        capsys: pytest.CaptureFixture[str]) -> None:
    await archive.main(orders=30, batch=7, repeat=2, use_postgres=False)
    out = capsys.readouterr().out
    # One entry per market order: the paper exchange takes it, and its outcome is written,
    # in the write that records it ([created, pending_submit, submitted, filled]).
    assert re.search(r"archive: 30 events entries of 30 market orders; one worker wrote "
                     r"[\d,]+ entries/s \(baseline\)", out)
    rows = re.findall(r"^sqlite (\d)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(float(ratio) > 0 and float(cpu) > 0 for *_, ratio, cpu in rows)
