"""Partitions benchmark: one partition, then two partitions on two different masters of a
private three-master Redis Cluster, with the same number of worker processes, one table
row per layout, so what a second partition (and a second master) buys is visible.

    make bench-partitions           # or: python -m bench.partitions --orders 20000 --workers 2

The layouts, each measured on the same cluster in the same run (paper broker at zero
latency, one account per partition):

- 1 partition: account ``a0`` in ``{orders-0}``, served by all W worker processes;
- 2 partitions: ``a0`` in ``{orders-0}`` and ``a1`` in ``{orders-1}``, each slot moved to
  its own master (``LocalCluster.move_slot``: partition n on master n), W/2 processes each.

Every worker process serves one partition (``ORDERSTREAM_PARTITIONS_SERVE``), so both
layouts run the same W processes with the same lanes and the same CPU budget: the row of
2 partitions differs from that of 1 only in where the requests and their keys are. (One
process hosting both partitions, ``PartitionHost``, would run twice the lanes in one event
loop: its scaling would be that of the process, not of the partitions.)

Each layout starts from flushed masters and is measured as bench/scale.py measures a fleet,
with the same code (``measure_burst``): once every worker is reading, N orders are added,
split evenly over the partitions, each partition's in MULTIs of 5,000 on its own master
(a MULTI stays in one slot). Then, per layout:

- orders/s between the first and the last result of all partitions (the masters run on
  this machine, so their entry ids share its clock), and the ratio to the 1-partition row
  measured in the same round;
- worker CPU per order, summed over the processes;
- each master's redis-server CPU (``INFO cpu``) per order of the burst, in a column per
  master, the idle one's too (its cron and the cluster bus); the busiest master's share of
  one core over the burst, and the ceiling it implies: the orders/s at which that master
  would be a whole core, the orders splitting over the partitions as they did;
- p50/p99 enqueue-to-result latency at a steady --rate (split over the partitions) for
  --seconds;
- exactly once: every request answered once, nothing left pending, counted per partition.

The workers talk to a cluster (a cluster client, the MOVED-aware routing), so the
1-partition row is not bench/scale.py's 1-server row: compare rows of this table only.
--repeat N measures every layout N times, alternating. The machine's cores are printed: on
a machine with fewer cores than masters plus workers, they share them, and the ratio shows
that machine's limit rather than Redis's (the per-master CPU and the ceiling still show the
Redis side).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from devtools.redis_cluster import LocalCluster
from producer.keys import DEFAULT_PREFIX, Keys
from producer.partitions import partition_prefix

from .scale import (
    Fleet,
    Stream,
    bench_parser,
    exit_status,
    measure_burst,
    numbers,
    print_machine,
    print_rows,
)
from .throughput import order_data

MASTERS = 3  # of the private cluster: at most this many partitions, each on its own


def account(n: int) -> str:
    """The one account of partition ``n``."""
    return f"a{n}"


def config_toml(partitions: int) -> str:
    """The workers' configuration for ``partitions`` partitions, one paper account each."""
    lines = ["[redis]", "cluster = true", ""]
    for n in range(partitions):
        lines += [f"[accounts.{account(n)}]", 'broker = "paper"', ""]
    lines += ["[partitions]", f"count = {partitions}", "", "[partitions.accounts]"]
    lines += [f"{account(n)} = {n}" for n in range(partitions)]
    return "\n".join(lines) + "\n"


def place(cluster: LocalCluster, partitions: int) -> tuple[int, ...]:
    """Put partition n's slot on master n (the cluster must be empty); returns each
    partition's master, as the cluster says it is."""
    for n in range(partitions):
        cluster.move_slot(partition_prefix(DEFAULT_PREFIX, n), n)
    return tuple(cluster.master_of(partition_prefix(DEFAULT_PREFIX, n))
                 for n in range(partitions))


