"""The ordinary flow on a real Redis Cluster (three masters, tests/conftest.py): a worker
on the paper broker and the producer client, with a hash-tagged prefix; the refusal of a
prefix that would scatter a deployment's keys over the cluster's slots; and a partitioned
producer's routing over two masters."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import pytest
import redis.asyncio.cluster as cluster_module
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from devtools.redis_cluster import LocalCluster
from executor.background import probes, retention
from executor.background.probes import Probe
from executor.infra.metrics import Metrics
from executor.infra.store import Durability, NewOrder, Store
from executor.model.order import Context, new_order
from producer.client import OrderClient, Submitted
from producer.connect import ClusterUnavailable, redis_client
from producer.contract import (
    Action,
    OrderSpec,
    OrderState,
    OrderType,
    Result,
    ResultStatus,
    Side,
    decode_request,
    encode,
)
from producer.keys import Keys
from producer.partitions import Deployment, Partitions

from .conftest import events_in, running, settings_for

PREFIX = "{orders-0}"
K = Keys(PREFIX)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    r = RedisCluster.from_url(cluster_url)
    yield r
    await r.aclose()


async def test_market_and_limit_orders_and_a_cancel_each_get_their_one_result(
    cluster_url: str, cluster: RedisCluster
) -> None:
    settings = settings_for(cluster_url, redis_cluster="true", redis_prefix=PREFIX)
    async with OrderClient.from_url(cluster_url, PREFIX, cluster=True) as client, \
            running(settings):
        market = await client.place("BTCUSDT", "buy", "market", "0.010")
        limit = await client.place("BTCUSDT", "buy", "limit", "0.010", price="40000")
        placed = await client.wait_results([market.request_id, limit.request_id], 15)
        assert limit.client_order_id is not None
        cancel = await client.cancel(limit.client_order_id)
        cancelled = await client.wait_result(cancel.request_id, 15)
        status = await client.order(limit.client_order_id)
    assert placed[market.request_id].status is ResultStatus.FILLED
    assert placed[market.request_id].filled_quantity == Decimal("0.010")
    assert placed[limit.request_id].status is ResultStatus.ACCEPTED
    assert cancelled.status is ResultStatus.CANCELLED
    assert status is not None and status.state is OrderState.CANCELLED
    # One result per request, every key in the one slot of the prefix's hash tag.
    ids = [market.request_id, limit.request_id, cancel.request_id]
    answered = [f[b"request_id"].decode() for stream in (K.completed, K.failed)
                for _, f in await cluster.xrange(stream)]
    assert sorted(answered) == sorted(ids)
    events = await events_in(cluster, keys=K)
    assert [e.state for e in events if e.client_order_id == limit.client_order_id][-1] \
        is OrderState.CANCELLED
    keys = [k async for k in cluster.scan_iter()]  # on every master
    assert len(keys) > 5 and {cluster.keyslot(k) for k in keys} == {cluster.keyslot(PREFIX)}


async def calls(cluster: RedisCluster, command: str) -> dict[str, int]:
    """Per node name, how many times it ran ``command`` (INFO commandstats)."""
    stats = await cluster.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    return {name: int(s.get(f"cmdstat_{command}", {"calls": 0})["calls"])
            for name, s in stats.items()}


async def test_wait_for_durability_goes_to_the_node_of_the_slot_with_the_send_script(
    cluster: RedisCluster
) -> None:
    """WAIT counts the replicas that have this connection's writes: on a cluster it must
    run on the node holding the deployment's slot, in the pipeline after the send script
    (which a fresh node does not know yet: NOSCRIPT must not fail the send)."""
    store = Store(cast(Any, cluster), K, results_maxlen=100, order_ttl_ms=60_000,
                  durability=Durability(0, False, 100))
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY,
                     type=OrderType.MARKET, quantity=Decimal("0.010"))
    for cid in ("c-1", "c-2"):
        order, events = new_order(cid, "1-0", spec, Context(now=1, worker="w1",
                                                            request_id="1-0"))
        await store.begin([NewOrder(order, events)])
    before = await calls(cluster, "wait")
    assert await store.take_send_tokens({"c-1": "w1:x"}) == [1]
    # The nodes forget their scripts (a restart, a failover): the next send loads it again.
    await cluster.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    assert await store.take_send_tokens({"c-2": "w1:y"}) == [1]
    after = await calls(cluster, "wait")
    home = cluster.get_node_from_key(K.pending).name
    ran = {name: after[name] - before[name] for name in after}
    assert ran[home] >= 2 and sum(ran.values()) == ran[home], ran
    assert await cluster.hget(K.order("c-2"), "sender") == b"w1:y"


async def test_the_events_readers_lag_is_measured_on_the_clock_of_the_slots_node(
    cluster: RedisCluster
) -> None:
    """The probe's reader lag reads TIME, which a cluster pipeline refuses as a method and
    which must come from the node whose clock stamped the events' ids."""
    await cluster.xadd(K.events, {"data": b"{}"})
    before = await calls(cluster, "time")
    lags = await retention.reader_lags(cast(Any, cluster), K)
    after = await calls(cluster, "time")
    assert set(lags) == {retention.POSITIONS} and lags[retention.POSITIONS] >= 0
    home = cluster.get_node_from_key(K.events).name
    assert {name: after[name] - before[name] for name in after} == {
        name: int(name == home) for name in after}


