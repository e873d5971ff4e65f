"""The worker's connections send a command at once, with no task made for it
(infra/packing.py), and keep redis-py's timeout and errors for a write that cannot finish:
a server that stops reading, a connection that is gone."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import connection as redis_connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devtools.redis_server import RedisServer, find_redis_server
from executor.infra.connection import RedisSettings, connect


def counting_wait_for(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The calls of ``asyncio.wait_for`` that redis-py's connections make."""
    calls: list[int] = []
    wait_for = asyncio.wait_for

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await wait_for(*args, **kwargs)
    monkeypatch.setattr(redis_connection.asyncio, "wait_for", counted)
    return calls


async def test_a_command_is_sent_without_a_task_and_answered_as_before(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = connect(RedisSettings(url=redis_url))
    theirs = aioredis.Redis.from_url(redis_url, socket_timeout=10.0)
    try:
        await ours.ping()
        await theirs.ping()
        calls = counting_wait_for(monkeypatch)
        await ours.set("k", b"v" * 1000)
        assert [await ours.get("k") for _ in range(20)] == [b"v" * 1000] * 20
        assert calls == []
        assert await theirs.get("k") == b"v" * 1000
        assert calls == [1]  # redis-py's own: one wait_for (a task) per command
    finally:
        await ours.aclose()
        await theirs.aclose()


@pytest.fixture
def own_server(tmp_path: Path) -> Any:
    server = RedisServer(binary=find_redis_server(), data_dir=tmp_path)
    with server:
        yield server


async def test_a_write_a_stopped_server_does_not_read_times_out_as_redis_py_s(
        own_server: RedisServer) -> None:
    """The buffer full, draining it waits at most the socket timeout, then the connection
    is dropped with redis-py's TimeoutError; the server back, the client works again."""
    client = connect(RedisSettings(url=own_server.url), socket_timeout_s=0.5)
    try:
        await client.ping()
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(client.set("big", b"x" * 16_000_000), 10)
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        assert await client.ping() is True
        # The dropped connection's transport still flushes what it holds, then closes.
        for _ in range(200):
            if len(await client.client_list()) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(await client.client_list()) == 1
    finally:
        await client.aclose()


async def test_a_lost_connection_is_redis_py_s_connection_error(
        own_server: RedisServer) -> None:
    client = connect(RedisSettings(url=own_server.url))
    try:
        await client.ping()
        own_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
    finally:
        await client.aclose()
