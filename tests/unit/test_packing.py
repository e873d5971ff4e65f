"""The C packer sends exactly the bytes redis-py's own packer would."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

from executor.infra.packing import pack, use_c_packing

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "ab" * 20, 2, "orders:order:a", b"k2", b"x" * 10_000, "é", -3, 2**70),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", b"w1"),
    ("XADD", "s", "*", "data", b"{}"),
    ("GET", ""),
]


@pytest.mark.parametrize("args", CASES)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    conn = Connection()
    packed = pack(args)
    assert packed is not None
    assert b"".join(packed) == b"".join(conn.pack_command(*args))


@pytest.mark.parametrize("odd", [1.5, True, None, memoryview(b"m")])
def test_other_types_are_left_to_redis_py(odd: Any) -> None:
    assert pack(("SET", "k", odd)) is None


def test_bytes_are_sent_without_a_copy() -> None:
    big = b"v" * 100_000
    packed = pack(("SET", "k", big))
    assert packed is not None and any(chunk is big for chunk in packed)


def test_the_url_still_picks_the_connection_kind() -> None:
    for url, base in (("redis://localhost:1/0", Connection),
                      ("unix:///tmp/redis.sock", UnixDomainSocketConnection)):
        pool = use_c_packing(aioredis.Redis.from_url(url)).connection_pool
        assert issubclass(pool.connection_class, base)
        conn = pool.make_connection()
        assert b"".join(conn.pack_command("PING")) == b"*1\r\n$4\r\nPING\r\n"


def test_a_pipeline_is_the_same_bytes_as_redis_py_s_its_pieces_as_packed() -> None:
    fast = use_c_packing(aioredis.Redis.from_url("redis://localhost:1/0")).connection_pool
    conn = fast.make_connection()
    commands = [*CASES, ("SET", "k", 1.5)]  # the last one packed by redis-py
    packed = conn.pack_commands(commands)
    assert b"".join(packed) == b"".join(Connection().pack_commands(commands))
    # Every piece as it was packed: even a short bytes argument is not joined into a
    # buffer in Python (redis-py's own joins it: the transport joins them in C).
    small = CASES[3][4]
    assert any(chunk is small for chunk in packed)
    assert not any(chunk is small for chunk in Connection().pack_commands(commands))
