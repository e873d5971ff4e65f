"""The client benchmark runs end to end on a real redis-server: sane figures for each
client (a smoke test: the figures are for people, on a quiet machine)."""

from __future__ import annotations

import pytest

from bench import client


async def test_the_client_benchmark_prints_each_clients_figures(
        redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    (figures,) = await client.run(200, url=redis_url)
    assert set(figures) == {"redis-py", "packed", "worker"}
    for cpu, wall in figures.values():
        assert cpu > 0 and wall > 0
    out = capsys.readouterr().out
    assert "redis-py 1" in out and "packed 1" in out and "worker 1" in out
