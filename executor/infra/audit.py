"""The audit stream of operator actions: who changed what, when.

Every run-time change of shared safety state (risk limits, trading state, a kill) is one
entry on ``Keys.audit``, written in the same MULTI as the change itself, so the log never
misses a change nor records one that did not happen.
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.keys import Keys

AUDIT_MAXLEN = 100_000


class AuditEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: str  # "risk_set", "trading_state", "kill", ...
    scope: str  # "global" or an account
    at: int  # epoch ms
    by: str  # user@host of the operator (or the worker that acted)
    details: dict[str, Any] = {}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(AuditEntry).decode


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def add(pipe: aioredis.client.Pipeline, keys: Keys, entry: AuditEntry) -> None:
    """Queue the entry on ``pipe`` (a MULTI pipeline that also holds the change)."""
    pipe.xadd(keys.audit, {"data": _encode(entry)}, maxlen=AUDIT_MAXLEN, approximate=True)


async def read(redis: aioredis.Redis, keys: Keys, count: int = 100) -> list[AuditEntry]:
    """The latest ``count`` entries, oldest first."""
    entries: Any = await redis.xrevrange(keys.audit, count=count)
    return [_decode(fields[b"data"]) for _, fields in reversed(entries)]
