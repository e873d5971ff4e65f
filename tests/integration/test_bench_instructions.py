"""The instructions benchmark counts, under valgrind's callgrind, what an order costs the bare
loop and the worker and their redis-servers, and prints the ratio (a smoke test: the counts
themselves are for people comparing checkouts). Skipped where valgrind is not installed
(.ci/run installs it)."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
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
                                              json=False, accounts=1))
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


def other_checkout(tmp_path: Path) -> Path:
    """This checkout's code, copied (as a worktree of another commit would be)."""
    there = tmp_path / "other"
    for part in ("bench", "executor", "producer", "devtools"):
        shutil.copytree(ROOT / part, there / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return there


def working_in(there: Path) -> list[int]:
    """The processes whose working directory is ``there`` or below it."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve().is_relative_to(there):
                pids.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


async def test_beside_another_checkout_both_are_counted_at_once_and_the_change_printed(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    there = other_checkout(tmp_path)
    await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                              positions=False, repeat=1,
                                              beside=str(there), json=False, accounts=2))
    out = capsys.readouterr().out
    assert "30 market orders over 2 accounts" in out
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
                                                  beside=str(tmp_path), json=False,
                                                  accounts=1))


async def test_a_measurement_that_fails_stops_the_one_beside_and_all_it_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    there = other_checkout(tmp_path).resolve()
    started: list[subprocess.Popen[str]] = []
    real = instructions.beside

    def beside(args: argparse.Namespace) -> subprocess.Popen[str]:
        started.append(real(args))
        return started[-1]

    async def failing(args: argparse.Namespace) -> list[tuple[str, float, float]]:
        # Long enough for the one beside to have its redis-server and consumer running.
        for _ in range(600):
            await asyncio.sleep(0.1)
            if len(working_in(there)) >= 3:
                break
        raise RuntimeError("this checkout's measurement failed")

    monkeypatch.setattr(instructions, "beside", beside)
    monkeypatch.setattr(instructions, "counts", failing)
    with pytest.raises(RuntimeError, match="measurement failed"):
        await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                                  positions=False, repeat=1,
                                                  beside=str(there), json=False,
                                                  accounts=1))
    assert started and started[0].returncode is not None
    for _ in range(300):  # its redis-server, stopped by it, may take a moment to go
        if not working_in(there):
            break
        await asyncio.sleep(0.1)
    assert working_in(there) == []
