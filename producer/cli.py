"""Producer commands of ``orderstream``: submit, cancel, amend, cancel-all, order, watch,
demo.

They need only Redis: ``--redis-url`` (default ``$REDIS_URL``) and ``--prefix`` (default
``$ORDERSTREAM_REDIS_PREFIX`` or ``orders``), or ``--config`` (default
``$ORDERSTREAM_CONFIG``), the workers' TOML file, whose ``redis.prefix`` and
``[partitions]`` say where each ``--account``'s requests go. Where the workers require
signed requests, the publishing commands sign with ``--key-id`` (default
``$ORDERSTREAM_KEY_ID``) and the secret in ``$ORDERSTREAM_KEY_SECRET`` or in ``--key-file``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from .client import OrderClient, Submitted
from .connect import CLUSTER_ENV, env_flag
from .contract import (
    Action,
    Algo,
    AlgoStrategy,
    ContractError,
    Event,
    OrderStatus,
    OrderType,
    Request,
    Result,
    Side,
    TimeInForce,
    encode,
    parse_decimal,
)
from .ids import new_client_order_id
from .keys import DEFAULT_PREFIX
from .partitions import Deployment, deployment_of, load_deployment
from .signing import key_file_secret

DEFAULT_URL = "redis://localhost:6379/0"
CONFIG_ENV = "ORDERSTREAM_CONFIG"
PREFIX_ENV = "ORDERSTREAM_REDIS_PREFIX"
KEY_ID_ENV = "ORDERSTREAM_KEY_ID"
KEY_SECRET_ENV = "ORDERSTREAM_KEY_SECRET"


class UsageError(Exception):
    """A command line that cannot work (exit 2)."""


def add_commands(sub: Any) -> None:
    """Register the producer subcommands on an argparse subparsers object."""
    p = sub.add_parser("submit", help="publish a place request and wait for its result")
    connection_args(p, deployment=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    p.add_argument("--type", default="market",
                   choices=["market", "limit", "limit_maker", "stop", "stop_limit",
                            "take_profit", "take_profit_limit", "trailing_stop",
                            "trailing_stop_limit", "market_if_touched", "limit_if_touched"])
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--quantity", help="decimal, e.g. 0.010")
    amount.add_argument("--quote-quantity",
                        help="market orders: the quote amount to spend or receive")
    p.add_argument("--price")
    p.add_argument("--stop-price")
    p.add_argument("--trailing-offset", help="trailing types: how far the trigger trails")
    p.add_argument("--trailing-offset-type", choices=["price", "bps", "percent"])
    p.add_argument("--activation-price", help="trailing types: start trailing at this price")
    p.add_argument("--limit-offset", help="trailing_stop_limit: the limit's distance from "
                   "the trigger")
    p.add_argument("--display-quantity", help="limit types: an iceberg's visible quantity")
    p.add_argument("--time-in-force", choices=["gtc", "ioc", "fok", "gtd"])
    p.add_argument("--expire-at", type=int, help="epoch ms, with --time-in-force gtd")
    p.add_argument("--client-order-id")
    p.add_argument("--account")
    p.add_argument("--deadline-ms", type=int, help="fail with `expired` if not executed within")
    p.add_argument("--strategy-id")
    p.add_argument("--reduce-only", action="store_true",
                   help="only reduce the position; denied if it would increase it")
    _wait_args(p)
    signing_args(p)
    p.set_defaults(func=_submit)

    p = sub.add_parser("cancel", help="publish a cancel request for one order")
    connection_args(p, deployment=True)
    p.add_argument("client_order_id")
    p.add_argument("--account")
    _wait_args(p)
    signing_args(p)
    p.set_defaults(func=_cancel)

    p = sub.add_parser("amend", help="change a working order's price, stop price or total "
                       "quantity (cancel-replace)")
    connection_args(p, deployment=True)
    p.add_argument("client_order_id")
    p.add_argument("--price")
    p.add_argument("--stop-price")
    p.add_argument("--quantity", help="the new total quantity, fills so far included")
    p.add_argument("--account")
    _wait_args(p)
    signing_args(p)
    p.set_defaults(func=_amend)

    p = sub.add_parser("cancel-all", help="cancel every open order (optionally filtered)")
    connection_args(p, deployment=True)
    p.add_argument("--symbol")
    p.add_argument("--account")
    _wait_args(p)
    signing_args(p)
    p.set_defaults(func=_cancel_all)

    p = sub.add_parser("order", help="show one order's current state, from its record "
                       "(exit 1 when there is none)")
    connection_args(p, deployment=True)
    p.add_argument("client_order_id")
    p.add_argument("--account", help="the order's account: on a partitioned deployment, "
                   "its partition holds the record")
    p.add_argument("--json", action="store_true", help="print the order as JSON")
    p.set_defaults(func=_order)

    p = sub.add_parser("watch", help="follow results (and with --events, order events) live")
    connection_args(p, deployment=True)
    p.add_argument("--events", action="store_true", help="also show every state transition")
    p.add_argument("--from-start", action="store_true", help="replay from the streams' start")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--limit", type=int, default=0, help="stop after this many items")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--account", help="partitioned: follow the partition holding this "
                       "account (every account of it)")
    which.add_argument("--partition", type=int, help="partitioned: follow this partition")
    p.set_defaults(func=_watch)

    p = sub.add_parser("demo", help="publish demo orders of several types and print results")
    connection_args(p, deployment=True)
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0)
    signing_args(p)
    p.set_defaults(func=_demo)


def connection_args(p: argparse.ArgumentParser, *, deployment: bool = False) -> None:
    """--redis-url, --prefix and --cluster; with ``deployment`` (the producer commands) also
    --config, which names the deployment (``deployment``). Operator commands work on one
    prefix and add their own --config (the settings), so they take the default."""
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_URL))
    if deployment:
        p.add_argument("--prefix", help=f"key prefix of an unpartitioned deployment (default "
                       f"${PREFIX_ENV}, else redis.prefix of --config, else {DEFAULT_PREFIX})")
        p.add_argument("--config", default=os.environ.get(CONFIG_ENV),
                       help=f"the workers' TOML file (default ${CONFIG_ENV}; '' for none): "
                       "its redis.prefix and [partitions] say where each account's requests "
                       "go")
    else:
        p.add_argument("--prefix", default=os.environ.get(PREFIX_ENV, DEFAULT_PREFIX))
    p.add_argument("--cluster", action="store_true",
                   default=env_flag(os.environ.get(CLUSTER_ENV)),
                   help=f"--redis-url names a node of a Redis Cluster (default ${CLUSTER_ENV}); "
                   "the prefix must then hold a hash tag, e.g. {orders}")


def signing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-id", default=os.environ.get(KEY_ID_ENV),
                   help=f"sign requests with this producer key (default ${KEY_ID_ENV}); the "
                   f"secret comes from ${KEY_SECRET_ENV} or --key-file")
    p.add_argument("--key-file", help="file holding the key's secret")


def signing_key(args: argparse.Namespace) -> dict[str, Any]:
    """OrderClient's key_id and secret from the command line and environment."""
    key_id: str | None = args.key_id or None
    secret: bytes | None = None
    if args.key_file:
        try:
            with open(args.key_file, "rb") as f:
                secret = key_file_secret(f.read())
        except OSError as exc:
            raise UsageError(f"cannot read --key-file {args.key_file}: {exc.strerror}") from None
    elif os.environ.get(KEY_SECRET_ENV):
        secret = os.environ[KEY_SECRET_ENV].encode()
    if key_id is None:
        if args.key_file:
            raise UsageError(f"--key-file needs --key-id (or ${KEY_ID_ENV})")
        return {}  # unsigned: a secret in the environment alone signs nothing
    if not secret:
        raise UsageError(f"--key-id {key_id} needs its secret: set ${KEY_SECRET_ENV} or "
                         "pass --key-file")
    return {"key_id": key_id, "secret": secret}


