"""Two partitions of one deployment on a real Redis Cluster (three masters, tests/conftest.py),
each on its own master: one process serves both, every account's orders stay in its own
partition's slot, a request sent to the wrong partition is refused there and changes
nothing, the metrics of both are served labelled by partition; and the chaos run (workers
killed at random, the exchange failing) loses and doubles nothing in either partition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio.cluster import RedisCluster

from devtools.chaos import Chaos, ChaosConfig, partitions_toml
from devtools.redis_cluster import LocalCluster
from executor.config import Settings, load_settings
from executor.host import PartitionHost
from producer.client import OrderClient
from producer.contract import ReasonCode, ResultStatus
from producer.keys import Keys
from producer.partitions import partition_prefix

from .conftest import serving

P0, P1 = partition_prefix("orders", 0), partition_prefix("orders", 1)

def on_two_masters(cluster: LocalCluster) -> None:
    """Put the two partitions on two masters (by Redis's hash they share the third)."""
    if cluster.master_of(P0) == cluster.master_of(P1):
        cluster.move_slot(P1, (cluster.master_of(P0) + 1) % len(cluster.nodes))
    assert cluster.master_of(P0) != cluster.master_of(P1)


def settings(url: str, tmp_path: Path) -> Settings:
    path = tmp_path / "partitions.toml"
    path.write_text(partitions_toml(["alpha", "beta"]))
    return load_settings(path, {"REDIS_URL": url, "ORDERSTREAM_CONSUMER": "w1",
                                "ORDERSTREAM_REDIS_CLUSTER": "true",
                                "ORDERSTREAM_METRICS_PORT": "0",
                                "ORDERSTREAM_METRICS_HOST": "127.0.0.1"})


@pytest.fixture
async def cluster(cluster_url: str, redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    on_two_masters(redis_cluster)
    r = RedisCluster.from_url(cluster_url)
    yield r
    await r.aclose()


async def test_each_accounts_orders_stay_in_its_partition_on_its_master(
        cluster_url: str, cluster: RedisCluster, tmp_path: Path) -> None:
    s = settings(cluster_url, tmp_path)
    async with serving(PartitionHost(s)) as host, \
            OrderClient.from_url(cluster_url, P0, cluster=True) as zero, \
            OrderClient.from_url(cluster_url, P1, cluster=True) as one:
        a = await zero.place("BTCUSDT", "buy", "market", "0.010", account="alpha")
        b = await one.place("BTCUSDT", "sell", "limit", "0.020", price="60000",
                            account="beta")
        # beta's request on partition 0's stream: refused there, nothing made anywhere.
        astray = await zero.place("BTCUSDT", "buy", "market", "0.030", account="beta",
                                  client_order_id="astray-1")
        got0 = await zero.wait_results([a.request_id, astray.request_id], 15)
        got1 = await one.wait_results([b.request_id], 15)
        assert b.client_order_id is not None
        cancel = await one.cancel(b.client_order_id, account="beta")
        cancelled = await one.wait_result(cancel.request_id, 15)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{host.metrics_port}"
            async with http.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
            async with http.get(f"{url}/readyz") as resp:
                ready = resp.status
    assert got0[a.request_id].status is ResultStatus.FILLED
    assert got0[a.request_id].filled_quantity == Decimal("0.010")
    assert got1[b.request_id].status is ResultStatus.ACCEPTED
    assert cancelled.status is ResultStatus.CANCELLED
    wrong = got0[astray.request_id]
    assert wrong.status is ResultStatus.FAILED
    assert wrong.reason_code == ReasonCode.WRONG_PARTITION
    assert f"{P1}:pending" in (wrong.reason or "")
    assert await cluster.exists(Keys(P0).order("astray-1"), Keys(P1).order("astray-1")) == 0
    # Every key of a partition is in its slot, and the slots are on two masters.
    keys = [k.decode() async for k in cluster.scan_iter()]
    by_slot: dict[int, set[str]] = {}
    for key in keys:
        by_slot.setdefault(cluster.keyslot(key), set()).add(key.split(":")[0])
    assert by_slot == {cluster.keyslot(P0): {P0}, cluster.keyslot(P1): {P1}}
    assert cluster.get_node_from_key(P0) != cluster.get_node_from_key(P1)
    # alpha's order is in partition 0 only, beta's in partition 1 only.
    assert await cluster.exists(Keys(P0).order(str(a.client_order_id))) == 1
    assert await cluster.exists(Keys(P1).order(str(a.client_order_id))) == 0
    assert await cluster.exists(Keys(P1).order(b.client_order_id)) == 1
    # One exposition, each partition's series under its label.
    assert ready == 200
    answered = {line for line in metrics.splitlines()
                if line.startswith("orderstream_requests_total{")}
    assert any('account="alpha"' in line and 'partition="0"' in line for line in answered)
    assert any('account="beta"' in line and 'partition="1"' in line for line in answered)
    assert any('reason_code="wrong_partition"' in line and 'partition="0"' in line
               for line in answered)
    assert metrics.count("# TYPE orderstream_consumer_group_lag gauge") == 1


async def test_kills_at_random_lose_nothing_and_send_nothing_twice_in_either_partition(
        cluster_url: str, cluster: RedisCluster, tmp_path: Path) -> None:
    cfg = ChaosConfig(orders=3_000, publish_s=6.0, kill_for_s=9.0, cluster=True,
                      partitions=2)
    report = await Chaos(cluster_url, cfg, tmp_path, say=print).run()
    summary = "\n".join(report.lines())
    print(summary)
    assert report.requests == 3_000
    assert report.kills >= 3, summary
    assert (report.lost, report.duplicated, report.sent_twice, report.inconsistent,
            report.pending) == (0, 0, 0, 0, 0), summary
    assert report.replay_differences == 0, summary
    assert report.results == report.requests, summary
    assert report.outcomes.get("filled", 0) > 600, summary
    # Both partitions did work: each one's paper exchange filled orders.
    filled: dict[str, Any] = {}
    for n, prefix in enumerate((P0, P1)):
        filled[prefix] = await cluster.xlen(Keys(prefix).paper(f"p{n}", "received"))
    assert all(count > 500 for count in filled.values()), filled
