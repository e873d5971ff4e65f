"""Shared fixtures: one private redis-server for the whole session, flushed before each test;
one private PostgreSQL server for the session, with a fresh database for each test.

The servers are ours (127.0.0.1, a free port, a temporary directory), never a Redis or a
PostgreSQL the developer runs. The redis-server binary comes from
devtools.redis_server.find_redis_server(), which honours $REDIS_SERVER_BIN (set by `make
test`); PostgreSQL's from devtools.postgres_server.find_postgres_bin_dir(), which honours
$POSTGRES_BIN_DIR (also set by `make test`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from devtools.postgres_server import PostgresNotFound, PostgresServer, find_postgres_bin_dir
from devtools.redis_cluster import LocalCluster, find_redis_cli
from devtools.redis_server import RedisServer, find_redis_server

_REDIS_FIXTURES = {"redis_server", "redis_url", "redis_client", "redis_cluster",
                   "cluster_url"}
_POSTGRES_FIXTURES = {"postgres_bin_dir", "postgres_server", "postgres_url",
                      "postgres_database"}


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """The root logger's level as each test found it, and no handler of ``logs.setup``
    left behind: a CLI entry point run in-process lowers the level to INFO, and a later
    test's capture would then hold every library's INFO lines (a local server's access log
    names its paths). pytest's own capture handlers are its to remove."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers and type(handler).__module__ == "executor.infra.logs":
            root.removeHandler(handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs a real redis-server is an integration test, wherever its file is, so
    # `pytest -m "not integration"` runs without one. The same goes for PostgreSQL.
    for item in items:
        if (_REDIS_FIXTURES | _POSTGRES_FIXTURES).intersection(
                getattr(item, "fixturenames", ())):
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


@pytest.fixture(scope="session")
def postgres_bin_dir() -> Path:
    """The bin directory of PostgreSQL's initdb and postgres (installed if need be and we
    can). Where it is missing and cannot be installed, its tests skip saying why, except
    under CI=true, where they fail: CI installs it, so missing there is a broken CI."""
    try:
        return find_postgres_bin_dir()
    except PostgresNotFound as exc:
        missing = str(exc)
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and PostgreSQL is missing: {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def postgres_server(postgres_bin_dir: Path) -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1 (devtools/postgres_server.py), started once per
    session (about 2 s, initdb included) and only by the tests that ask for it."""
    with PostgresServer(postgres_bin_dir) as server:
        yield server


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_database(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes empty databases on the session's server (the URL of each, for SQLAlchemy's
    asyncio engine); all are dropped when the test ends, so no test sees another's tables."""
    made: list[str] = []
    # The test's name in it helps whoever reads the server log of a failure.
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40].strip("_") or "t"

    def make() -> str:
        name = f"t{next(_database_numbers)}_{stem}"
        url = postgres_server.create_database(name)
        made.append(name)
        return url

    yield make
    if postgres_server.running:  # a test may have stopped it; its databases went with it
        for name in made:
            postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_database: Callable[[], str]) -> str:
    """The URL of an empty database of its own for this test."""
    return postgres_database()
