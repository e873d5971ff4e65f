"""The floor benchmark (bench/floor.py) on a real redis-server with real consumer processes:
the writes it reads back are the worker's, and its loop writes them again for each order it
takes, as plain commands or in one script (a smoke test: nothing here is timed)."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench import floor
from bench.throughput import KEYS, answered_by_a_worker, prefill
from bench.writes_loop import CID, KEY, RID, order_commands, script_args
from executor.brokers.paper.store import ExchangeStore
from executor.config import load_settings


async def test_the_writes_read_back_are_those_the_worker_made_for_its_order(
        redis_url: str) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, ORDERSTREAM_METRICS_PORT="0")
    writes = await floor.capture(redis_url, env)
    assert [c[0] for c in writes] == ["HSET", "PEXPIRE", "XADD", "XADD", "HSETNX", "XADD"]
    # At a broker that keeps its orders itself, the worker's own four.
    assert floor.own_writes(writes) == writes[:4]
    assert [c[1] for c in writes[2:4]] == [KEYS.events, KEYS.completed]
    # Made another order's own: its key and ids in every place the worker's order had its own.
    cmds = order_commands(writes, KEYS, "floor-7", "9-0")
    assert cmds[0][1] == cmds[1][1] == KEYS.order("floor-7")
    assert not any(arg in (KEY, CID, RID) for c in cmds for arg in c)
    hset = dict(zip(cmds[0][2::2], cmds[0][3::2], strict=True))
    assert hset["request_id"] == "9-0" and hset["state"] == "filled"
    assert cmds[4][2] == "floor-7"
    # Replayed, they make the records the worker's order has, under the new order's keys.
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await r.flushall()
        pipe = r.pipeline(transaction=True)
        for c in cmds:
            pipe.execute_command(*c)
        await pipe.execute()
        assert set(await r.hkeys(KEYS.order("floor-7"))) == set(hset)
        assert 0 < await r.pttl(KEYS.order("floor-7")) <= int(cmds[1][2])
        assert await r.xlen(KEYS.events) == 1 and await r.xlen(KEYS.completed) == 1
        exchange = ExchangeStore(r, KEYS, floor.ACCOUNT)
        assert await r.hexists(exchange.orders, "floor-7")
        (_, received), = await r.xrange(exchange.received)
        assert received == {"client_order_id": "floor-7"}
    finally:
        await r.aclose()


async def test_a_worker_order_missing_a_record_is_refused(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.flushall()
        await prefill(r, 1)
        settings = load_settings(None, dict(os.environ, REDIS_URL=redis_url,
                                            ORDERSTREAM_METRICS_PORT="0"))
        await answered_by_a_worker(r, settings, 1)
        await r.persist(KEYS.order("bench-0"))  # no expiry: not the worker's writes
        with pytest.raises(RuntimeError, match="bench-0 did not leave its records"):
            await floor.order_writes(r, KEYS, "bench-0", "0-1", 100)
    finally:
        await r.aclose()


def test_the_script_takes_each_command_after_its_argument_count() -> None:
    args: list[Any] = script_args([["PEXPIRE", "k", "5"], ["XADD", "s", "*", "a", "b"]])
    assert args == [3, "PEXPIRE", "k", "5", 5, "XADD", "s", "*", "a", "b"]


async def test_the_floor_benchmark_prints_its_five_consumers(
        redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)
    await floor.run(argparse.Namespace(orders=1000, batch=100, rate=50, seconds=0.5,
                                       repeat=1))
    out = capsys.readouterr().out
    rows = {m.group(1): m.group(2).split() for m in re.finditer(
        r"^(bare|writes lua|writes|own lua|worker) +([0-9,]+ .*)$", out, re.MULTILINE)}
    assert set(rows) == {"bare", "writes", "writes lua", "own lua", "worker"}
    commands = {name: float(row[3]) for name, row in rows.items()}
    assert commands["bare"] == pytest.approx(1.0, abs=0.2)
    # Six writes an order (four without the exchange's), plus each batch's read,
    # transaction or script call, and ack.
    for name in ("writes", "writes lua"):
        assert 6.0 <= commands[name] < 6.5
    assert 4.0 <= commands["own lua"] < 4.5
    assert re.search(r"an order's writes: 6 commands, [0-9,]+ bytes", out)
    assert "writes lua / worker, redis-server CPU an order: " in out
