"""The latency benchmark runs end to end on a real redis-server with a real worker process
and the bare loop: sane figures for both (a smoke test: the figures themselves are for
people, on a quiet machine; nothing here is timed)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bench import latency


async def test_the_latency_benchmark_prints_sane_figures_for_both(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ((bare, worker),) = await latency.run([50], 1.0, url=redis_url)
    for figures in (bare[50], worker[50]):
        assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]
        assert figures["commands"] > 0 and figures["redis_us"] > 0
    # The bare loop answers with one XADD (not counted) and an XACK per batch; the worker
    # does more than that for an order.
    assert bare[50]["commands"] < worker[50]["commands"]
    # Its script calls (round trips): none for the bare loop, the batch's first read and
    # its write for each of the worker's batches.
    assert bare[50]["scripts"] == 0 < worker[50]["scripts"]
    # Reads took about an order each at 50/s (a read that timed out empty takes none),
    # and none more than the whole phase's.
    assert all(0.5 <= figs[50]["per_read"] <= 50 for figs in (bare, worker))
    out = capsys.readouterr().out
    assert "worker / bare loop p50 at 50/s: " in out and "scripts/order" in out
    assert "orders/read" in out
    assert out.count("      50 ") == 2  # a row each


async def test_with_the_projector_the_split_worker_folds_nothing_and_the_projector_does(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--projector: a third row, the worker with no positions fold beside an ``orderstream
    projector`` process, whose CPU is counted apart (+ projector)."""
    ((bare, worker, split),) = await latency.run([50], 1.0, url=redis_url, projector=True)
    assert split[50]["beside_us"] > 0 and worker[50]["beside_us"] == 0
    assert 0 < split[50]["p50"] <= split[50]["max"]
    assert bare[50]["commands"] < split[50]["commands"]
    out = capsys.readouterr().out
    assert "split / bare loop p50 at 50/s: " in out and "+ projector" in out
    assert out.count("      50 ") == 3


async def test_with_other_accounts_positions_the_worker_indexes_them_and_answers(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--others: that many positions of other accounts in the hash, written as a projector
    from before the accounts' sets would; the worker's fold indexes them all."""
    ((_, worker),) = await latency.run([50], 1.0, url=redis_url, others=500)
    assert 0 < worker[50]["p50"] <= worker[50]["max"]
    r = aioredis.Redis.from_url(redis_url)
    try:
        held = await r.hlen(latency.KEYS.positions)
        assert held > 500
        assert await r.scard(latency.KEYS.positions_indexed) == held
    finally:
        await r.aclose()
    assert "500 positions of other accounts" in capsys.readouterr().out


async def test_with_resting_orders_the_worker_places_them_before_the_measured_orders(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--resting: that many resting limit orders placed before the warm-up (for the
    tracker's reconcile of them to fall in a long enough phase); the measured orders are
    answered beside them."""
    ((_, worker),) = await latency.run([50], 1.0, url=redis_url, resting=300)
    assert 0 < worker[50]["p50"] <= worker[50]["max"]
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.scard(latency.KEYS.open) == 300  # the worker's run: each still open
    finally:
        await r.aclose()
    assert "; 300 resting orders" in capsys.readouterr().out