def deployment(args: argparse.Namespace) -> str | Deployment:
    """Where the requests go: the deployment of --config, or the plain --prefix."""
    env_prefix = os.environ.get(PREFIX_ENV) or None
    if not args.config:
        return str(args.prefix or env_prefix or DEFAULT_PREFIX)
    try:
        found = load_deployment(args.config)
        if env_prefix is not None and env_prefix != found.prefix:
            # The workers take this variable over the file's redis.prefix: so do we.
            found = deployment_of(env_prefix, found.partitions)
    except ValueError as exc:
        raise UsageError(f"--config {args.config}: {exc}") from None
    if args.prefix is not None and args.prefix != found.prefix:
        # Which one the workers read is unknown here: publishing to either could strand
        # the requests where no worker looks.
        raise UsageError(f"--prefix {args.prefix} conflicts with --config {args.config} "
                         f"(prefix {found.prefix}): give one, or --config '' for none")
    return found


def _client(args: argparse.Namespace, *, signed: bool = True) -> OrderClient:
    where = deployment(args)
    try:
        return OrderClient.from_url(args.redis_url, where, cluster=args.cluster,
                                    **(signing_key(args) if signed else {}))
    except ValueError as exc:  # a prefix a cluster cannot hold in one slot
        raise UsageError(f"--{exc}") from None


