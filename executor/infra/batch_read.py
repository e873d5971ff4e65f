"""Reads of one instant in one script call: a batch's first read (pipeline/steps/prefetch.py).

The reads are queued as on a redis-py pipeline (``get``, ``hget``, ``hlen``, ``hgetall``,
``hmget``, and ``positions``, an account's part of the positions hash: what
``RiskState.queue_snapshot`` queues) and ``reads.lua`` makes them in one EVALSHA, which
answers each in its place, as a MULTI would. A script runs alone, so they
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

from producer.keys import Keys

_pack = msgspec.msgpack.Encoder().encode


class BatchRead:
    """Reads queued in order; ``execute`` makes them all in one call."""

    __slots__ = ("_index", "_pairs", "keys", "reads")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.reads: list[list[Any]] = []
        self._pairs: list[bool] = []  # per read: a flat field/value list to make a dict of

    def _at(self, key: str) -> int:
        at = self._index.get(key)
        if at is None:
            self.keys.append(key)
            at = self._index[key] = len(self.keys)  # Lua's KEYS is 1-based
        return at

    def _queue(self, command: str, key: str, *args: Any, pairs: bool = False) -> None:
        self.reads.append([command, self._at(key), *args])
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

    def positions(self, positions: str, indexed: str, of: str) -> None:
        """The fields of the positions hash ``positions`` that the account's set ``of``
        names, as a dict like ``hgetall``'s; the whole hash while the sets are not complete
        (``indexed``: producer/keys.py ``positions_indexed``; reads.lua ``POSITIONS``)."""
        self.reads.append(["POSITIONS", self._at(positions), self._at(indexed), self._at(of)])
        self._pairs.append(True)

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


def raise_failed(replies: Sequence[Any]) -> None:
    """Raise the error of the first read that failed (``BatchReader.execute`` answers it in
    its place), for callers that cannot use the others without it."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


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


async def account_positions(reader: BatchReader, keys: Keys, account: str) -> dict[Any, Any]:
    """The account's fields of the positions hash and their positions' JSON (while the
    accounts' sets of fields are not complete, every account's: filter by owner)."""
    batch = BatchRead()
    batch.positions(keys.positions, keys.positions_indexed, keys.positions_of(account))
    replies = await reader.execute(batch)
    raise_failed(replies)
    held: dict[Any, Any] = replies[0]
    return held
