"""deploy/redis.conf is accepted by the redis-server we test with and says what we mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from devtools.redis_server import RedisServer
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import GROUP, Keys

from .conftest import running, settings_for

pytestmark = pytest.mark.integration

K = Keys()
CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"


def test_production_config_starts(tmp_path: Path) -> None:
    with RedisServer(CONF, data_dir=tmp_path) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert client.config_get("protected-mode") == {"protected-mode": "yes"}
            # RDB snapshots stay on, beside the AOF.
            assert client.config_get("save") == {"save": "3600 1 300 100 60 10000"}
            client.xadd("orders", {"k": "v"})
        finally:
            client.close()
        # Our command line wins over the file: loopback only, files in our directory.
        assert server.port != 6379
    assert any(p.name.startswith("appendonly") for p in tmp_path.iterdir())


async def test_nothing_acked_is_lost_when_redis_crashes_under_the_production_config(
    tmp_path: Path,
) -> None:
    """SIGKILL of redis-server (no shutdown save) with the AOF of deploy/redis.conf: every
    result and acknowledgement written before the crash is there after it, and the worker
    reconnects and serves on."""
    with RedisServer(CONF, data_dir=tmp_path) as server:
        async with running(settings_for(server.url)):
            async with OrderClient.from_url(server.url) as before:
                subs = [await before.place("BTCUSDT", "buy", "market", "0.001")
                        for _ in range(200)]
                await before.wait_results([s.request_id for s in subs], 30)
            server.kill()
            server.start()
            async with OrderClient.from_url(server.url) as client:
                r = client.redis
                assert await r.xlen(K.completed) == 200
                assert (await r.xpending(K.pending, GROUP))["pending"] == 0
                assert await r.xlen(K.paper("default", "received")) == 200
                assert await r.exists(*(K.order(s.client_order_id) for s in subs)) == 200
                after = await client.place("ETHUSDT", "sell", "market", "0.01")
                result = await client.wait_result(after.request_id, 30)
                assert result.status is ResultStatus.FILLED
                assert await r.xlen(K.paper("default", "received")) == 201