def _wait_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true", help="do not wait for the result")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        return int(asyncio.run(args.func(args)))
    except ContractError as exc:
        print(f"error: invalid request: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


async def _publish_and_report(args: argparse.Namespace, client: OrderClient,
                              submitted: Submitted) -> int:
    print(f"published request {submitted.request_id}"
          + (f" (client_order_id {submitted.client_order_id})"
             if submitted.client_order_id else "")
          + (f" to {submitted.prefix}:pending" if client.partitioned else ""), file=sys.stderr)
    if args.no_wait:
        return 0
    result = await client.wait_result(submitted, args.timeout)
    print(encode(result).decode() if args.json else format_result(result))
    return 0 if result.ok else 1


async def _submit(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        deadline = None
        if args.deadline_ms is not None:
            deadline = int(time.time() * 1000) + args.deadline_ms
        submitted = await client.place(
            args.symbol, args.side, args.type, args.quantity,
            quote_quantity=args.quote_quantity, price=args.price, stop_price=args.stop_price,
            trailing_offset=args.trailing_offset,
            trailing_offset_type=args.trailing_offset_type,
            activation_price=args.activation_price, limit_offset=args.limit_offset,
            display_quantity=args.display_quantity, time_in_force=args.time_in_force,
            expire_at=args.expire_at, client_order_id=args.client_order_id,
            account=args.account, deadline=deadline, strategy_id=args.strategy_id,
            reduce_only=args.reduce_only)
        return await _publish_and_report(args, client, submitted)


async def _cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        submitted = await client.cancel(args.client_order_id, account=args.account)
        return await _publish_and_report(args, client, submitted)


async def _amend(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        submitted = await client.amend(args.client_order_id, price=args.price,
                                       stop_price=args.stop_price, quantity=args.quantity,
                                       account=args.account)
        return await _publish_and_report(args, client, submitted)


async def _cancel_all(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        submitted = await client.cancel_all(symbol=args.symbol, account=args.account)
        return await _publish_and_report(args, client, submitted)


async def _watch(args: argparse.Namespace) -> int:
    seen = 0
    async with _client(args, signed=False) as client:
        if client.partitioned and args.account is None and args.partition is None:
            raise UsageError(f"{client.deployment.prefix} has "
                             f"{client.deployment.partitions.count} partitions: watch one, "
                             "with --account or --partition")
        try:
            client.partition_keys(account=args.account, partition=args.partition)
        except ValueError as exc:  # a partition it does not have, an account in none
            raise UsageError(str(exc)) from None
        since = "0-0" if args.from_start else "$"
        async for _stream, item in client.follow(events=args.events, since=since,
                                                 account=args.account,
                                                 partition=args.partition):
            line = (encode(item).decode() if args.json
                    else format_event(item) if isinstance(item, Event) else format_result(item))
            print(line, flush=True)
            seen += 1
            if args.limit and seen >= args.limit:
                break
    return 0


async def _order(args: argparse.Namespace) -> int:
    async with _client(args, signed=False) as client:
        order = await client.order(args.client_order_id, args.account)
    if order is None:
        print(f"no order {args.client_order_id} (never made, or final for longer than the "
              "workers keep records)", file=sys.stderr)
        return 1
    print(encode(order).decode() if args.json else format_order(order))
    return 0


def format_order(o: OrderStatus) -> str:
    spec = o.spec
    parts = [f"{o.state.value.upper():<16}", f"{o.client_order_id:<32}",
             f"{spec.symbol} {spec.side} {spec.type} {spec.quantity or spec.quote_quantity}"]
    if o.filled_quantity:
        parts.append(f"filled {o.filled_quantity} @ {o.average_price}")
    if o.broker_order_id:
        parts.append(f"broker id {o.broker_order_id}")
    parts.append(f"(request {o.request_id})")
    if o.reason:
        parts.append(f"[{o.reason_code or '-'}] {o.reason}")
    return "  ".join(parts)


def format_result(r: Result) -> str:
    parts = [f"{r.status.value.upper():<16}", f"{r.action.value:<10}",
             f"{r.client_order_id or '-':<32}"]
    if r.symbol:
        parts.append(f"{r.symbol} {r.side or ''} {r.type or ''} {r.quantity or ''}".rstrip())
    if r.filled_quantity:
        fees = " + ".join(f"{v} {a}" for a, v in sorted(r.commissions.items())) or (
            str(r.commission))
        parts.append(f"filled {r.filled_quantity} @ {r.average_price} fee {fees}")
    if r.cancelled:
        parts.append(f"cancelled {len(r.cancelled)}: {', '.join(r.cancelled)}")
    if r.reason_code:
        parts.append(f"[{r.reason_code}] {r.reason}")
    latency = r.completed_at - r.enqueued_at if r.enqueued_at else 0
    parts.append(f"({latency} ms)")
    return "  ".join(parts)


def format_event(e: Event) -> str:
    prev = e.prev_state.value if e.prev_state else "-"
    text = f"EVENT  {e.client_order_id:<32} #{e.seq} {prev} -> {e.state.value}"
    if e.fill is not None:
        text += f"  fill {e.fill.quantity} @ {e.fill.price}"
    if e.reason_code:
        text += f"  [{e.reason_code}] {e.reason}"
    return text


def demo_scenario(now_ms: int) -> list[Request | dict[str, Any]]:
    """A tour of the contract with fresh client ids; a dict is a raw (deliberately
    malformed) entry, as a producer in another language might write it."""
    cid = new_client_order_id
    d = parse_decimal
    resting = cid("BTCUSDT", Side.BUY, now_ms)
    buy, sell = Side.BUY, Side.SELL
    return [
        Request(client_order_id=cid("BTCUSDT", buy, now_ms), symbol="BTCUSDT", side=buy,
                type=OrderType.MARKET, quantity=d("0.010"), strategy_id="demo"),
        Request(client_order_id=resting, symbol="BTCUSDT", side=buy, type=OrderType.LIMIT,
                quantity=d("0.020"), price=d("45000"), strategy_id="demo"),
        Request(client_order_id=cid("ETHUSDT", sell, now_ms), symbol="ETHUSDT", side=sell,
                type=OrderType.LIMIT, quantity=d("1.5"), price=d("2990"),
                time_in_force=TimeInForce.IOC),
        Request(client_order_id=cid("ETHUSDT", buy, now_ms), symbol="ETHUSDT", side=buy,
                type=OrderType.LIMIT, quantity=d("0.5"), price=d("2500"),
                time_in_force=TimeInForce.FOK),
        Request(client_order_id=cid("BTCUSDT", sell, now_ms), symbol="BTCUSDT", side=sell,
                type=OrderType.STOP, quantity=d("0.010"), stop_price=d("48000")),
        # A bracket: once it fills, the worker places its exit (an oco, reduce_only).
        Request(client_order_id=cid("EUR_USD", buy, now_ms), symbol="EUR_USD", side=buy,
                type=OrderType.MARKET, quantity=d("10000"), take_profit=d("1.09500"),
                stop_loss=d("1.07500")),
        # A TWAP: the worker sends 0.004 BTC as four market orders, one a second.
        Request(client_order_id=cid("BTCUSDT", buy, now_ms), symbol="BTCUSDT", side=buy,
                type=OrderType.MARKET, quantity=d("0.004"), strategy_id="demo",
                algo=Algo(strategy=AlgoStrategy.TWAP, horizon_ms=4_000, slices=4)),
        Request(action=Action.CANCEL, client_order_id=resting),
        {"data": '{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"-1"}'},
        Request(client_order_id=cid("ETHUSDT", sell, now_ms), symbol="ETHUSDT", side=sell,
                type=OrderType.TAKE_PROFIT_LIMIT, quantity=d("0.2"), price=d("3300"),
                stop_price=d("3290")),
        Request(client_order_id=cid("DOGEUSDT", buy, now_ms), symbol="DOGEUSDT", side=buy,
                type=OrderType.MARKET, quantity=d("100")),
        Request(client_order_id=cid("BTCUSDT", buy, now_ms), symbol="BTCUSDT", side=buy,
                type=OrderType.MARKET, quantity=d("0.003"), deadline=now_ms - 1),
        Request(action=Action.CANCEL_ALL, symbol="ETHUSDT"),
    ]


def demo_requests(count: int, now_ms: int) -> Iterator[Request | dict[str, Any]]:
    produced = 0
    while produced < count:
        for item in demo_scenario(now_ms)[: count - produced]:
            produced += 1
            yield item


async def _demo(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    now = int(time.time() * 1000)
    async with _client(args) as client:
        ids: list[Submitted] = []
        for item in demo_requests(args.count, now):
            if isinstance(item, dict):
                keys = client.keys_for(None)  # it names no account
                fields: Any = client.entry(item["data"].encode())
                entry: Any = await client.redis.xadd(keys.pending, fields)
                ids.append(Submitted(entry.decode() if isinstance(entry, bytes) else entry,
                                     None, keys.prefix))
            else:
                ids.append(await client.publish(item))
            if not args.quiet:
                # One at a time, so the cancel sees the order it cancels already resting.
                result = await client.wait_result(ids[-1], args.timeout)
                print(format_result(result), file=out, flush=True)
        if args.quiet:
            await client.wait_results(ids, args.timeout)
    if not args.quiet:
        print(f"\n{len(ids)} requests, {len(ids)} results", file=out)
    return 0
