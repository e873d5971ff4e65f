"""The ``orderstream`` command: the worker and operator commands, plus the producer's."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from producer import cli as producer_cli
from producer import schema

from .config import ConfigError, describe, load_settings
from .infra import logs
from .operations import archive_cli, commands
from .operations.operator_cli import is_operator_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderstream", description=__doc__)
    parser.add_argument("--log-level", choices=logs.LEVELS, type=str.upper,
                        help="default $ORDERSTREAM_LOG_LEVEL, else INFO")
    parser.add_argument("--log-format", choices=logs.FORMATS, type=str.lower,
                        help="default $ORDERSTREAM_LOG_FORMAT, else json for the worker and "
                        "text for the other commands")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a worker (REDIS_URL, ORDERSTREAM_* configure it)")
    p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("projector", help="fold positions in a process of its own (set "
                       "worker.project_positions = false on the workers)")
    p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")
    p.add_argument("--partition", type=int, help="one partition (default: every one)")
    p.set_defaults(func=_projector)

    p = sub.add_parser("config", help="print the effective configuration, secrets masked")
    p.add_argument("--config", help="TOML file (default $ORDERSTREAM_CONFIG)")
    p.set_defaults(func=_config)

    p = sub.add_parser("schema", help="print or write the JSON Schema of the wire contract")
    p.add_argument("name", nargs="?", choices=sorted(schema.SCHEMAS), default="request")
    p.add_argument("--write", action="store_true", help="regenerate producer/schema/*.json")
    p.set_defaults(func=_schema)

    producer_cli.add_commands(sub)
    commands.add_commands(sub)
    archive_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level, fmt = logs.settings(args.log_level, args.log_format, os.environ,
                                   "json" if args.func in (_worker, _projector) else "text")
    except logs.LogConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.setup(level, fmt)
    if archive_cli.is_archive_command(args.func):
        try:
            return archive_cli.run(args)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.func in (_worker, _projector, _config, _schema) or is_operator_command(args.func):
        try:
            return int(args.func(args))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return producer_cli.run(args)


def _worker(args: argparse.Namespace) -> int:
    from .host import PartitionHost
    from .worker import Worker

    settings = load_settings(args.config)

    async def run() -> None:
        worker = PartitionHost(settings) if settings.partitions.enabled else Worker(settings)
        worker.install_signal_handlers()
        await worker.run()

    asyncio.run(run())
    return 0


def _projector(args: argparse.Namespace) -> int:
    from .projection import ProjectorProcess

    settings = load_settings(args.config)

    async def run() -> None:
        process = ProjectorProcess(settings, partition=args.partition)
        process.install_signal_handlers()
        await process.run()

    asyncio.run(run())
    return 0


def _config(args: argparse.Namespace) -> int:
    print(json.dumps(describe(load_settings(args.config)), indent=2, sort_keys=True))
    return 0


def _schema(args: argparse.Namespace) -> int:
    if args.write:
        for path in schema.write_all():
            print(f"wrote {path}")
        return 0
    sys.stdout.write(schema.render(args.name))
    return 0
