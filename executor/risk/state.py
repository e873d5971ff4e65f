"""The shared pre-trade risk state of an account in Redis, read in one snapshot and written
by one compare-and-set script, so the checks hold across any number of workers.

Keys (``Keys.risk(account, name)``):

- ``open``: hash client id -> Reservation JSON (book.py) of every open order that passed
  the checks. Written here; shrunk by fills and deleted on the order's end by the
  positions projector (projector.py, lua/positions.lua).
- ``day:<YYYYMMDD>``: hash of the trading day (days start at ``risk.day_reset_utc``):
  ``orders`` (integer: orders that passed the checks, written here) and ``pnl`` (decimal
  text: realized PnL net of commission of the day's fills, written by the projector).
  Expires two days after its last write.
- ``v``: integer version, incremented by every change of the above, of the account's
  positions (projector) and of its run-time limits (``orderstream risk set``).

With ``Keys.positions``, ``Keys.trading`` and ``Keys.risk_limits`` they make the snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from producer.contract import decoder, encode
from producer.keys import Keys
from producer.replies import text

from ..positions import Position, decode_position, split_key
from ..trading import TradingState, effective
from .book import Reservation
from .limits import AccountLimits, decode_runtime

DAY_TTL_MS = 2 * 86_400_000
_reservation = decoder(Reservation)


def decode_reservation(data: bytes | str) -> Reservation:
    reservation: Reservation = _reservation.decode(data)
    return reservation


def version_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "v")


def open_key(keys: Keys, account: str) -> str:
    return keys.risk(account, "open")


def day_key(keys: Keys, account: str, day: str) -> str:
    return keys.risk(account, f"day:{day}")


@dataclass(slots=True)
class Snapshot:
    """An account's risk state at one instant (read in one MULTI)."""

    version: str
    reservations: dict[str, Reservation]
    day_orders: int
    day_pnl: Decimal
    positions: list[Position]
    state: TradingState
    runtime: AccountLimits | None
    day: str = ""


@dataclass(slots=True)
class Write:
    """One compare-and-set of an account's reservations."""

    reserve: list[tuple[str, Reservation, bool]] = field(default_factory=list)  # counted?
    release: list[tuple[str, str]] = field(default_factory=list)  # (client id, request id)

    def __bool__(self) -> bool:
        return bool(self.reserve or self.release)


class RiskState:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(
            (resources.files("executor") / "lua" / "risk_reserve.lua").read_text())

    async def snapshot(self, account: str, day: str) -> Snapshot:
        """Read the account's state. Raises RedisError, or ValueError / msgspec errors on
        state it cannot read (the caller denies: what is unreadable is not checked)."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(version_key(k, account))
            pipe.hgetall(open_key(k, account))
            pipe.hmget(day_key(k, account, day), ["orders", "pnl"])
            pipe.hgetall(k.positions)
            pipe.hgetall(k.trading)
            pipe.hget(k.risk_limits, account)
            version, held, (orders, pnl), positions, trading, runtime = await pipe.execute()
        prefix = f"{account}:"
        return Snapshot(
            version=text(version) if version is not None else "0",
            reservations={text(cid): decode_reservation(v) for cid, v in held.items()},
            day_orders=int(orders or 0),
            day_pnl=Decimal(text(pnl)) if pnl is not None else Decimal(0),
            positions=[decode_position(v) for f, v in positions.items()
                       if text(f).startswith(prefix) and split_key(text(f))[0] == account],
            state=effective(trading, account),
            runtime=decode_runtime(runtime),
            day=day,
        )

    async def commit(self, account: str, day: str, version: str | None, write: Write) -> bool:
        """Apply ``write`` if the account's version is still ``version`` (None: whatever
        it is, for releases). False when it moved."""
        k = self.keys
        args: list[Any] = ["*" if version is None else version, DAY_TTL_MS, len(write.reserve)]
        for cid, reservation, counted in write.reserve:
            args += [cid, encode(reservation), 1 if counted else 0]
        for cid, request_id in write.release:
            args += [cid, request_id]
        done = await self._script(
            keys=[version_key(k, account), open_key(k, account), day_key(k, account, day)],
            args=args)
        return bool(done == 1)

    async def release(self, account: str, day: str, items: Sequence[tuple[str, str]]) -> None:
        if items:
            await self.commit(account, day, None, Write(release=list(items)))


def runtime_limits(raw: dict[bytes, bytes]) -> dict[str, AccountLimits]:
    """The whole ``Keys.risk_limits`` hash, decoded (for ``orderstream risk show``)."""
    out: dict[str, AccountLimits] = {}
    for account, data in raw.items():
        limits = decode_runtime(data)
        if limits is not None:
            out[text(account)] = limits
    return out

