"""The fold's instructions benchmark counts, under valgrind's callgrind, what the positions
fold of an order costs a projector process, of this checkout and of another in turn (a smoke
test: the counts themselves are for people comparing checkouts). Skipped where valgrind is
not installed (.ci/run installs it)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import fold_instructions

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed (apt-get install valgrind)")


async def test_the_fold_of_each_checkout_is_counted_on_the_same_events(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    there = tmp_path / "other"
    for part in ("bench", "executor", "producer", "devtools"):
        shutil.copytree(ROOT / part, there / part, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(ROOT)
    await fold_instructions.main(orders=20, rounds=1, beside=[str(there)])
    out = capsys.readouterr().out
    rows = {name: float(n.replace(",", "")) for name, n in re.findall(
        r"^round 1 (\S+)\s+([\d,.]+) k Ir/order$", out, re.M)}
    assert set(rows) == {ROOT.name, "other"}
    # The same code on the same events: counts alike. Counted from its start, a process
    # would carry its imports (about a billion instructions): over 20 orders, far above.
    assert all(0 < n < 10_000 for n in rows.values())
    assert rows["other"] == pytest.approx(rows[ROOT.name], rel=0.5)
    change = re.search(r"^lowest other\s+[\d,.]+ k Ir/order  here / it: ([-+][\d.]+)%$",
                       out, re.M)
    assert change is not None
    assert float(change[1]) == pytest.approx(100 * (rows[ROOT.name] / rows["other"] - 1),
                                             abs=0.1)
