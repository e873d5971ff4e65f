"""Script calls made side by side go in one round trip (infra/coalesce.py), each answered
or failed on its own as if sent alone. Real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from executor.infra.coalesce import Coalescer, coalescing, run_script
from producer.connect import home_node, redis_client

# Appends its argument to a list and answers the list's length: the order the calls ran in
# is the list's.
APPEND = "return redis.call('RPUSH', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('refused ' .. ARGV[1])"


async def side_by_side(*calls: Any) -> list[Any]:
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_calls_made_side_by_side_go_in_one_round_trip_each_answered(
        redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    append = redis_client.register_script(APPEND)
    with coalescing(coalescer):
        replies = await side_by_side(*(run_script(append, ["log"], [f"c{n}"])
                                       for n in range(5)))
    assert replies == [1, 2, 3, 4, 5]
    assert coalescer.round_trips == 1
    assert await redis_client.lrange("log", 0, -1) == [b"c0", b"c1", b"c2", b"c3", b"c4"]


async def test_one_call_that_fails_fails_alone(redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    append = redis_client.register_script(APPEND)
    fail = redis_client.register_script(FAIL)
    with coalescing(coalescer):
        replies = await side_by_side(run_script(append, ["log"], ["a"]),
                                     run_script(fail, ["log"], ["b"]),
                                     run_script(append, ["log"], ["c"]))
    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], ResponseError) and "refused b" in str(replies[1])
    assert coalescer.round_trips == 1


async def test_scripts_the_server_lost_are_loaded_again(redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    append = redis_client.register_script(APPEND)
    with coalescing(coalescer):
        assert await side_by_side(run_script(append, ["log"], ["a"]),
                                  run_script(append, ["log"], ["b"])) == [1, 2]
        await redis_client.script_flush()  # as after a restart or a failover
        assert await side_by_side(run_script(append, ["log"], ["c"]),
                                  run_script(append, ["log"], ["d"])) == [3, 4]
    assert await redis_client.lrange("log", 0, -1) == [b"a", b"b", b"c", b"d"]


async def test_a_call_alone_and_calls_outside_coalescing_are_sent_as_they_come(
        redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    append = redis_client.register_script(APPEND)
    with coalescing(coalescer):
        assert await run_script(append, ["log"], ["a"]) == 1
    assert await side_by_side(run_script(append, ["log"], ["b"]),
                              run_script(append, ["log"], ["c"])) == [2, 3]
    assert coalescer.round_trips == 0


async def test_a_lost_connection_fails_every_call_of_its_round_trip(
        unused_tcp_port: int) -> None:
    down = aioredis.Redis(port=unused_tcp_port, socket_connect_timeout=1)
    coalescer = Coalescer(down)
    append = down.register_script(APPEND)
    try:
        with coalescing(coalescer):
            replies = await side_by_side(run_script(append, ["log"], ["a"]),
                                         run_script(append, ["log"], ["b"]))
    finally:
        await down.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in replies)


async def test_a_caller_cancelled_before_the_send_is_not_sent_and_the_others_are(
        redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    append = redis_client.register_script(APPEND)
    with coalescing(coalescer):
        first = asyncio.create_task(run_script(append, ["log"], ["a"]))
        second = asyncio.create_task(run_script(append, ["log"], ["b"]))
        await asyncio.sleep(0)  # both queued, not yet sent
        first.cancel()
        assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    # Cancelled before its call went out, it was not sent: nothing of it ran.
    assert await redis_client.lrange("log", 0, -1) == [b"b"]
    assert coalescer.round_trips == 0  # the other went alone


async def test_on_a_cluster_the_calls_of_one_slot_go_together(cluster_url: str) -> None:
    cluster = redis_client(cluster_url, cluster=True)
    try:
        coalescer = Coalescer(cluster)
        append = cluster.register_script(APPEND)
        key = "{orders-0}:log"  # a partition's keys all hash to its tag's slot
        with coalescing(coalescer):
            assert await side_by_side(run_script(append, [key], ["a"]),
                                      run_script(append, [key], ["b"])) == [1, 2]
            # As after the failover of its master.
            await cluster.execute_command("SCRIPT FLUSH", **await home_node(cluster, key))
            assert await side_by_side(run_script(append, [key], ["c"]),
                                      run_script(append, [key], ["d"])) == [3, 4]
        assert coalescer.round_trips == 2
        assert await cluster.lrange(key, 0, -1) == [b"a", b"b", b"c", b"d"]
    finally:
        await cluster.delete("{orders-0}:log")
        await cluster.aclose()
