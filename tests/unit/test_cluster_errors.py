"""A Redis Cluster's failures reach our code as ``RedisError`` (producer/connect.py): redis-py
raises "no node reachable" and "slot not covered" as ``RedisClusterException``, which is no
``RedisError``, so the loops that wait out a Redis outage would end on them instead."""

from __future__ import annotations

import socket

import pytest
import redis.asyncio.cluster
import redis.asyncio.connection
from redis.exceptions import RedisError

from producer.connect import (
    ClusterUnavailable,
    dropped_mid_command,
    home_node,
    is_cluster,
    redis_client,
    stream_keys,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once it is closed


@pytest.fixture
async def unreachable():  # type: ignore[no-untyped-def]
    client = redis_client(f"redis://127.0.0.1:{closed_port()}", cluster=True)
    assert is_cluster(client)
    yield client
    await client.aclose()


async def test_a_command_to_an_unreachable_cluster_is_a_redis_error(unreachable) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClusterUnavailable, match="cannot be connected") as caught:
        await unreachable.get("{orders}:x")
    assert isinstance(caught.value, RedisError)


async def test_a_pipeline_and_the_slot_lookup_fail_the_same_way(unreachable) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClusterUnavailable):
        async with unreachable.pipeline(transaction=False) as pipe:
            pipe.get("{orders}:x")
            await pipe.execute()
    with pytest.raises(ClusterUnavailable):
        await home_node(unreachable, "{orders}:pending")


@pytest.mark.parametrize(
    ("command", "args", "keys"),
    [
        ("XREADGROUP", ("GROUP", "executors", "w1", "COUNT", 200, "BLOCK", 1000, "STREAMS",
                        "{o-0}:pending", ">"), ["{o-0}:pending"]),
        # A group or consumer called "streams", a key called "STREAMS": still read right.
        ("xreadgroup", (b"GROUP", b"streams", b"STREAMS", b"NOACK", b"STREAMS", b"STREAMS",
                        b">"), [b"STREAMS"]),
        ("XREAD", ("COUNT", 10, "STREAMS", "a", "b", "0-0", "0-0"), ["a", "b"]),
        ("XREAD", ("BLOCK", 5, "STREAMS", "a"), None),  # odd: Redis answers its own error
        ("XREAD", ("COUNT", 1), None),
        ("GET", ("STREAMS",), None),
    ],
)
def test_the_streams_of_a_read_are_found_without_asking_a_node(
        command: str, args: tuple[object, ...], keys: list[object] | None) -> None:
    assert stream_keys(command, args) == keys


async def _lost_writer() -> None:
    """What redis-py does when a failover closed the connection under a command."""
    connection = redis.asyncio.connection.Connection()
    connection._writer = None
    await connection._send_packed_command([b"PING"])


async def test_a_connection_lost_under_a_command_is_a_redis_error(
        unreachable, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A worker's loop waits out a RedisError and retries; it ends on anything else. The
    AttributeError redis-py raises for a connection closed under a command (nothing sent)
    is a connection error; an AttributeError of ours stays what it is."""
    with pytest.raises(AttributeError) as caught:
        await _lost_writer()
    assert dropped_mid_command(caught.value)

    async def ours(*_: object, **__: object) -> None:
        raise AttributeError("a bug of ours")

    assert not dropped_mid_command(AttributeError("x"))
    monkeypatch.setattr(redis.asyncio.cluster.RedisCluster, "execute_command",
                        lambda *a, **k: _lost_writer())
    with pytest.raises(ClusterUnavailable, match="connection lost under a command"):
        await unreachable.execute_command("GET", "k")
    monkeypatch.setattr(redis.asyncio.cluster.RedisCluster, "execute_command", ours)
    with pytest.raises(AttributeError, match="a bug of ours"):
        await unreachable.execute_command("GET", "k")
