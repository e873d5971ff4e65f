"""The operator commands on a partitioned deployment (one redis-server is enough: the
partitions are prefixes): a kill switch thrown without an account halts and cancels in
every partition, one with an account only in that account's partition, the views show
each partition's own accounts, one JSON line per partition, and a partition that does not
exist is refused."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devtools.chaos import partitions_toml
from executor.config import load_settings
from executor.host import PartitionHost
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys
from producer.partitions import load_deployment

from .conftest import serving

P0, P1 = Keys("{orders-0}"), Keys("{orders-1}")


async def orderstream(config: Path, url: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDERSTREAM_") and k != "REDIS_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "executor", *args, "--redis-url", url, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_kill_switch_reaches_every_partition_or_only_the_accounts(
        redis_url: str, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(partitions_toml(["alpha", "beta"]))
    settings = load_settings(config, {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
                                      "ORDERSTREAM_METRICS_PORT": "0",
                                      "ORDERSTREAM_METRICS_HOST": "127.0.0.1"})
    async with serving(PartitionHost(settings)), \
            OrderClient.from_url(redis_url, load_deployment(config)) as client:
        resting = [await client.place("BTCUSDT", "buy", "limit", "0.010", price="40000",
                                      account=account) for account in ("alpha", "beta")]
        placed = await client.wait_results(resting, 15)
        assert {r.status for r in placed.values()} == {ResultStatus.ACCEPTED}

        # An account's kill: its partition only.
        code, out, err = await orderstream(config, redis_url, "kill", "--account", "beta")
        assert code == 0, err
        assert "== partition 1 ({orders-1})" in out and "partition 0" not in out
        assert await redis_client.hget(P1.trading, "beta") is not None
        assert await redis_client.hgetall(P0.trading) == {}
        alpha_order: Any = await client.order(str(resting[0].client_order_id),
                                              account="alpha")
        assert alpha_order.state == "accepted"  # untouched in partition 0

        # No account: every partition halted, every open order cancelled.
        code, out, err = await orderstream(config, redis_url, "kill")
        assert code == 0, err
        assert "== partition 0" in out and "== partition 1" in out
        for keys in (P0, P1):
            assert await redis_client.hget(keys.trading, "global") == b"halted"
        for submitted, account in zip(resting, ("alpha", "beta"), strict=True):
            order: Any = await client.order(str(submitted.client_order_id), account=account)
            assert order.state == "cancelled"

        code, out, err = await orderstream(config, redis_url, "trading", "--json")
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["partition"] for line in lines] == [0, 1]
        assert [sorted(line["view"]["effective"]) for line in lines] == [["alpha"], ["beta"]]

        code, out, err = await orderstream(config, redis_url, "resume", "--partition", "0")
        assert code == 0, err
        assert await redis_client.hget(P0.trading, "global") == b"active"
        assert await redis_client.hget(P1.trading, "global") == b"halted"

        code, _, err = await orderstream(config, redis_url, "trading", "--partition", "7")
        assert code == 2 and "--partition 7" in err
        code, _, err = await orderstream(config, redis_url, "breaker", "--account", "beta",
                                         "--partition", "0")
        assert code == 2 and "partition 1" in err
