"""Shared fixtures: one private redis-server for the whole session, flushed before each test.

The server is ours (127.0.0.1, a free port, a temporary directory), never a Redis the developer
runs. Its binary comes from devtools.redis_server.find_redis_server(), which honours
$REDIS_SERVER_BIN (set by `make test`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from devtools.redis_cluster import LocalCluster, find_redis_cli
from devtools.redis_server import RedisServer, find_redis_server

_REDIS_FIXTURES = {"redis_server", "redis_url", "redis_client", "redis_cluster",
                   "cluster_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs a real redis-server is an integration test, wherever its file is, so
    # `pytest -m "not integration"` runs without one.
    for item in items:
        if _REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(binary=find_redis_server(), data_dir=tmp_path_factory.mktemp("redis"))
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    # A test may have killed or stopped the shared server: bring it back on the same port.
    if not redis_server.running:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis Cluster of three masters on loopback (devtools/redis_cluster.py), started
    once per session (about 3 s) and only by the tests that ask for it."""
    binary = find_redis_server()
    if find_redis_cli(binary) is None:
        pytest.skip("redis-cli not found (it makes the cluster: apt-get install redis-tools)")
    with LocalCluster(binary=binary, data_dir=tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The url of one node of the session's cluster, every master flushed."""
    redis_cluster.flush()
    return redis_cluster.url
