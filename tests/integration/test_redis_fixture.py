"""The redis fixtures and RedisServer really work (a real redis-server, no fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.asyncio

from devtools.redis_server import RedisServer, url_is_reachable

pytestmark = pytest.mark.integration


async def test_ping(redis_client: redis.asyncio.Redis) -> None:
    assert await redis_client.ping()
    assert await redis_client.dbsize() == 0  # flushed before each test


async def test_stream_round_trip(redis_client: redis.asyncio.Redis) -> None:
    await redis_client.xgroup_create("orders", "workers", id="0", mkstream=True)
    entry_id = await redis_client.xadd("orders", {"payload": b"\x00\xffbinary"})
    batches = await redis_client.xreadgroup("workers", "w1", {"orders": ">"}, count=10)
    assert batches == [[b"orders", [(entry_id, {b"payload": b"\x00\xffbinary"})]]]
    assert await redis_client.xack("orders", "workers", entry_id) == 1


def test_restart_keeps_port_and_kill_is_a_crash(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path) as server:
        port, pid = server.port, server.pid
        server.restart()
        assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
        assert server.pid != pid
        assert url_is_reachable(server.url)
        server.kill()
        assert not server.running
        assert not url_is_reachable(server.url, timeout=0.5)
        server.start()  # same port again after a crash
        assert url_is_reachable(server.url)
    assert not url_is_reachable(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    assert tmp_path.exists()  # a directory we were given is left in place


def test_start_failure_shows_the_log(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path, extra_args=["--no-such-directive", "1"])
    with pytest.raises(RuntimeError, match="no-such-directive"):
        server.start()
    assert not server.running
