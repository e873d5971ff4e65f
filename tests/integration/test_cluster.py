"""The ordinary flow on a real Redis Cluster (three masters, tests/conftest.py): a worker
on the paper broker and the producer client, with a hash-tagged prefix; and the refusal of
a prefix that would scatter a deployment's keys over the cluster's slots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio.cluster import RedisCluster

from executor.config import ConfigError, load_settings
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus, decode_event
from producer.keys import Keys

from .conftest import running, settings_for

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
    events = [decode_event(f[b"data"]) for _, f in await cluster.xrange(K.events)]
    assert [e.state for e in events if e.client_order_id == limit.client_order_id][-1] \
        is OrderState.CANCELLED
    keys = [k async for k in cluster.scan_iter()]  # on every master
    assert len(keys) > 5 and {cluster.keyslot(k) for k in keys} == {cluster.keyslot(PREFIX)}
