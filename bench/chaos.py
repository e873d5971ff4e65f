"""Chaos benchmark: the chaos test, bigger (50,000 orders, a kill every few seconds), on a
private redis-server. Prints lost / duplicated / sent-twice / pending counts.

    python -m bench.chaos [--orders 50000] [--workers 3] [--kill-every 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from devtools.chaos import Chaos, ChaosConfig
from devtools.redis_server import RedisServer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--publish-s", type=float, default=60.0)
    p.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 4.0))
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    cfg = ChaosConfig(orders=args.orders, workers=args.workers, publish_s=args.publish_s,
                      kill_every_s=tuple(args.kill_every), kill_for_s=args.publish_s + 10,
                      settle_timeout_s=600, seed=args.seed)
    with (tempfile.TemporaryDirectory(prefix="chaos-") as tmp,
          RedisServer(data_dir=Path(tmp) / "redis") as server):
        report = asyncio.run(Chaos(server.url, cfg, Path(tmp), say=print).run())
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
