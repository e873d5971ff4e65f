"""The archive of a partitioned deployment on a real Redis Cluster (three masters, the two
partitions on two of them): one archive process stores both partitions' streams, each row
under its partition's key prefix, and registers with each partition's readers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from redis.asyncio.cluster import RedisCluster

from devtools.chaos import partitions_toml
from executor.archive import rows, tables
from executor.archive.store import engine
from executor.host import PartitionHost
from executor.infra.streams import positions_caught_up
from executor.model.positions import decode_position
from producer.client import OrderClient
from producer.contract import decode_events
from producer.keys import Keys

from .conftest import serving
from .test_partitions import P0, P1, cluster, settings  # noqa: F401 - the cluster fixture

ROOT = Path(__file__).resolve().parents[2]


async def test_one_archive_stores_every_partition_under_its_prefix(
        cluster_url: str, cluster: RedisCluster, tmp_path: Path) -> None:  # noqa: F811
    s = settings(cluster_url, tmp_path)
    async with serving(PartitionHost(s)), \
            OrderClient.from_url(cluster_url, P0, cluster=True) as zero, \
            OrderClient.from_url(cluster_url, P1, cluster=True) as one:
        subs0 = [await zero.place("BTCUSDT", "buy", "market", "0.010", account="alpha")
                 for _ in range(5)]
        subs1 = [await one.place("ETHUSDT", "sell", "market", "0.5", account="beta")
                 for _ in range(3)]
        await zero.wait_results([x.request_id for x in subs0], 20)
        await one.wait_results([x.request_id for x in subs1], 20)
        for prefix in (P0, P1):
            assert await positions_caught_up(cluster, Keys(prefix), 10, poll_s=0.05)
    config = tmp_path / "partitions.toml"
    config.write_text(partitions_toml(["alpha", "beta"]))
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    env = {**os.environ, "REDIS_URL": cluster_url, "ORDERSTREAM_REDIS_CLUSTER": "true",
           "ORDERSTREAM_ARCHIVE_URL": url}
    for args in (["--init"], ["--once"]):
        done = subprocess.run([sys.executable, "-m", "executor", "archive", "--config",
                               str(config), *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
    db = engine(url)
    e = tables.events.c
    try:
        for prefix, n in ((P0, 5), (P1, 3)):
            keys = Keys(prefix)
            async with db.connect() as conn:
                stored = list((await conn.execute(
                    sa.select(e.entry_id).where(e.source == prefix)
                    .order_by(e.entry_ms, e.entry_seq, e.entry_index))).scalars())
                orders = (await conn.execute(sa.select(sa.func.count()).select_from(
                    tables.orders).where(tables.orders.c.source == prefix))).scalar()
            # A row per event: an entry's several (event v2) each under its id.
            assert stored == [i.decode() for i, f in await cluster.xrange(keys.events)
                              for _ in decode_events(f[b"data"])]
            assert orders == n
            last = stored[-1].encode()
            assert await cluster.hget(keys.events_readers, "archive") == last
            assert await cluster.hget(keys.completed_readers, "archive") is not None
        async with db.connect() as conn:
            archived = {(r["account"], r["symbol"]): rows.position_from_row(dict(r)) for r in
                        (await conn.execute(sa.select(tables.positions))).mappings()}
    finally:
        await db.dispose()
    folded = {}
    for prefix in (P0, P1):
        for raw in (await cluster.hgetall(Keys(prefix).positions)).values():
            p = decode_position(raw)
            folded[(p.account, p.symbol)] = p
    assert archived == folded and set(folded) == {("alpha", "BTCUSDT"), ("beta", "ETHUSDT")}
