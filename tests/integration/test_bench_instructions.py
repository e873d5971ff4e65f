"""The instructions benchmark counts, under valgrind's callgrind, what an order costs the bare
loop and the worker and their redis-servers, and prints the ratio (a smoke test: the counts
themselves are for people comparing checkouts). Skipped where valgrind is not installed
(.ci/run installs it)."""

from __future__ import annotations

import argparse
import re
import shutil

import pytest

from bench import instructions

pytestmark = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed (apt-get install valgrind)")


async def test_the_instructions_benchmark_counts_both_consumers_and_their_redis(
        capsys: pytest.CaptureFixture[str]) -> None:
    await instructions.run(argparse.Namespace(orders=30, batch=10, warmup=10,
                                              positions=False, repeat=1))
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
