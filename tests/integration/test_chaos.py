"""The chaos test of the delivery guarantees: 3 workers, 5,000 orders, workers SIGKILLed at
random and restarted (some of them armed to die exactly between a broker call and the
write of its outcome), the paper exchange failing and timing out some submits. Every
request gets exactly one result, the exchange sees each client id at most once, and no
entry is left pending; replaying the event log rebuilds exactly the stored order records
and positions. Bounded to stay well under 3 minutes in CI."""

from __future__ import annotations

from pathlib import Path

from devtools.chaos import Chaos, ChaosConfig


async def test_kills_at_random_lose_nothing_and_send_nothing_twice(
    redis_url: str, tmp_path: Path
) -> None:
    report = await Chaos(redis_url, ChaosConfig(), tmp_path, say=print).run()
    summary = "\n".join(report.lines())
    print(summary)
    assert report.requests == 5_000
    assert report.kills >= 4, summary  # the run really was chaotic
    assert report.lost == 0, summary
    assert report.duplicated == 0, summary
    assert report.sent_twice == 0, summary
    assert report.inconsistent == 0, summary
    assert report.pending == 0, summary
    assert report.replay_differences == 0, summary  # records and positions = the event log
    assert report.results == report.requests, summary
    # The mix exercised every path: fills, resting orders, producer retries.
    assert report.outcomes.get("filled", 0) > 1_000, summary
    assert report.outcomes.get("accepted", 0) > 100, summary
    assert report.outcomes.get("failed:duplicate", 0) > 50, summary
