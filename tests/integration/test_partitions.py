"""Two partitions of one deployment on a real Redis Cluster (three masters, tests/conftest.py),
each on its own master: one process serves both, every account's orders stay in its own
partition's slot, a request sent to the wrong partition is refused there and changes
nothing, the metrics of both are served labelled by partition; the chaos run (workers
killed at random, the exchange failing) loses and doubles nothing in either partition; and
a master failing over holds up its own partition only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from devtools.chaos import Chaos, ChaosConfig, partitions_toml
from devtools.redis_cluster import LocalCluster, find_redis_cli
from devtools.redis_server import find_redis_server
from executor.config import Settings, load_settings
from executor.host import PartitionHost
from producer.client import OrderClient, Submitted
from producer.connect import redis_client
from producer.contract import ReasonCode, ResultStatus
from producer.keys import GROUP, Keys
from producer.partitions import partition_prefix

from .conftest import serving

P0, P1 = partition_prefix("orders", 0), partition_prefix("orders", 1)

def on_two_masters(cluster: LocalCluster) -> None:
    """Put the two partitions on two masters (by Redis's hash they share the third)."""
    if cluster.master_of(P0) == cluster.master_of(P1):
        cluster.move_slot(P1, next(m for m in cluster.masters() if m != cluster.master_of(P0)))
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


async def test_a_master_failing_over_holds_up_only_its_own_partition(
        tmp_path: Path) -> None:
    """Partition 1's master is killed; until its replica takes over, partition 0 keeps
    answering, and afterwards partition 1 resumes where it was: its resting order is still
    there to cancel, new orders are answered, nothing is answered twice or left pending."""
    binary = find_redis_server()
    if find_redis_cli(binary) is None:
        pytest.skip("redis-cli not found (it makes the cluster: apt-get install redis-tools)")
    with LocalCluster(binary=binary, replicas=1, node_timeout_ms=1000,
                      data_dir=tmp_path / "cluster") as local:
        on_two_masters(local)
        doomed = local.master_of(P1)
        s = settings(local.url, tmp_path)
        async with serving(PartitionHost(s)), \
                OrderClient.from_url(local.url, P0, cluster=True) as zero, \
                OrderClient.from_url(local.url, P1, cluster=True) as one:
            before = [await one.place("BTCUSDT", "buy", "market", "0.010", account="beta"),
                      await one.place("BTCUSDT", "buy", "limit", "0.010", price="40000",
                                      account="beta")]
            warm = await zero.place("BTCUSDT", "buy", "market", "0.010", account="alpha")
            got = await one.wait_results([b.request_id for b in before], 15)
            await zero.wait_result(warm.request_id, 15)
            resting = before[1].client_order_id
            assert got[before[1].request_id].status is ResultStatus.ACCEPTED
            # What partition 1 holds is on its replica before its master dies (a write on
            # this connection, then WAIT: replication is in order).
            fence = redis.Redis(port=local.nodes[doomed].port)
            fence.set(f"{P1}:fence", 1)
            assert fence.wait(1, 5_000) == 1
            fence.close()

            local.nodes[doomed].kill()
            failover = asyncio.create_task(asyncio.to_thread(local.wait_master, P1, doomed))
            during = [await zero.place("BTCUSDT", "buy", "market", "0.010", account="alpha")
                      for _ in range(5)]
            answered = await zero.wait_results([d.request_id for d in during], 15)
            # Partition 0 was answered while partition 1 had no master yet.
            assert not failover.done()
            assert {r.status for r in answered.values()} == {ResultStatus.FILLED}
            await failover

            assert resting is not None
            cancel = await publish_retrying(lambda: one.cancel(resting, account="beta"))
            after = await publish_retrying(
                lambda: one.place("BTCUSDT", "buy", "market", "0.010", account="beta"))
            done = await one.wait_results([cancel.request_id, after.request_id], 30)
            assert done[cancel.request_id].status is ResultStatus.CANCELLED
            assert done[after.request_id].status is ResultStatus.FILLED
            for client, prefix in ((zero, P0), (one, P1)):
                r = client.redis
                results = [f[b"request_id"] for stream in (Keys(prefix).completed,
                                                           Keys(prefix).failed)
                           for _, f in await r.xrange(stream)]
                assert len(results) == len(set(results))  # none answered twice
                pending: Any = await r.xpending(Keys(prefix).pending, GROUP)
                assert pending["pending"] == 0
            received: Any = await one.redis.xrange(Keys(P1).paper("beta", "received"))
            sent = [f[b"client_order_id"] for _, f in received]
            assert len(sent) == len(set(sent)) == 3  # market, limit, market: each once


async def test_a_script_first_called_while_another_master_is_down_runs_on_its_own(
        tmp_path: Path) -> None:
    """A node without a script gets it on its own slot's node (EVAL), not by SCRIPT LOAD on
    every master: one master down must not fail another partition's first call of a script
    (a speculative write's, first made when one partition's master had just died)."""
    binary = find_redis_server()
    if find_redis_cli(binary) is None:
        pytest.skip("redis-cli not found (it makes the cluster: apt-get install redis-tools)")
    with LocalCluster(binary=binary, node_timeout_ms=5000,
                      data_dir=tmp_path / "cluster") as local:
        on_two_masters(local)
        r = redis_client(local.url, cluster=True)
        try:
            await r.set(f"{P0}:warm", 1)  # the client knows the slots
            local.nodes[local.master_of(P1)].kill()
            script = r.register_script("return redis.call('INCR', KEYS[1])")
            assert await script(keys=[f"{P0}:n"]) == 1  # loaded by EVAL on P0's master
            assert await script(keys=[f"{P0}:n"]) == 2  # then by its sha
        finally:
            await r.aclose()


async def publish_retrying(publish: Callable[[], Awaitable[Submitted]]) -> Submitted:
    """A producer's XADD during a failover fails until the client learns the new master;
    a producer retries it (its client id makes the retry safe)."""
    for _ in range(50):
        try:
            return await publish()
        except RedisError:
            await asyncio.sleep(0.2)
    return await publish()
