"""One script call for a batch's reads (executor/infra/batch_read.py): each read's reply is
what a MULTI of the same reads answers, in its place, a failed read as its error there, and
nothing but reads is made."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from executor.infra.batch_read import BatchRead, BatchReader


def queue(pipe: Any) -> None:
    pipe.get("cv")
    pipe.get("missing")
    pipe.hget("h", "a")
    pipe.hget("h", "nope")
    pipe.hlen("h")
    pipe.hlen("missing")
    pipe.hgetall("h")
    pipe.hgetall("missing")
    pipe.hmget("h", ["b", "nope", "a"])
    pipe.get("h")  # WRONGTYPE: a hash read as a string


async def test_the_replies_are_a_multi_s_in_order_errors_in_their_place(
        redis_client: aioredis.Redis) -> None:
    await redis_client.set("cv", "7")
    await redis_client.hset("h", mapping={"a": "1", "b": "2.50", "c": ""})
    async with redis_client.pipeline(transaction=True) as pipe:
        queue(pipe)
        expected = await pipe.execute(raise_on_error=False)
    batch = BatchRead()
    queue(batch)
    got = await BatchReader(redis_client).execute(batch)
    assert len(got) == len(batch) == 10
    assert got[:-1] == expected[:-1]
    assert got[6] == {b"a": b"1", b"b": b"2.50", b"c": b""} and got[7] == {}
    assert isinstance(got[-1], ResponseError) and isinstance(expected[-1], ResponseError)
    assert "WRONGTYPE" in str(got[-1])
    assert batch.keys == ["cv", "missing", "h"]  # each key passed once


async def test_a_server_without_the_script_loads_it(redis_client: aioredis.Redis) -> None:
    reader = BatchReader(redis_client)
    await redis_client.set("cv", "1")
    batch = BatchRead()
    batch.get("cv")
    assert await reader.execute(batch) == [b"1"]
    await redis_client.script_flush()  # Redis restarted without its scripts
    assert await reader.execute(batch) == [b"1"]
    assert await reader.execute(BatchRead()) == []  # nothing asked: no call


async def test_nothing_but_reads_is_made(redis_client: aioredis.Redis) -> None:
    reader = BatchReader(redis_client)
    batch = BatchRead()
    batch.get("cv")
    batch._queue("SET", "cv", "2")  # what no method queues, as a bug would
    with pytest.raises(ResponseError, match="SET is not a read"):
        await reader.execute(batch)
    assert await redis_client.get("cv") is None  # refused whole: not even the GET ran
