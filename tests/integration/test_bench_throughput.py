"""The throughput benchmark runs end to end on a real redis-server with real consumer
processes: with --projector, a third row for the worker beside an ``orderstream projector``
process, whose CPU "+ positions" counts (a smoke test: nothing here is timed)."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench import throughput


async def printed(redis_url: str, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch, **args: Any) -> str:
    """What the benchmark printed, run on ``redis_url`` with ``args`` (batch 100, 50/s for
    0.5 s, one round)."""
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)
    await throughput.run(argparse.Namespace(batch=100, rate=50, seconds=0.5, repeat=1,
                                            **args))
    return capsys.readouterr().out


async def test_the_throughput_benchmark_prints_the_split_row_with_the_projector(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = await printed(redis_url, capsys, monkeypatch, orders=2000, projector=True,
                        accounts=1)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if re.match(r"(bare|worker|split) +[0-9,]+ ", line)}
    assert set(rows) == {"bare", "worker", "split"}
    cpu = {name: (float(rows[name][3]), float(rows[name][5])) for name in rows}
    # + positions: the worker's own CPU until the fold caught up, which the split worker's
    # is not; its projector's is added (2,000 folds are many clock ticks of it).
    assert 0 < cpu["worker"][0] <= cpu["worker"][1]
    assert 0 < cpu["split"][0] < cpu["split"][1]
    assert "split / bare loop throughput: " in out


async def test_with_accounts_the_orders_of_a_batch_are_of_several_accounts(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = await printed(redis_url, capsys, monkeypatch, orders=600, projector=False,
                        accounts=3)
    assert "600 market orders over 3 accounts" in out
    # What the worker's run left: every order answered, by the account it was sent for
    # (the worker knew the three from the configuration the bench wrote it).
    r = aioredis.Redis.from_url(redis_url)
    try:
        results = [json.loads(fields[b"data"]) for _, fields in await r.xrange("orders:completed")]
        assert await r.xlen("orders:failed") == 0
    finally:
        await r.aclose()
    assert len(results) == 600 + 25  # the burst, then 50/s for 0.5 s
    by_account = Counter(result["account"] for result in results)
    assert set(by_account) == {"a0", "a1", "a2"} and min(by_account.values()) >= 200
    assert {result["status"] for result in results} == {"filled"}