async def measure_layout(cluster: LocalCluster, partitions: int, workers: int, orders: int,
                         rate: int, seconds: float, batch: int, workdir: Path) -> Fleet:
    cluster.flush()
    masters = place(cluster, partitions)
    config = workdir / f"partitions-{partitions}.toml"
    config.write_text(config_toml(partitions))
    nodes = [aioredis.Redis(port=node.port) for node in cluster.nodes]
    fleet: list[WorkerProcess] = []
    try:
        for k in range(workers):  # one at a time: those started are stopped if one fails
            name = f"partitions-{partitions}-{k}"
            fleet.append(WorkerProcess(cluster.url, name, workdir / f"{name}.log",
                                       ORDERSTREAM_CONFIG=str(config),
                                       ORDERSTREAM_PARTITIONS_SERVE=str(k % partitions),
                                       ORDERSTREAM_BATCH_SIZE=str(batch),
                                       ORDERSTREAM_LOG_LEVEL="WARNING"))
        streams = [Stream(nodes[master], Keys(partition_prefix(DEFAULT_PREFIX, n)),
                          partial(order_data, account=account(n)))
                   for n, master in enumerate(masters)]
        measured = await measure_burst(fleet, streams, nodes, orders, rate, seconds)
    finally:
        for w in fleet:
            w.stop(timeout_s=15)
        for r in nodes:
            await r.aclose()
    return replace(measured, partitions=partitions, masters=masters)


async def run(orders: int = 20_000, rate: int = 200, seconds: float = 5.0,
              partitions: Sequence[int] = (1, 2), workers: int = 2, repeat: int = 3,
              batch: int = 200) -> list[list[Fleet]]:
    """Measure every layout ``repeat`` times (rounds alternate the layouts) on a private
    cluster of three masters; print the table and return it."""
    rounds: list[list[Fleet]] = []
    with tempfile.TemporaryDirectory(prefix="partitions-") as work, \
            LocalCluster(MASTERS, data_dir=Path(work) / "cluster") as cluster:
        for _ in range(repeat):
            rounds.append([await measure_layout(cluster, n, workers, orders, rate, seconds,
                                                batch, Path(work)) for n in partitions])
    print_table(rounds, orders=orders, rate=rate, seconds=seconds, batch=batch)
    return rounds


def print_table(rounds: Sequence[Sequence[Fleet]], *, orders: int, rate: int,
                seconds: float, batch: int) -> None:
    first = rounds[0][0]
    print(f"\npartitions: {orders} market orders per layout, split over its partitions, "
          f"{first.workers} worker processes (each serving one partition), batch {batch}, "
          f"paper broker at zero latency, a cluster of {MASTERS} masters; latency at "
          f"{rate}/s for {seconds}s")
    print_machine(f"{MASTERS} redis-servers")
    print_rows(rounds, first="partitions", ratio=f"x {first.partitions}",
               nodes=[f"m{i} us" for i in range(MASTERS)], width=16, notes=(
                   "2 on m0,m1: 2 partitions, the first on master m0, the second on m1; "
                   f"x {first.partitions}: orders/s over that of {first.partitions} "
                   "partition(s) in the same round;\nworker us: worker CPU per order of the "
                   "burst (summed); m0..m2 us: each master's redis-server CPU per order of "
                   "the burst;\nredis core: the busiest master's share of one core over the "
                   "burst; redis cap/s: the orders/s at which it would be a whole core"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "layout")
    parser.add_argument("--partitions", default="1,2",
                        help=f"layouts: partition counts from 1 to {MASTERS}, comma-separated "
                             "(the first is the ratios' base)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of every layout; a multiple of each count")
    args = parser.parse_args(argv)
    counts = numbers(parser, "--partitions", args.partitions)
    if not counts or min(counts) < 1 or max(counts) > MASTERS:
        parser.error(f"--partitions takes counts from 1 to {MASTERS}")
    if args.workers < 1 or any(args.workers % n for n in counts):
        parser.error(f"--workers must be a multiple of every partition count, got "
                     f"{args.workers} for {args.partitions}")
    if args.orders < 2 * max(counts):
        parser.error("--orders needs at least 2 orders per partition")
    return exit_status(run(args.orders, args.rate, args.seconds, counts, args.workers,
                           args.repeat, args.batch), "the workers and the cluster")


if __name__ == "__main__":
    sys.exit(main())
