"""``orderstream risk set`` and ``orderstream risk show``: the run-time risk limits.

``risk set --account A [--symbol S] key=value ...`` changes the run-time limits of an
account (``none`` as value removes a key, so the configured value applies again). The new
limits, the bump of the account's risk version and the audit entry are one MULTI (under a
WATCH of the limits hash, so two operators' changes never overwrite each other); every
worker reads the limits in its next batch's snapshot, so the change applies to every order
decided after it is written.

``risk show [--account A]`` prints, per account: the trading state, the configured,
run-time and effective limits (account level; per-symbol parts as configured), and the
shared state: open reservations, the day's order count and realized PnL.
"""

from __future__ import annotations

import argparse
import decimal
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from producer.contract import ContractError, encode
from producer.keys import Keys

from ..config import Settings, load_settings
from ..infra import audit
from ..infra.clock import wall_clock_ms
from ..safety.risk.book import EXACT, ZERO, day_id
from ..safety.risk.limits import (
    AccountLimits,
    Limits,
    apply_changes,
    decode_runtime,
    encode_runtime,
    resolve,
)
from ..safety.risk.state import RiskState, checks_version_key, open_by_symbol, version_key
from ..safety.trading import TradingState
from .operator_cli import as_json, known_account, local_accounts


class AccountRisk(msgspec.Struct, kw_only=True):
    account: str
    trading_state: TradingState
    configured: AccountLimits
    runtime: AccountLimits | None
    effective: Limits  # account level, before any per-symbol override
    open_orders: int
    reserved_buy_notional: str
    reserved_sell_notional: str
    day: str
    day_orders: int
    day_realized_pnl: str
    version: int


class RiskView(msgspec.Struct, kw_only=True):
    accounts: list[AccountRisk]


def add_commands(sub: Any, wrap: Callable[..., Any],
                 common: Callable[..., None]) -> None:
    p = sub.add_parser("risk", help="show or change the pre-trade risk limits at run time")
    risk = p.add_subparsers(dest="risk_command", required=True)
    s = risk.add_parser("set", help="change run-time limits: key=value ... (value none "
                        "removes the key); audited")
    common(s)
    s.add_argument("--account", required=True)
    s.add_argument("--symbol", help="change the per-symbol limits of this symbol")
    s.add_argument("changes", nargs="+", metavar="key=value")
    s.set_defaults(func=wrap(_set))
    s = risk.add_parser("show", help="limits and shared risk state per account")
    common(s)
    s.add_argument("--account")
    s.set_defaults(func=wrap(_show))


def parse_changes(items: list[str]) -> dict[str, str]:
    changes: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ContractError(f"expected key=value, got {item!r}", key or None)
        changes[key.strip()] = value.strip()
    return changes


async def set_limits(redis: aioredis.Redis, keys: Keys, account: str, changes: dict[str, str],
                     *, symbol: str | None = None, by: str | None = None,
                     now_ms: int | None = None) -> AccountLimits:
    """Apply ``changes`` to the stored run-time limits of ``account``, audited, atomically.
    Raises ContractError (nothing changed) on a bad key or value."""
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.risk_limits)
                current = decode_runtime(await pipe.hget(keys.risk_limits, account))
                new = apply_changes(current, changes, symbol)
                pipe.multi()  # type: ignore[no-untyped-call]
                if new == AccountLimits():
                    pipe.hdel(keys.risk_limits, account)
                else:
                    pipe.hset(keys.risk_limits, account, encode_runtime(new))
                pipe.incr(version_key(keys, account))
                pipe.incr(checks_version_key(keys, account))
                audit.add(pipe, keys, audit.AuditEntry(
                    kind="risk_set", scope=account,
                    at=wall_clock_ms() if now_ms is None else now_ms,
                    by=by or audit.operator(),
                    details={"symbol": symbol, "changes": changes,
                             "limits": msgspec.to_builtins(new)}))
                await pipe.execute()
                return new
            except WatchError:
                continue


async def _set(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    try:
        known_account(load_settings(args.config), args.account)
        new = await set_limits(redis, keys, args.account, parse_changes(args.changes),
                               symbol=args.symbol)
    except ContractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(encode_runtime(new).decode())
    return 0


async def account_risk(redis: aioredis.Redis, keys: Keys, settings: Settings,
                       account: str) -> AccountRisk:
    day = day_id(wall_clock_ms(), settings.risk.day_offset_ms)
    snap = await RiskState(redis, keys).snapshot(account, day)
    books = open_by_symbol(snap.sums).values()
    with decimal.localcontext(EXACT):
        buys = sum((b.buy_notional for b in books), ZERO)
        sells = sum((b.sell_notional for b in books), ZERO)
    risk = settings.risk
    own = risk.accounts.get(account)
    configured = AccountLimits(**{
        **{k: v for k, v in msgspec.structs.asdict(risk.defaults).items() if v is not None},
        **({k: v for k, v in msgspec.structs.asdict(own).items() if v is not None}
           if own is not None else {}),
        "symbols": {**risk.defaults.symbols, **(own.symbols if own is not None else {})}})
    return AccountRisk(
        account=account, trading_state=snap.state, configured=configured,
        runtime=snap.runtime, effective=resolve(risk, account, "", snap.runtime),
        open_orders=snap.open_orders, reserved_buy_notional=format(buys, "f"),
        reserved_sell_notional=format(sells, "f"), day=day, day_orders=snap.day_orders,
        day_realized_pnl=format(snap.day_pnl, "f"), version=int(snap.version))


def render(view: RiskView) -> str:
    lines: list[str] = []
    for a in view.accounts:
        lines.append(f"account {a.account}: {a.trading_state}, {a.open_orders} open orders "
                     f"(reserved buys {a.reserved_buy_notional}, sells "
                     f"{a.reserved_sell_notional}), day {a.day}: {a.day_orders} orders, "
                     f"realized {a.day_realized_pnl}")
        lines.append(f"  effective: {encode(a.effective).decode()}")
        lines.append(f"  configured: {encode_runtime(a.configured).decode()}")
        runtime = "none" if a.runtime is None else encode_runtime(a.runtime).decode()
        lines.append(f"  run-time: {runtime}")
    return "\n".join(lines)


async def _show(args: argparse.Namespace, redis: aioredis.Redis, keys: Keys) -> int:
    settings = load_settings(args.config)
    accounts = local_accounts(args, settings) if args.account is None else [args.account]
    try:
        for account in accounts:
            known_account(settings, account)
    except ContractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    view = RiskView(accounts=[await account_risk(redis, keys, settings, a) for a in accounts])
    print(as_json(args, view) if args.json else render(view))
    return 0
