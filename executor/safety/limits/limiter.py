"""The shared rate limiter of one broker account: Redis I/O only, one script per call.

Keys (``Keys.limits(account, name)``): ``windows`` (hash: per window its use and index,
and the GCRA's state), ``pause`` and ``ban`` (epoch ms until which nothing is sent, expiring
then). With an ``ip_group`` the windows that count weight, the pause and the ban are the
group's (``Keys.limits_ip(group, name)``), shared by its accounts. The arithmetic is in
windows.py; the scripts are infra/lua/limits_*.lua.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from producer.keys import Keys
from producer.replies import text

from .config import RATE_NAME, Plan

PAUSE = "pause"
BAN = "ban"


def _script(name: str) -> str:
    return (resources.files("executor.infra") / "lua" / name).read_text()


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    wait_ms: int  # until one more unit fits (-1: never); 0 when all was granted
    now_ms: int  # the Redis server's clock
    blocked_by: str  # a limit's name, "pause", "ban" or ""
    used: Mapping[str, int]  # each limit's use after the take (empty when paused or banned)


class Limiter:
    def __init__(self, redis: aioredis.Redis, keys: Keys, account: str, plan: Plan) -> None:
        self.account = account
        self.plan = plan
        self.redis = redis
        self.windows_key = keys.limits(account, "windows")
        group = plan.ip_group
        self.weight_key = keys.limits_ip(group, "windows") if group else self.windows_key
        self.pause_key = keys.limits_ip(group, PAUSE) if group else keys.limits(account, PAUSE)
        self.ban_key = keys.limits_ip(group, BAN) if group else keys.limits(account, BAN)
        self._acquire = redis.register_script(_script("limits_acquire.lua"))
        self._hold = redis.register_script(_script("limits_hold.lua"))
        self._usage = redis.register_script(_script("limits_usage.lua"))
        args: list[Any] = []
        for w in plan.windows:
            args += (w.name, w.size_ms, w.cap, 1 if w.counts_weight else 0)
        self._window_args = args
        rate = plan.rate
        self._rate_args = (rate.interval_us, rate.burst) if rate is not None else (0, 0)
        self._sizes = {w.name: (w.size_ms, 1 if w.counts_weight else 0)
                       for w in plan.windows}

    async def acquire(self, units: int, weight: int, orders: int, now_us: int = 0) -> Grant:
        """Take what fits of ``units`` calls (each of ``weight`` and ``orders``) from every
        limit at once. ``now_us`` replaces the server's clock (tests only)."""
        reply: Any = await self._acquire(
            keys=[self.windows_key, self.pause_key, self.ban_key, self.weight_key],
            args=[units, now_us, weight, orders, *self._rate_args, *self._window_args])
        granted, wait_ms, now_ms, blocked_by = (int(reply[0]), int(reply[1]), int(reply[2]),
                                                text(reply[3]))
        used: dict[str, int] = {}
        if len(reply) > 4:
            names = [w.name for w in self.plan.windows]
            if self.plan.rate is not None:
                names.append(RATE_NAME)
            used = dict(zip(names, (int(v) for v in reply[4:]), strict=True))
        return Grant(granted, wait_ms, now_ms, blocked_by, used)

    async def hold(self, what: str, duration_ms: int, now_us: int = 0) -> tuple[int, int]:
        """Pause (``PAUSE``) or ban (``BAN``) the account (with its IP group) for everyone
        for ``duration_ms`` from now, unless a longer one is already set; returns (until,
        now) in server ms."""
        key = self.ban_key if what == BAN else self.pause_key
        reply: Any = await self._hold(keys=[key], args=[max(duration_ms, 1), now_us])
        return int(reply[0]), int(reply[1])

    async def report(self, usage: Mapping[str, int], now_us: int = 0) -> dict[str, int]:
        """Raise the windows to at least the broker's own counts (``usage()``); counters of
        limits this account does not enforce are ignored. Returns the use afterwards."""
        known = [(name, int(value)) for name, value in usage.items() if name in self._sizes]
        if not known:
            return {}
        args: list[Any] = [now_us]
        for name, value in known:
            args += (name, *self._sizes[name], value)
        reply: Any = await self._usage(keys=[self.windows_key, self.weight_key], args=args)
        return {name: int(v) for (name, _), v in zip(known, reply, strict=True)}

    async def until(self) -> dict[str, int]:
        """The pause and ban in force (epoch ms), for operators and tests."""
        pause, ban = await self.redis.mget([self.pause_key, self.ban_key])
        return {PAUSE: int(pause or 0), BAN: int(ban or 0)}
