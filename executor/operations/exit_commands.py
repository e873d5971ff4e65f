"""``orderstream sl-tp``: stop-loss and take-profit on a position.

``sl-tp set --account A --symbol S [--stop-loss P] [--take-profit P] [--trailing OFFSET
[--trailing-type price|bps|percent]] [--close market|limit]`` protects the position in S
on A: the worker emulating the account closes it with a ``reduce_only`` order when the
price reaches a level (background/exits.py). Refused (exit 2, nothing written) without a
position, without a level, with a level not a positive decimal, or when requests must be
signed (``[auth] keys``: a worker cannot sign the closing order). A level the price has
already reached is found by the worker, which removes the exit unfired and logs why.

``sl-tp clear --account A --symbol S`` removes it; ``sl-tp show [--account A]`` lists them.
Each change is one MULTI with its audit entry (kind ``sl_tp_set`` / ``sl_tp_clear``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.contract import (
    ContractError,
    TrailingOffsetType,
    WireDecimal,
    decoder,
    wire,
)
from producer.keys import Keys
from producer.replies import text

from ..config import Settings, load_settings
from ..infra import audit
from ..infra.clock import wall_clock_ms
from ..model.exits import UNSIGNABLE, Exit
from ..safety.exits import remove_exit, store_exit
from .operator_cli import as_json, known_account, local_accounts

_exit = decoder(Exit)


class ExitRow(msgspec.Struct, kw_only=True):
    account: str
    symbol: str
    exit: Exit


class ExitsView(msgspec.Struct, kw_only=True):
    exits: list[ExitRow]


def add_commands(sub: Any, wrap: Callable[..., Any],
                 common: Callable[..., None]) -> None:
    p = sub.add_parser("sl-tp", help="stop-loss / take-profit on positions, closed by the "
                       "workers with a reduce_only order")
    cmds = p.add_subparsers(dest="sl_tp_command", required=True)
    s = cmds.add_parser("set", help="protect a position; audited")
    common(s)
    s.add_argument("--account", required=True)
    s.add_argument("--symbol", required=True)
    s.add_argument("--stop-loss", dest="stop_loss")
    s.add_argument("--take-profit", dest="take_profit")
    s.add_argument("--trailing", help="a trailing stop this far from the best price since")
    s.add_argument("--trailing-type", dest="trailing_type", default="price",
                   choices=[t.value for t in TrailingOffsetType])
    s.add_argument("--close", choices=["market", "limit"], default="market",
                   help="the closing order: market, or a limit at the level (default market)")
    s.set_defaults(func=wrap(_set))
    c = cmds.add_parser("clear", help="remove a position's stop-loss / take-profit; audited")
    common(c)
    c.add_argument("--account", required=True)
    c.add_argument("--symbol", required=True)
    c.set_defaults(func=wrap(_clear))
    v = cmds.add_parser("show", help="the stop-loss / take-profit of every position")
    common(v)
    v.add_argument("--account")
    v.set_defaults(func=wrap(_show))


def _level(name: str, value: str | None) -> WireDecimal | None:
    if value is None:
        return None
    try:
        level = Decimal(value)
    except InvalidOperation:
        raise ContractError(f"{name} must be a decimal, got {value!r}", name) from None
    if not level.is_finite() or level <= 0:
        raise ContractError(f"{name} must be a positive decimal, got {value}", name)
    return wire(level)


def exit_of(stop_loss: str | None, take_profit: str | None, trailing: str | None,
            trailing_type: str, close: str, *, now: int, by: str) -> Exit:
    """The exit these arguments ask for; ContractError naming the argument otherwise."""
    exit = Exit(stop_loss=_level("stop_loss", stop_loss),
                take_profit=_level("take_profit", take_profit),
                trailing_offset=_level("trailing", trailing),
                trailing_offset_type=TrailingOffsetType(trailing_type),
                close="limit" if close == "limit" else "market", set_at=now, set_by=by)
    if exit.stop_loss is None and exit.take_profit is None and exit.trailing_offset is None:
        raise ContractError("give --stop-loss, --take-profit or --trailing", "stop_loss")
    if exit.close == "limit" and exit.trailing_offset is not None:
        raise ContractError("--close limit takes no --trailing (its limit would be the "
                            "moving trigger): use a market close", "close")
    return exit


async def set_exit(redis: aioredis.Redis, keys: Keys, settings: Settings, account: str,
                   symbol: str, exit: Exit) -> Exit:
    """Store ``exit`` for the position in ``symbol`` on ``account``, audited. ContractError
    (nothing written) when the account is unknown, there is no position, or requests must
    be signed."""
    known_account(settings, account)
    if settings.auth.keys:
        raise ContractError(UNSIGNABLE, "account")
    await store_exit(redis, keys, account, symbol, exit)
    return exit


async def exits_view(redis: aioredis.Redis, keys: Keys, accounts: list[str]) -> ExitsView:
    rows: list[ExitRow] = []
    for account in accounts:
        raw: Any = await redis.hgetall(keys.exits(account))
        for symbol, data in sorted(raw.items()):
            rows.append(ExitRow(account=account, symbol=text(symbol), exit=_exit.decode(data)))
    return ExitsView(exits=rows)


def describe(exit: Exit) -> str:
    """One line: its levels, its close, and a closing order in flight."""
    parts = []
    if exit.stop_loss is not None:
        parts.append(f"stop-loss {exit.stop_loss}")
    if exit.take_profit is not None:
        parts.append(f"take-profit {exit.take_profit}")
    if exit.trailing_offset is not None:
        trigger = exit.trail.trigger if exit.trail is not None else None
        parts.append(f"trailing {exit.trailing_offset} {exit.trailing_offset_type}"
                     + (f" (trigger {trigger})" if trigger is not None else ""))
    parts.append(f"close {exit.close}")
    if exit.fired is not None:
        parts.append(f"closing order {exit.fired} in flight")
    return ", ".join(parts)


def render(view: ExitsView) -> str:
    if not view.exits:
        return "no stop-loss / take-profit set"
    return "\n".join(f"{r.account} {r.symbol}: {describe(r.exit)}" for r in view.exits)


async def _set(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    try:
        exit = exit_of(args.stop_loss, args.take_profit, args.trailing, args.trailing_type,
                       args.close, now=wall_clock_ms(), by=audit.operator())
        await set_exit(redis, keys, load_settings(args.config), args.account, args.symbol,
                       exit)
    except ContractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.account} {args.symbol}: {describe(exit)}")
    return 0


async def _clear(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    removed = await remove_exit(redis, keys, args.account, args.symbol, audit.operator())
    print(f"{args.account} {args.symbol}: "
          + ("stop-loss / take-profit removed" if removed else "none was set"))
    return 0


async def _show(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    accounts = local_accounts(args, settings) if args.account is None else [args.account]
    view = await exits_view(redis, keys, accounts)
    print(as_json(args, view) if args.json else render(view))
    return 0
