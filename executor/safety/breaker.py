"""The circuit breaker of each broker account, shared by every worker through Redis.

It opens after ``consecutive_failures`` broker errors in a row, or when errors reach
``error_rate_percent`` of at least ``min_calls`` calls within ``window_ms``, or at once on an
authentication failure (retrying with a bad key only gets the key banned). While open, new
orders are refused with ``circuit_open`` (or held back within their deadline, ``mode =
"hold"``). After ``cooldown_ms`` one order is let through as a trial (half-open): its
success closes the breaker, its failure opens it again for another cool-down.

Only the broker's own health counts: a call that got an answer (an order, "rejected",
"unknown order", "duplicate client id", an order that moved between two reads) is a
success; being throttled is the rate limiter's business, not a failure. All transitions
are one script (infra/lua/breaker.lua) on the server's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from producer.keys import Keys
from producer.replies import text

from ..model.broker_reports import (
    AuthenticationFailed,
    BrokerError,
    DuplicateClientId,
    InconsistentRead,
    PermanentError,
    RateLimited,
    RetryableError,
    SendRefused,
    Throttled,
    UnknownOutcome,
)

_SCRIPT = (resources.files("executor.infra") / "lua" / "breaker.lua").read_text()


class BreakerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    consecutive_failures: int = 3
    window_ms: int = 60_000
    min_calls: int = 20
    error_rate_percent: int = 50
    cooldown_ms: int = 30_000
    # How long a half-open trial may take before another caller gets to be the trial.
    probe_ttl_ms: int = 10_000
    # "reject": refuse new orders at once while open; "hold": wait (within the request's
    # deadline and at most hold_max_ms) for the breaker to let them through.
    mode: Literal["reject", "hold"] = "reject"
    hold_max_ms: int = 5_000

    def __post_init__(self) -> None:
        for name in ("consecutive_failures", "window_ms", "min_calls", "cooldown_ms",
                     "probe_ttl_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"breaker.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.error_rate_percent <= 100:
            raise ValueError("breaker.error_rate_percent must be in 1..100, "
                             f"got {self.error_rate_percent}")
        if self.hold_max_ms < 0:
            raise ValueError(f"breaker.hold_max_ms must not be negative, got {self.hold_max_ms}")


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def code(self) -> int:
        """The metric value: 0 closed, 1 half-open, 2 open."""
        return _CODES[self]


_CODES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    state: CircuitState
    allowed: bool  # closed, or this caller is the half-open trial
    wait_ms: int  # when not allowed: until a trial may be granted
    changed: bool  # this call moved the state (for a log line)


def outcome_code(exc: BaseException | None) -> str:
    """How one broker call counts: "S" answered, "F" failed, "X" fatal, "" not at all."""
    if exc is None:
        return "S"
    if isinstance(exc, AuthenticationFailed):
        return "X"
    if isinstance(exc, RateLimited | Throttled | SendRefused):
        return ""  # throttled, or held back by our own guards: not the broker's health
    if isinstance(exc, InconsistentRead | DuplicateClientId):
        # The broker answered: an order that moved between two reads, or "we already have
        # that client id" (an earlier send of ours landed). Healthy answers, not failures.
        return "S"
    if isinstance(exc, RetryableError | UnknownOutcome):
        return "F"
    if isinstance(exc, PermanentError):
        return "S"  # the broker answered, with a refusal
    if isinstance(exc, BrokerError):
        return "F"
    return ""  # our own bug, not the broker's health


class Breaker:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: BreakerSettings) -> None:
        self.keys = keys
        self.settings = settings
        self._script = redis.register_script(_SCRIPT)
        s = settings
        self._params = [s.consecutive_failures, s.window_ms, s.min_calls,
                        s.error_rate_percent, s.cooldown_ms, s.probe_ttl_ms]
        # account -> the state this process's last call found; absent: none yet.
        self._seen: dict[str, CircuitState] = {}

    def seen(self, account: str) -> CircuitState | None:
        """The state the last call of this process found for ``account`` (the gate's
        ``allow``, which it makes only for a breaker not closed, or a count), None before
        any. A half-open trial's outcome must be counted at once (brokers/circuit.py)."""
        return self._seen.get(account)

    async def _call(self, account: str, op: str, outcomes: str = "") -> Verdict:
        reply: Any = await self._script(keys=[self.keys.breaker(account)],
                                        args=[op, *self._params, outcomes])
        state, wait_ms, changed, probe = reply
        parsed = self._seen[account] = CircuitState(text(state))
        allowed = parsed is CircuitState.CLOSED or bool(int(probe))
        return Verdict(parsed, allowed, int(wait_ms), bool(int(changed)))

    async def allow(self, account: str) -> Verdict:
        """May a new order go to this account's broker now? A half-open grant makes the
        caller the trial: exactly one caller gets it per ``probe_ttl_ms``."""
        return await self._call(account, "allow")

    async def record(self, account: str, outcomes: str) -> Verdict:
        """Count broker calls (``outcome_code`` per call, in order)."""
        return await self._call(account, "record", outcomes)

    async def reset(self, account: str) -> Verdict:
        """Close the breaker (an operator who fixed the cause)."""
        return await self._call(account, "reset")


async def states(redis: aioredis.Redis, keys: Keys,
                 accounts: list[str]) -> dict[str, dict[str, str]]:
    """Each account's breaker hash as text (absent: closed, never tripped)."""
    async with redis.pipeline(transaction=False) as pipe:
        for account in accounts:
            pipe.hgetall(keys.breaker(account))
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    return {a: {text(k): text(v) for k, v in r.items()} for a, r in
            zip(accounts, replies, strict=True)}
