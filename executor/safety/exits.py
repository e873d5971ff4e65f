"""The stop-loss / take-profit of positions as stored (``Keys.exits``): set and cleared by
an operator (``orderstream sl-tp``) or a request (action ``sl_tp``), each change one MULTI
with its audit entry; fired by the emulating worker (background/exits.py)."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from producer.contract import ContractError, encode
from producer.keys import Keys

from ..infra import audit
from ..infra.clock import wall_clock_ms
from ..model.exits import Exit
from ..model.positions import decode_position, position_key


async def store_exit(redis: aioredis.Redis, keys: Keys, account: str, symbol: str,
                     exit: Exit) -> None:
    """Protect the position in ``symbol`` on ``account`` with ``exit``, audited.
    ContractError naming ``symbol`` (nothing written) when there is no position."""
    raw = await redis.hget(keys.positions, position_key(account, symbol))
    if raw is None or decode_position(raw).quantity == 0:
        raise ContractError(f"there is no position in {symbol} on {account} to protect",
                            "symbol")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.exits(account), symbol, encode(exit))
        audit.add(pipe, keys, audit.AuditEntry(
            kind="sl_tp_set", scope=account, at=exit.set_at, by=exit.set_by,
            details={"symbol": symbol, "exit": msgspec.json.decode(encode(exit))}))
        await pipe.execute()


async def remove_exit(redis: aioredis.Redis, keys: Keys, account: str, symbol: str,
                      by: str) -> bool:
    """Remove the exit, audited; False when there was none."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.exits(account), symbol)
        audit.add(pipe, keys, audit.AuditEntry(
            kind="sl_tp_clear", scope=account, at=wall_clock_ms(), by=by,
            details={"symbol": symbol}))
        removed, _ = await pipe.execute()
    return bool(removed)