async def test_open_orders_are_counted_by_state_in_steps_on_a_cluster(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gauge's count scans the open set a step per script call; the order hashes it
    reads by name share the open set's slot (the prefix's hash tag)."""
    for i in range(30):
        state = "accepted" if i % 3 else "partially_filled"
        await cluster.hset(K.order(f"c{i}"), mapping={"state": state})
        await cluster.sadd(K.open, f"c{i}")
    monkeypatch.setattr(probes, "_COUNTED_AT_ONCE", 5)
    metrics = Metrics()
    await Probe(cast(Any, cluster), K, metrics, {}, {})._orders()
    assert metrics.open_orders.labels("accepted")._value.get() == 20
    assert metrics.open_orders.labels("partially_filled")._value.get() == 10


async def test_stream_reads_ask_no_node_for_their_keys(cluster_url: str,
                                                        cluster: RedisCluster) -> None:
    """redis-py would ask its default node (COMMAND GETKEYS) before every XREAD and
    XREADGROUP: a round trip more, and every read failing while that one node is down."""
    client = redis_client(cluster_url, cluster=True)
    try:
        await client.xgroup_create(K.pending, "g", id="0", mkstream=True)
        await client.xadd(K.pending, {"data": b"{}"})
        before = await calls(cluster, "command|getkeys")
        read: Any = await client.xreadgroup("g", "c", {K.pending: ">"}, count=10)
        again: Any = await client.xread({K.pending: "0-0"}, count=10)
        after = await calls(cluster, "command|getkeys")
    finally:
        await client.aclose()
    assert len(read[0][1]) == 1 and len(again[0][1]) == 1
    assert after == before


async def test_a_partitioned_producer_routes_each_account_to_its_partitions_master(
    cluster_url: str, cluster: RedisCluster, redis_cluster: LocalCluster
) -> None:
    """Each account's requests land in its own partition's stream, on that partition's
    master; results are found per partition, by the Submitted, even when two partitions
    hand out the same request id (one XREAD per partition: one across them is CROSSSLOT)."""
    deployment = Deployment("desk", Partitions(count=2, accounts={"default": 0, "alpha": 1}))
    p0, p1 = Keys("{desk-0}"), Keys("{desk-1}")
    if redis_cluster.master_of(p0.pending) == redis_cluster.master_of(p1.pending):
        redis_cluster.move_slot(p1.pending, next(m for m in redis_cluster.masters()
                                                 if m != redis_cluster.master_of(p0.pending)))
    await cluster.initialize()
    assert cluster.get_node_from_key(p0.pending) != cluster.get_node_from_key(p1.pending)
    async with OrderClient.from_url(cluster_url, deployment, cluster=True) as client:
        alpha = await client.place("BTCUSDT", "buy", "market", "0.010", account="alpha")
        default = await client.place("BTCUSDT", "sell", "market", "0.010")
        cancel = await client.cancel("c-1", account="alpha")
        assert (alpha.prefix, default.prefix, cancel.prefix) == (p1.prefix, p0.prefix,
                                                                 p1.prefix)
        in_p1 = [decode_request(f[b"data"]) for _, f in await cluster.xrange(p1.pending)]
        in_p0 = [decode_request(f[b"data"]) for _, f in await cluster.xrange(p0.pending)]
        assert [(r.client_order_id, r.account) for r in in_p1] == [
            (alpha.client_order_id, "alpha"), ("c-1", "alpha")]
        assert [(r.client_order_id, r.account) for r in in_p0] == [
            (default.client_order_id, None)]

        # Both partitions answer a request whose id is the same in each.
        same = "1000-0"
        first, second = Submitted(same, "a-1", p0.prefix), Submitted(same, "b-1", p1.prefix)
        filled = Result(request_id=same, action=Action.PLACE, status=ResultStatus.FILLED,
                        client_order_id="a-1")
        denied = Result(request_id=same, action=Action.PLACE, status=ResultStatus.DENIED,
                        client_order_id="b-1", reason_code="halted", reason="halted")
        waiting = asyncio.ensure_future(client.wait_results([first, second], timeout=10))
        await asyncio.sleep(0.1)  # both partitions' reads are blocked, each on its master
        await cluster.xadd(p0.completed, {"data": encode(filled), "request_id": same})
        await cluster.xadd(p1.failed, {"data": encode(denied), "request_id": same})
        assert await waiting == {first: filled, second: denied}


async def test_a_transaction_queues_its_commands_without_a_thread_each(
        cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py 8.1 finds each queued command's slot in a thread of its own that blocks
    the event loop; ours finds it from the key, so the worker's MULTI reads (prefetch,
    risk snapshot) cost what a MULTI costs, and keys in two slots are still refused."""
    threads: list[object] = []
    real = threading.Thread

    def counted(*args: Any, **kwargs: Any) -> threading.Thread:
        threads.append(args or kwargs)
        return real(*args, **kwargs)

    client = redis_client(cluster_url, cluster=True)
    try:
        await client.set(K.order("x"), b"1")  # the client knows the cluster
        monkeypatch.setattr(cluster_module.threading, "Thread", counted)
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(K.order("x"))
            pipe.hset(K.trading, "global", "active")
            pipe.execute_command("EVAL", "return redis.call('GET', KEYS[1])", 1,
                                 K.order("x"))
            pipe.xadd(K.events, {"data": b"{}"})
            got = await pipe.execute()
        assert got[0] == b"1" and got[2] == b"1"
        assert threads == []
        with pytest.raises((RedisClusterException, ClusterUnavailable), match="same slot"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(K.order("x"))
                pipe.get("elsewhere")
                await pipe.execute()
    finally:
        await client.aclose()
