"""Redis stream ids and positions: parsing an entry id, the last entry of a stream, and
waiting for the positions projection to fold every event written so far (the operator
commands wait for it before they read positions; the adapters' reconciliation before it
compares them with the broker's, brokers/recorded.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from producer.keys import Keys
from producer.replies import text

StreamId = tuple[int, int]


def parse_stream_id(entry_id: str) -> StreamId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def last_id(redis: aioredis.Redis, stream: str) -> str | None:
    reply: Any = await redis.xrevrange(stream, max="+", min="-", count=1)
    return text(reply[0][0]) if reply else None


async def positions_caught_up(redis: aioredis.Redis, keys: Keys, timeout_s: float,
                              poll_s: float = 0.1) -> bool:
    """Wait until the positions projection has folded every event written so far; False
    if it has not within ``timeout_s``."""
    last = await last_id(redis, keys.events)
    if last is None:
        return True
    target = parse_stream_id(last)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        cursor = await redis.get(keys.positions_cursor)
        if cursor is not None and parse_stream_id(text(cursor)) >= target:
            return True
        await asyncio.sleep(poll_s)
    return False
