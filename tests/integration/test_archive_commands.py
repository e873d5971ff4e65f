"""The archive's commands as an operator runs them: ``archive --init`` / ``--once`` /
``--upgrade``, ``history``, ``fills`` (table, CSV, JSON) and ``report``, against a real
redis-server, real workers and a SQLite file; errors say what to do and never show a
password."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis

from executor.archive.report import day_of
from executor.config import Settings
from producer.client import OrderClient
from producer.keys import Keys

from .conftest import running

K = Keys()
ROOT = Path(__file__).resolve().parents[2]


def orderstream(redis_url: str, archive_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "ORDERSTREAM_ARCHIVE_URL": archive_url}
    env.pop("ORDERSTREAM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "executor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def test_init_once_and_the_queries(make_settings: Callable[..., Settings],
                                         client: OrderClient, redis_client: aioredis.Redis,
                                         redis_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    missing = orderstream(redis_url, url, "history")
    assert missing.returncode == 2 and "orderstream archive --init" in missing.stderr
    init = orderstream(redis_url, url, "archive", "--init")
    assert init.returncode == 0, init.stderr
    assert "schema none -> 0003" in init.stdout
    # Registered at the start: retention now keeps everything for the archive.
    assert await redis_client.hget(K.events_readers, "archive") == b"0-0"
    trades = [("buy", "0.003", "s1"), ("buy", "0.002", "s2"), ("sell", "0.004", "s1")]
    async with running(make_settings()):
        subs = [await client.place("BTCUSDT", side, "market", qty, strategy_id=strategy)
                for side, qty, strategy in trades]
        results = await client.wait_results([s.request_id for s in subs], 10)
    once = orderstream(redis_url, url, "archive", "--once")
    assert once.returncode == 0, once.stderr
    assert "entries archived" in once.stdout

    history = orderstream(redis_url, url, "history", "--strategy", "s1", "--json")
    assert history.returncode == 0, history.stderr
    orders = [json.loads(line) for line in history.stdout.splitlines()]
    assert sorted(o["client_order_id"] for o in orders) == sorted(
        s.client_order_id for s, t in zip(subs, trades, strict=True) if t[2] == "s1")
    assert {o["state"] for o in orders} == {"filled"}
    table = orderstream(redis_url, url, "history", "--symbol", "BTCUSDT")
    assert table.stdout.splitlines()[0].split()[:3] == ["created_at", "client_order_id",
                                                        "account"]
    assert len(table.stdout.splitlines()) == 1 + len(trades)

    fills = orderstream(redis_url, url, "fills", "--csv")
    assert fills.returncode == 0, fills.stderr
    got = list(csv.DictReader(io.StringIO(fills.stdout)))
    expected = [(f.fill_id, f.price, f.quantity) for s in subs
                for f in results[s.request_id].fills]
    assert sorted((r["fill_id"], Decimal(r["price"]), Decimal(r["quantity"])) for r in got) \
        == sorted(expected)
    none = orderstream(redis_url, url, "fills", "--account", "nobody")
    assert none.stdout.strip() == "no archived fills match"

    report = orderstream(redis_url, url, "report", "--json")
    assert report.returncode == 0, report.stderr
    (line,) = [json.loads(x) for x in report.stdout.splitlines()]
    every = [f for s in subs for f in results[s.request_id].fills]
    assert line["day"] == day_of(every[0].at)
    assert line["fills"] == len(every)
    assert Decimal(line["bought"]) == Decimal("0.005") and Decimal(line["sold"]) == Decimal("0.004")
    assert Decimal(line["notional"]) == sum(f.price * f.quantity for f in every)
    later = orderstream(redis_url, url, "report", "--since", "2999-01-01")
    assert later.stdout.strip() == "no archived fills match"


def test_upgrade_reports_versions_and_errors_hide_the_password(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first = orderstream("redis://127.0.0.1:1/0", url, "archive", "--upgrade")
    assert first.returncode == 0 and "schema none -> 0003" in first.stdout, first.stderr
    again = orderstream("redis://127.0.0.1:1/0", url, "archive", "--upgrade")
    assert "schema 0003 -> 0003" in again.stdout
    secret = "s3cret-pw"
    bad = orderstream("redis://127.0.0.1:1/0", f"postgresql://u:{secret}@127.0.0.1:1/x",
                      "history")
    assert bad.returncode == 2
    assert secret not in bad.stdout + bad.stderr
    assert "u:***@127.0.0.1:1" in bad.stderr
