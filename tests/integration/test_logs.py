"""Worker processes with known secrets in their environment log JSON lines at DEBUG, with
the order's ids on the lines about an order, and never a secret."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from devtools.redis_server import RedisServer
from producer.client import OrderClient
from producer.keys import Keys

K = Keys()

URL_SECRET = "url-pw-7f3a9c2e"
ENV_SECRET = "env-named-pw-51d0b8"
LOUD = {"ORDERSTREAM_LOG_LEVEL": "DEBUG",
        # Half the submits answer "outcome unknown": per-order warnings and lookups.
        "ORDERSTREAM_ACCOUNTS_DEFAULT_TIMEOUT_RATE": "0.5",
        "ORDERSTREAM_LOOKUP_WINDOW_MS": "200"}


async def test_no_secret_reaches_the_logs_of_a_run(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "redis") as server:
        admin = aioredis.Redis(port=server.port)
        await admin.acl_setuser("default", enabled=True, passwords=[f"+{URL_SECRET}",
                                                                   f"+{ENV_SECRET}"])
        await admin.aclose()
        with_url = f"redis://:{URL_SECRET}@127.0.0.1:{server.port}/0"
        plain = f"redis://127.0.0.1:{server.port}/0"
        workers = [
            WorkerProcess(with_url, "url", tmp_path / "url.log", **LOUD),
            WorkerProcess(plain, "named", tmp_path / "named.log", **LOUD,
                          ORDERSTREAM_REDIS_PASSWORD_ENV="SOME_REDIS_PASSWORD",
                          SOME_REDIS_PASSWORD=ENV_SECRET),
        ]
        try:
            async with OrderClient.from_url(with_url) as client:
                beating = 0
                for _ in range(600):  # both logged in and beating before any order is sent
                    beating = await client.redis.exists(*(K.worker(w.consumer)
                                                          for w in workers))
                    if beating == 2:
                        break
                    await asyncio.sleep(0.1)
                subs = [await client.place("BTCUSDT", "buy", "market", "0.001")
                        for _ in range(30)]
                subs.append(await client.place("NOSUCH", "buy", "market", "1"))
                results = await client.wait_results([s.request_id for s in subs], 60)
        finally:
            codes = [await asyncio.to_thread(w.stop, 20) for w in workers]
        config = subprocess.run(
            [sys.executable, "-m", "executor", "config"], capture_output=True, text=True,
            env={"REDIS_URL": with_url, "PATH": "/usr/bin:/bin"}, check=False, timeout=60)

    logs = {w.consumer: w.log.read_text() for w in workers}
    assert codes == [0, 0], logs
    assert beating == 2, "both logged in, each with its own way to the secret"
    assert len(results) == len(subs)
    everything = "".join(logs.values()) + config.stdout + config.stderr
    assert config.returncode == 0 and "***" in config.stdout
    for secret in (URL_SECRET, ENV_SECRET):
        assert secret not in everything
    about_orders = 0
    for text in logs.values():
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines and all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
        assert any(x["level"] == "DEBUG" for x in lines)
        for line in lines:
            if line["msg"].startswith("order "):
                about_orders += 1
                assert line["client_order_id"] in line["msg"] and line["request_id"], line
    assert about_orders > 0, "the unknown outcomes were logged, about their orders"
