"""A real Prometheus scrapes a running worker and answers a query of its counters; it also
loads the deploy/ alert rules. Skipped, saying why, where the prometheus binary is absent."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from devtools.redis_server import free_port
from executor.config import Settings
from producer.client import OrderClient

from .conftest import running

PROMETHEUS = shutil.which("prometheus")
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install "
    "prometheus; .ci/run installs it where it runs as root)")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Starts Prometheus scraping 127.0.0.1:<port> every second; gives its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        assert PROMETHEUS is not None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "orderstream",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [PROMETHEUS, f"--config.file={path}",
                 f"--storage.tsdb.path={tmp_path / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[Any]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_the_worker_and_queries_its_counters(
    make_settings: Callable[..., Settings], client: OrderClient,
    prometheus: Callable[[int], str], tmp_path: Path,
) -> None:
    async with running(make_settings()) as worker:
        subs = [await client.place("BTCUSDT", "buy", "market", "0.001") for _ in range(7)]
        subs.append(await client.place("NOSUCH", "buy", "market", "1"))
        await client.wait_results([s.request_id for s in subs], 15)
        assert worker.metrics_port is not None
        base = prometheus(worker.metrics_port)
        filled: list[Any] = []
        async with aiohttp.ClientSession() as http:
            for _ in range(600):  # Prometheus starts, then scrapes every second
                try:
                    filled = await query(http, base, 'sum(orderstream_requests_total'
                                         '{action="place",outcome="filled"})')
                except (aiohttp.ClientError, AssertionError):  # not up yet
                    filled = []
                if filled and float(filled[0]["value"][1]) == 7:
                    break
                await asyncio.sleep(0.1)
            log = (tmp_path / "prometheus.log").read_text(errors="replace")
            assert filled and float(filled[0]["value"][1]) == 7, log
            invalid = await query(http, base,
                                  'orderstream_requests_total{reason_code="invalid"}')
            assert [float(r["value"][1]) for r in invalid] == [1]
            up = await query(http, base, 'up{job="orderstream"}')
            assert [r["value"][1] for r in up] == ["1"]
            async with http.get(f"{base}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    shipped = yaml.safe_load(ALERTS.read_text())
    assert len(rules) == sum(len(g["rules"]) for g in shipped["groups"]) > 10
    assert all(r["health"] in ("ok", "unknown") for r in rules), rules
