"""What every operator command shares: connection arguments, running with a Redis
connection, and printing a view as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer import cli as producer_cli
from producer.connect import redis_client
from producer.contract import encode
from producer.keys import Keys, check_cluster_prefix


def common_args(p: argparse.ArgumentParser, *, config: bool = False) -> None:
    producer_cli.connection_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    if config:
        p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")


Command = Callable[[argparse.Namespace, aioredis.Redis, Keys], Awaitable[int]]


def operator_command(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.cluster:
            try:
                check_cluster_prefix(args.prefix)
            except ValueError as exc:
                print(f"error: --prefix: {exc}", file=sys.stderr)
                return 2

        async def connected() -> int:
            redis = redis_client(args.redis_url, cluster=args.cluster)
            try:
                return await command(args, redis, Keys(args.prefix))
            finally:
                await redis.aclose()

        try:
            return asyncio.run(connected())
        except RedisError as exc:
            print(f"error: redis: {exc}", file=sys.stderr)
            return 2

    _RUNNERS.add(run)
    return run


_RUNNERS: set[Callable[[argparse.Namespace], int]] = set()


def is_operator_command(func: object) -> bool:
    return func in _RUNNERS


def emit(args: argparse.Namespace, view: msgspec.Struct, rendered: str) -> None:
    print(encode(view).decode() if args.json else rendered)
