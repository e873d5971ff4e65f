"""The soak benchmark runs end to end on a private redis-server: a worker with short
retentions, memory sampled over time, and a summary after the warm-up (a smoke test: the
figures themselves are for people, over minutes)."""

from __future__ import annotations

import re

import pytest

from bench import soak


async def test_the_soak_benchmark_samples_memory_and_sums_up_after_the_warm_up(
        capsys: pytest.CaptureFixture[str]) -> None:
    samples = await soak.run(duration=8, retention_ms=1_000, every=1, backlog=200)
    out = capsys.readouterr().out
    assert "soak: one worker, paper broker, retentions 1000 ms, 8 s, backlog at most 200" in out
    assert len(samples) >= 5
    assert samples[-1].answered > 0 and all(s.used_memory > 0 for s in samples)
    # The streams are trimmed as it runs: never every answer or every event kept.
    assert samples[-1].completed < samples[-1].answered
    assert re.search(r"^\d+ requests answered in \d+ s \([\d,]+/s\)$", out, re.M)
    assert re.search(r"^after the warm-up \(3 s\): used_memory [\d.]+ to [\d.]+ MB \(median "
                     r"[\d.]+\); \d+ requests answered since, growth [-+][\d.]+ bytes per "
                     r"request$", out, re.M)
