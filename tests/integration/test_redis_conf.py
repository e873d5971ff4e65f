"""deploy/redis.conf is accepted by the redis-server we test with and says what we mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from devtools.redis_server import RedisServer

pytestmark = pytest.mark.integration

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
