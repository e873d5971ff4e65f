"""Client benchmark: what one command costs the worker's process, through the worker's Redis
client (executor/infra/connection.py ``connect``: commands packed in C and sent at once,
infra/packing.py, from a pool without redis-py's per-command bookkeeping, infra/pool.py)
beside redis-py's own client with the same socket timeout, and beside redis-py's client
with the worker's packing only (``packed``), in the same run.

    python -m bench.client --commands 5000 --repeat 3

Each round sends --commands GETs of a 1 kB value one after the other (each waits for its
reply, as a batch at ordinary load waits for each of its round trips) through one client,
then the same through each of the others, alternating; it prints the process's CPU time and the
wall time per command, and their ratio to redis-py's in that round.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis

from devtools.redis_server import RedisServer
from executor.infra.connection import RedisSettings, connect
from executor.infra.packing import use_c_packing

SOCKET_TIMEOUT_S = RedisSettings().socket_timeout_s


async def per_command(client: aioredis.Redis, n: int) -> tuple[float, float]:
    """CPU and wall microseconds per GET over ``n`` sequential GETs."""
    await client.set("bench:client", b"v" * 1000)
    await client.get("bench:client")  # connected, scripts and all, before timing
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await client.get("bench:client")
    return ((time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6)


async def run(commands: int, repeat: int = 1, url: str | None = None
              ) -> list[dict[str, tuple[float, float]]]:
    server = None
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    rounds: list[dict[str, tuple[float, float]]] = []
    try:
        for _ in range(repeat):
            figures: dict[str, tuple[float, float]] = {}
            for name in ("redis-py", "packed", "worker"):
                client = (connect(RedisSettings(url=url)) if name == "worker" else
                          aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S))
                if name == "packed":
                    use_c_packing(client)
                try:
                    figures[name] = await per_command(client, commands)
                finally:
                    await client.aclose()
            rounds.append(figures)
    finally:
        if server is not None:
            server.stop()
    print(f"\nclient: {commands} sequential GETs of 1 kB per client and round, socket timeout "
          f"{SOCKET_TIMEOUT_S} s")
    print(f"{'':<14}{'CPU us/cmd':>12}{'wall us/cmd':>13}{'CPU ratio':>11}{'wall ratio':>12}")
    for k, figures in enumerate(rounds, 1):
        base_cpu, base_wall = figures["redis-py"]
        for name, (cpu, wall) in figures.items():
            print(f"{name + ' ' + str(k):<14}{cpu:>12.1f}{wall:>13.1f}"
                  f"{cpu / base_cpu:>11.2f}{wall / base_wall:>12.2f}")
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.commands, args.repeat))


if __name__ == "__main__":
    main()
