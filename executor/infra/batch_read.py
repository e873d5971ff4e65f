"""Reads of one instant in one script call: a batch's first read (pipeline/steps/prefetch.py).

The reads are queued as on a redis-py pipeline (``get``, ``hget``, ``hlen``, ``hgetall``,
``hmget``: what ``RiskState.queue_snapshot`` queues) and ``reads.lua`` makes them in one
EVALSHA, which answers each in its place, as a MULTI would. A script runs alone, so they
see one instant, as in a MULTI.

Why not the MULTI: redis-py packs, sends and parses every command of a pipeline in Python,
and a MULTI answers QUEUED to each before EXEC, so the worker spent 240 us of CPU on the
batch's ten reads against 115 us for the same reads in one script call (2-core bench
machine). At ordinary load a batch is one order, and that CPU is its latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis

_pack = msgspec.msgpack.Encoder().encode


class BatchRead:
    """Reads queued in order; ``execute`` makes them all in one call."""

    __slots__ = ("_index", "_pairs", "keys", "reads")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.reads: list[list[Any]] = []
        self._pairs: list[bool] = []  # per read: a flat field/value list to make a dict of

    def _queue(self, command: str, key: str, *args: Any, pairs: bool = False) -> None:
        at = self._index.get(key)
        if at is None:
            self.keys.append(key)
            at = self._index[key] = len(self.keys)  # Lua's KEYS is 1-based
        self.reads.append([command, at, *args])
        self._pairs.append(pairs)

    def get(self, key: str) -> None:
        self._queue("GET", key)

    def hget(self, key: str, field: str) -> None:
        self._queue("HGET", key, field)

    def hlen(self, key: str) -> None:
        self._queue("HLEN", key)

    def hgetall(self, key: str) -> None:
        self._queue("HGETALL", key, pairs=True)

    def hmget(self, key: str, fields: Sequence[str]) -> None:
        self._queue("HMGET", key, *fields)

    def __len__(self) -> int:
        return len(self.reads)

    def replies(self, raw: Sequence[Any]) -> list[Any]:
        """Each read's reply, as redis-py would have parsed it from a pipeline: a hash as a
        dict (Lua has only arrays), an error as its exception, in its place."""
        out: list[Any] = []
        for reply, pairs in zip(raw, self._pairs, strict=True):
            if pairs and isinstance(reply, list):
                reply = dict(zip(reply[::2], reply[1::2], strict=True))
            out.append(reply)
        return out


class BatchReader:
    """The ``reads.lua`` script of one Redis client."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(
            (resources.files("executor.infra") / "lua" / "reads.lua").read_text())

    async def execute(self, batch: BatchRead) -> list[Any]:
        """Make the queued reads; their replies in order (a failed read: its error)."""
        if not batch.reads:
            return []
        raw: Any = await self._script(keys=batch.keys, args=[_pack(batch.reads)])
        return batch.replies(raw)
