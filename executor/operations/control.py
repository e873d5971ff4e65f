"""Operator commands that change shared safety state: the kill switch, trading states and
circuit breakers. Each change is written with its audit entry in one MULTI.

``orderstream kill [--account A] [--flatten]``
    Halts trading (one account, or everything), then cancels every open order through the
    workers (a ``cancel_all`` request, so it is executed, recorded and answered like any
    other). With ``--flatten`` the scope is first set to ``reducing`` instead, so that the
    market orders that close each position can pass while nothing else that adds risk
    can; once they are answered (or the wait runs out) the scope is halted.
``orderstream resume [--account A]``
    Active again.
``orderstream trading [--account A] [active|reducing|halted]``
    Show, or set, trading states.
``orderstream breaker [--account A] [--reset]``
    Show the circuit breakers, or close one.

Workers read the trading state with every batch, so a change reaches every worker with
the next request it handles.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer import cli as producer_cli
from producer.client import OrderClient
from producer.contract import OrderType, Result, Side
from producer.keys import Keys
from producer.replies import text

from ..config import load_settings
from ..infra import audit
from ..infra.streams import positions_caught_up
from ..model.positions import Position, decode_position, split_key
from ..safety import breaker, trading
from ..safety.breaker import CircuitState
from ..safety.trading import GLOBAL, TradingState
from . import snapshot
from .operator_cli import common_args, emit, local_accounts, operator_command

DEFAULT_WAIT_S = 30.0


class Close(msgspec.Struct, frozen=True):
    """One market order that flattens a position."""

    account: str
    symbol: str
    side: Side
    quantity: Decimal


class KillReport(msgspec.Struct, kw_only=True):
    scope: str
    state: TradingState
    cancelled: list[str] = []
    cancel_error: str | None = None
    closes: list[Close] = []
    close_results: list[Result] = []
    ok: bool = True


def flatten_plan(positions: dict[str, Position], account: str | None) -> list[Close]:
    """The market orders that bring every position in scope to flat. Pure."""
    plan = []
    for key in sorted(positions):
        position = positions[key]
        acct, symbol = split_key(key)
        if (account is not None and acct != account) or position.quantity == 0:
            continue
        side = Side.SELL if position.quantity > 0 else Side.BUY
        plan.append(Close(acct, symbol, side, abs(position.quantity)))
    return plan


async def set_state(redis: aioredis.Redis, keys: Keys, scope: str, state: TradingState,
                    why: str, **details: Any) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.trading, scope, state.value)
        audit.add(pipe, keys, audit.AuditEntry(
            kind="trading_state", scope=scope, at=int(time.time() * 1000),
            by=audit.operator(), details={"state": state.value, "why": why, **details}))
        await pipe.execute()


async def kill(redis: aioredis.Redis, keys: Keys, client: OrderClient, *,
               account: str | None, flatten: bool, wait_s: float = DEFAULT_WAIT_S) -> KillReport:
    scope = account or GLOBAL
    first = TradingState.REDUCING if flatten else TradingState.HALTED
    await set_state(redis, keys, scope, first, "kill", flatten=flatten)
    report = KillReport(scope=scope, state=first)
    sub = await client.cancel_all(account=account)
    try:
        result = await client.wait_result(sub.request_id, wait_s)
        report.cancelled = list(result.cancelled)
        if not result.ok:
            report.cancel_error = f"{result.reason_code}: {result.reason}"
            report.ok = False
    except TimeoutError:
        report.cancel_error = f"no result for the cancel_all within {wait_s:.0f}s"
        report.ok = False
    if flatten:
        if not await positions_caught_up(redis, keys, wait_s):
            report.ok = False
        raw, _ = await snapshot.positions(redis, keys)
        held = {k: decode_position(v) for k, v in raw.items()}
        report.closes = flatten_plan(held, account)
        subs = [await client.place(c.symbol, c.side, OrderType.MARKET, c.quantity,
                                   account=c.account, reduce_only=True,
                                   strategy_id="kill-switch")
                for c in report.closes]
        try:
            answers = await client.wait_results([s.request_id for s in subs], wait_s)
            report.close_results = [answers[s.request_id] for s in subs]
            report.ok = report.ok and all(r.ok for r in report.close_results)
        except TimeoutError:
            report.ok = False
        await set_state(redis, keys, scope, TradingState.HALTED, "kill: flattened")
        report.state = TradingState.HALTED
    return report


def render_kill(report: KillReport) -> str:
    lines = [f"trading {report.scope}: {report.state}",
             f"cancelled {len(report.cancelled)} open orders"
             + (f" ({report.cancel_error})" if report.cancel_error else "")]
    for close, result in zip(report.closes, report.close_results, strict=False):
        lines.append(f"close {close.account} {close.symbol} {close.side} {close.quantity}: "
                     f"{result.status}" + (f" ({result.reason})" if result.reason else ""))
    if len(report.close_results) < len(report.closes):
        lines.append(f"{len(report.closes) - len(report.close_results)} closing orders "
                     "unanswered")
    if not report.ok:
        lines.append("NOT COMPLETE: check `orderstream orders` and `orderstream positions`")
    return "\n".join(lines)


class TradingView(msgspec.Struct):
    states: dict[str, TradingState]  # as set, per scope
    effective: dict[str, TradingState]  # per configured account


class BreakerView(msgspec.Struct):
    breakers: dict[str, dict[str, str]]


def add_commands(sub: Any) -> None:
    p = sub.add_parser("kill", help="halt trading, cancel every open order, and with "
                       "--flatten close every position")
    common_args(p)
    p.add_argument("--account", help="one account (default: everything)")
    p.add_argument("--flatten", action="store_true", help="close positions with market "
                   "orders")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT_S,
                   help="seconds to wait for each step's results")
    producer_cli.signing_args(p)  # where workers require signed requests
    p.set_defaults(func=operator_command(_kill))

    p = sub.add_parser("resume", help="set trading active again")
    common_args(p)
    p.add_argument("--account", help="one account (default: the global state)")
    p.set_defaults(func=operator_command(_resume))

    p = sub.add_parser("trading", help="show or set trading states")
    common_args(p)
    p.add_argument("--account", help="one account (default: the global state)")
    p.add_argument("state", nargs="?", choices=[s.value for s in TradingState])
    p.set_defaults(func=operator_command(_trading))

    p = sub.add_parser("breaker", help="show the circuit breakers, or --reset one")
    common_args(p)
    p.add_argument("--account")
    p.add_argument("--reset", action="store_true", help="close the account's breaker")
    p.set_defaults(func=operator_command(_breaker))


async def _kill(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    try:
        signing = producer_cli.signing_key(args)
    except producer_cli.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = OrderClient(redis, keys.prefix, **signing)
    report = await kill(redis, keys, client, account=args.account, flatten=args.flatten,
                        wait_s=args.wait)
    emit(args, report, render_kill(report))
    return 0 if report.ok else 1


async def _resume(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    scope = args.account or GLOBAL
    await set_state(redis, keys, scope, TradingState.ACTIVE, "resume")
    print(f"trading {scope}: active")
    return 0


async def _trading(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    if args.state is not None:
        await set_state(redis, keys, args.account or GLOBAL, TradingState(args.state), "set")
    raw: Any = await redis.hgetall(keys.trading)
    states = {text(k): trading.parse(v) for k, v in raw.items()}
    accounts = local_accounts(args, load_settings(args.config))
    view = TradingView(states, {a: trading.effective(raw, a) for a in accounts})
    rows = [f"{scope:<16} {state}" for scope, state in sorted(states.items())] or ["(all active)"]
    rows += [f"account {a}: effective {s}" for a, s in view.effective.items()]
    emit(args, view, "\n".join(rows))
    return 0


async def _breaker(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    accounts = [args.account] if args.account else local_accounts(args, settings)
    if args.reset:
        if not args.account:
            print("error: --reset needs --account", flush=True)
            return 2
        # The reset is the breaker's own script; its audit entry follows it.
        await breaker.Breaker(redis, keys, settings.breaker).reset(args.account)
        async with redis.pipeline(transaction=True) as pipe:
            audit.add(pipe, keys, audit.AuditEntry(
                kind="breaker_reset", scope=args.account, at=int(time.time() * 1000),
                by=audit.operator()))
            await pipe.execute()
    states = await breaker.states(redis, keys, accounts)
    view = BreakerView(states)
    rows = [f"{a:<16} {f.get('state', CircuitState.CLOSED)}  trips={f.get('trips', '0')} "
            f"consecutive_failures={f.get('consecutive', '0')}" for a, f in states.items()]
    emit(args, view, "\n".join(rows))
    return 0
