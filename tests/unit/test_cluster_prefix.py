"""On a Redis Cluster every key of a deployment must share one hash slot: a prefix without
a hash tag is refused, by the worker's settings and by the producer client."""

from __future__ import annotations

import pytest

from executor.config import ConfigError, load_settings
from producer.client import OrderClient
from producer.keys import hash_tag


@pytest.mark.parametrize(("prefix", "tag"), [
    ("{orders}", "orders"), ("{orders-0}", "orders-0"), ("desk:{orders-1}", "orders-1"),
    ("orders", None), ("{}orders", None), ("orders}{", None), ("{orders", None),
])
def test_the_hash_tag_is_what_redis_hashes(prefix: str, tag: str | None) -> None:
    assert hash_tag(prefix) == tag


@pytest.mark.parametrize("prefix", ["orders", "{}orders", "{orders"])
def test_a_cluster_refuses_a_prefix_without_a_hash_tag(prefix: str) -> None:
    env = {"ORDERSTREAM_REDIS_CLUSTER": "true", "ORDERSTREAM_REDIS_PREFIX": prefix}
    with pytest.raises(ConfigError, match=r"redis\.prefix: .*no hash tag"):
        load_settings(None, env)
    with pytest.raises(ValueError, match=r"prefix: .*no hash tag"):
        OrderClient.from_url("redis://127.0.0.1:1", prefix, cluster=True)


def test_a_tagged_prefix_on_a_cluster_and_any_prefix_on_one_server_are_accepted() -> None:
    settings = load_settings(None, {"ORDERSTREAM_REDIS_CLUSTER": "true",
                                    "ORDERSTREAM_REDIS_PREFIX": "{orders-0}"})
    assert settings.redis.cluster and settings.redis.prefix == "{orders-0}"
    assert not load_settings(None, {"ORDERSTREAM_REDIS_PREFIX": "orders"}).redis.cluster
    OrderClient.from_url("redis://127.0.0.1:1", "orders")
