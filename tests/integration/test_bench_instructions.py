"""The instructions benchmark counts, under valgrind's callgrind, what an order costs the bare
loop and the worker and their redis-servers, and prints the ratio (a smoke test: the counts
themselves are for people comparing checkouts). Skipped where valgrind is not installed
(.ci/run installs it)."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from bench import instructions

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed (apt-get install valgrind)")


async def test_the_instructions_benchmark_counts_both_consumers_and_their_redis(
        capsys: pytest.CaptureFixture[str]) -> None:
    await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                              positions=False, repeat=1, beside=None,
                                              json=False))
    out = capsys.readouterr().out
    rows = {m[0]: (float(m[1].replace(",", "")), float(m[2].replace(",", "")))
            for m in re.findall(r"^(bare|worker)\s+([\d,.]+)\s+([\d,.]+)$", out, re.M)}
    assert set(rows) == {"bare", "worker"}
    # Each process counted only its burst: something, and the worker more than the loop
    # that does nothing but read, answer and ack.
    assert all(consumer > 0 and redis > 0 for consumer, redis in rows.values())
    assert rows["worker"][0] > rows["bare"][0] and rows["worker"][1] > rows["bare"][1]
    # Counted from its start, a Python process would carry its start-up and imports (about
    # a billion instructions): over 30 orders, far above this.
    assert rows["worker"][0] < 10_000
    ratio = re.search(r"^worker / bare: consumer ([\d.]+)x, redis ([\d.]+)x$", out, re.M)
    assert ratio is not None
    assert float(ratio[1]) == pytest.approx(rows["worker"][0] / rows["bare"][0], abs=0.01)


def counted_rows(out: str, prefix: str) -> dict[str, tuple[float, float]]:
    return {m[0]: (float(m[1].replace(",", "")), float(m[2].replace(",", "")))
            for m in re.findall(rf"^{prefix}(bare|worker)\s+([\d,.]+)\s+([\d,.]+)$", out,
                                re.M)}


async def test_beside_another_checkout_both_are_counted_at_once_and_the_change_printed(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The other checkout: this one's code, copied (as a worktree of another commit would be).
    there = tmp_path / "other"
    for part in ("bench", "executor", "producer", "devtools"):
        shutil.copytree(ROOT / part, there / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                              positions=False, repeat=1,
                                              beside=str(there), json=False))
    out = capsys.readouterr().out
    here, other = counted_rows(out, "here "), counted_rows(out, "other ")
    assert set(here) == set(other) == {"bare", "worker"}
    assert all(c > 0 and r > 0 for c, r in (*here.values(), *other.values()))
    change = re.search(r"^here / other \(worker\): consumer ([+-][\d.]+)%, "
                       r"redis ([+-][\d.]+)%$", out, re.M)
    assert change is not None
    assert float(change[1]) == pytest.approx(
        (here["worker"][0] / other["worker"][0] - 1) * 100, abs=0.06)


async def test_beside_a_checkout_without_this_benchmark_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"has no bench/instructions\.py"):
        await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                                  positions=False, repeat=1,
                                                  beside=str(tmp_path), json=False))
