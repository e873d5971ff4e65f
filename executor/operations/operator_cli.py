"""What every operator command shares: connection arguments, running with a Redis
connection, and printing a view as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer import cli as producer_cli
from producer.connect import redis_client
from producer.contract import ContractError, encode
from producer.keys import Keys, check_cluster_prefix
from producer.partitions import UnknownAccount, partition_prefix

from ..config import ConfigError, Settings, load_settings


def common_args(p: argparse.ArgumentParser) -> None:
    producer_cli.connection_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables "
                   "(one per line and partition, on a partitioned deployment)")
    p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")
    p.add_argument("--partition", type=int,
                   help="one partition of a partitioned deployment (default: the "
                   "--account's, else every partition)")


Command = Callable[[argparse.Namespace, aioredis.Redis, Keys], Awaitable[int]]


def targets(args: argparse.Namespace) -> list[tuple[int | None, str]]:
    """The (partition, prefix) pairs a command acts on: the --prefix of an unpartitioned
    deployment; on a partitioned one (its configuration's ``[partitions]``), the
    --partition, else the --account's, else the partition --prefix names, else every one,
    so that a kill switch thrown without an account halts the whole deployment."""
    path = args.config or os.environ.get("ORDERSTREAM_CONFIG") or None
    settings = load_settings(path) if path is not None else None
    if settings is None or not settings.partitions.enabled:
        if args.partition is not None:
            raise ConfigError("--partition: the deployment is not partitioned "
                              "(its configuration has no partitions.count)")
        return [(None, args.prefix)]
    partitions, base = settings.partitions, settings.redis.prefix
    named = {partition_prefix(base, n): n for n in range(partitions.count)}
    account = getattr(args, "account", None)
    chosen: list[int]
    if args.partition is not None:
        if args.partition not in named.values():
            raise ConfigError(f"--partition {args.partition}: partitions are numbered 0 to "
                              f"{partitions.count - 1}")
        chosen = [args.partition]
    elif account:
        try:
            chosen = [partitions.of(account)]
        except UnknownAccount as exc:
            raise ConfigError(f"--account: {exc}") from None
    elif args.prefix in named:
        chosen = [named[args.prefix]]
    else:
        chosen = list(range(partitions.count))
    if account and partitions.accounts.get(account) not in chosen:
        raise ConfigError(f"--account {account} is in partition "
                          f"{partitions.accounts.get(account)}, not {chosen[0]}")
    return [(n, partition_prefix(base, n)) for n in chosen]


def local_accounts(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The configured accounts of the partition a command is acting on (all of them on an
    unpartitioned deployment)."""
    here = getattr(args, "partition_here", None)
    return sorted(a for a in settings.accounts
                  if here is None or settings.partitions.accounts.get(a) == here)


def operator_command(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        chosen = targets(args)
        if args.cluster and chosen == [(None, args.prefix)]:
            try:
                check_cluster_prefix(args.prefix)
            except ValueError as exc:
                print(f"error: --prefix: {exc}", file=sys.stderr)
                return 2

        async def connected() -> int:
            redis = redis_client(args.redis_url, cluster=args.cluster)
            worst = 0
            try:
                for n, prefix in chosen:
                    args.partition_here = n
                    if n is not None and not args.json:
                        print(f"== partition {n} ({prefix})", flush=True)
                    worst = max(worst, await command(args, redis, Keys(prefix)))
                return worst
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


def known_account(settings: Settings, account: str) -> None:
    """ContractError naming ``account`` when it is not configured."""
    if account not in settings.accounts:
        raise ContractError(f"account {account!r} is not configured (known: "
                            f"{', '.join(sorted(settings.accounts))})", "account")


def is_operator_command(func: object) -> bool:
    return func in _RUNNERS


def emit(args: argparse.Namespace, view: msgspec.Struct, rendered: str) -> None:
    print(as_json(args, view) if args.json else rendered)


def as_json(args: argparse.Namespace, view: msgspec.Struct) -> str:
    """The view as JSON; on a partitioned deployment wrapped with its partition, since a
    command then prints one line per partition."""
    here = getattr(args, "partition_here", None)
    if here is None:
        return encode(view).decode()
    return f'{{"partition":{here},"view":{encode(view).decode()}}}'
