"""The archive's loop over one key prefix: read the events, result and audit streams after the
stored cursors, store the batch (store.py), then tell Redis how far the archive has durably
read, so retention trims behind it and never past it.

Redis is told after the SQL commit, never before: a crash between the two leaves Redis
holding a little more than it must, never less. Before its first read the archive
registers itself at its stored cursors, so nothing it has not read can be trimmed from then
on; what retention trimmed before the archive ever registered is gone from Redis, and the
archive says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from producer.keys import Keys
from producer.replies import text

from ..infra.streams import parse_stream_id
from . import rows
from .rows import Assets, Entry, Writes
from .store import ArchiveStore, CursorMoved

log = logging.getLogger(__name__)

AssetsSource = Callable[[], Awaitable[Assets]]


def readers_hashes(keys: Keys) -> dict[str, str]:
    """Per archived stream, the hash where its readers say how far they have read."""
    return {rows.EVENTS: keys.events_readers, rows.COMPLETED: keys.completed_readers,
            rows.FAILED: keys.failed_readers}


def streams(keys: Keys) -> dict[str, str]:
    # The audit stream is capped as it is written (infra/audit.py), not trimmed behind
    # readers: the archive reads it without registering.
    return {rows.EVENTS: keys.events, rows.COMPLETED: keys.completed, rows.FAILED: keys.failed,
            rows.AUDIT: keys.audit}


class Archiver:
    def __init__(self, redis: aioredis.Redis, keys: Keys, store: ArchiveStore, *,
                 assets: AssetsSource, reader: str = "archive", batch: int = 1000,
                 block_ms: int = 1000, source: str | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.assets = assets
        self.reader = reader
        self.batch = batch
        self.block_ms = block_ms
        self.source = keys.prefix if source is None else source  # the rows' source
        self.cursors: dict[str, str] = {}
        self.archived = 0  # entries stored by this process

    async def register(self) -> dict[str, str]:
        """Read the stored cursors and register them with Redis; returns them."""
        self.cursors = await self.store.cursors(self.source)
        await self._tell_redis()
        trimmed = await self.redis.get(self.keys.events_trimmed)
        start = self.cursors[rows.EVENTS]
        if trimmed is not None and parse_stream_id(text(trimmed)) > parse_stream_id(start):
            log.warning("%s: events before %s were trimmed before the archive read them "
                        "(it is at %s): their orders are archived from their later events",
                        self.keys.events, text(trimmed), start)
        return dict(self.cursors)

    async def once(self, block: bool = False) -> int:
        """Store one batch (up to ``batch`` entries per stream); returns the entries
        stored, 0 when there were none (after waiting up to ``block_ms`` if ``block``)."""
        while True:
            entries = await self._read(block)
            if not entries:
                return 0
            batch = rows.decode(self.source, entries)
            try:
                writes = await self.store.write(batch, self.cursors, await self.assets())
            except CursorMoved as exc:
                # Another archive stored it first: read on from wherever the store now is.
                log.warning("%s; re-reading the cursors", exc)
                self.cursors = await self.store.cursors(self.source)
                block = False
                continue
            self.cursors.update(batch.last_ids())
            self.archived += len(entries)
            _log_problems(writes)
            await self._tell_redis()
            return len(entries)

    async def _read(self, block: bool) -> list[Entry]:
        names = streams(self.keys)
        reply: Any = await self.redis.xread(
            {names[s]: self.cursors[s] for s in rows.STREAMS}, count=self.batch,
            block=self.block_ms if block else None)
        by_name = {v: k for k, v in names.items()}
        return [Entry(by_name[text(name)], text(entry_id), fields or {})
                for name, found in reply or [] for entry_id, fields in found]

    async def _tell_redis(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, readers in readers_hashes(self.keys).items():
                pipe.hset(readers, self.reader, self.cursors[stream])
            await pipe.execute()

    async def run(self, running: Callable[[], bool], pause_s: float = 1.0) -> None:
        """Archive until ``running()`` is false; Redis or database failures are logged and
        retried after ``pause_s`` (the batch is read again: nothing was stored)."""
        registered = False
        while running():
            try:
                if not registered:
                    await self.register()
                    registered = True
                await self.once(block=True)
            except (RedisError, SQLAlchemyError, OSError) as exc:
                log.warning("%s: archive pass failed, retrying: %s", self.source,
                            type(exc).__name__ if isinstance(exc, SQLAlchemyError) else exc)
                await asyncio.sleep(pause_s)
            except Exception:
                # A bug of ours that one batch trips: nothing of it was stored, and the
                # archive keeps trying rather than exiting (its lag alert says it is stuck;
                # the traceback says why), as a restarted process would hit it again.
                log.exception("%s: archive pass failed on a bug, retrying", self.source)
                await asyncio.sleep(pause_s * 10)


def _log_problems(writes: Writes) -> None:
    for problem in writes.problems[:20]:
        log.warning("archive: %s", problem)
    if len(writes.problems) > 20:
        log.warning("archive: %d more problems in this batch", len(writes.problems) - 20)
