"""Read-only Redis reads for the operator commands (replay, orders, positions, info).

Nothing here writes. Large collections are read in pages (XRANGE COUNT, SCAN, pipelines of
bounded size), so a long event log or many orders never come back as one reply.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from producer.keys import GROUP, Keys
from producer.replies import text

from ..background.liveness import WorkerInfo
from ..brokers.paper.config import PaperAccount
from ..brokers.paper.pricing import Prices
from ..brokers.paper.store import ExchangeStore
from ..config import Settings
from .replay import Stored, StoredOrder

PAGE = 1_000

# Characters SCAN MATCH treats as a pattern; a prefix is matched literally.
_GLOB = re.compile(r"([*?\[\]\\])")


def _literal(prefix: str) -> str:
    return _GLOB.sub(r"\\\1", prefix)


async def entries(redis: aioredis.Redis, stream: str, *, after: str | None = None,
                  count: int = PAGE) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry of ``stream`` after ``after`` (from the start when None), in order, read
    ``count`` at a time."""
    start = "-" if after is None else f"({after}"
    while True:
        page: Any = await redis.xrange(stream, min=start, max="+", count=count)
        for entry_id, fields in page:
            yield text(entry_id), fields
        if len(page) < count:
            return
        start = f"({text(page[-1][0])}"


async def scan_suffixes(redis: aioredis.Redis, prefix: str) -> list[str]:
    """What follows ``prefix`` in the name of every key that starts with it, sorted."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=_literal(prefix) + "*", count=PAGE):
        found.add(text(key)[len(prefix):])
    return sorted(found)


async def order_ids(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """Every client id with an order record."""
    return await scan_suffixes(redis, keys.order(""))


async def open_ids(redis: aioredis.Redis, keys: Keys) -> set[str]:
    return {text(m) for m in await redis.smembers(keys.open)}


_ORDER_FIELDS = ("state", "seq", "request_id", "record")


async def stored_orders(redis: aioredis.Redis, keys: Keys,
                        cids: Sequence[str]) -> dict[str, StoredOrder]:
    """The hash of each order that has one (a cid whose key is gone is left out)."""
    out: dict[str, StoredOrder] = {}
    for start in range(0, len(cids), PAGE):
        chunk = cids[start:start + PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for cid in chunk:
                pipe.hmget(keys.order(cid), _ORDER_FIELDS)
            replies = await pipe.execute()
        for cid, (state, seq, request_id, record) in zip(chunk, replies, strict=True):
            if state is None and seq is None and request_id is None and record is None:
                continue
            out[cid] = StoredOrder(state=_opt(state), seq=_opt(seq),
                                   request_id=_opt(request_id), record=record)
    return out


def _opt(value: bytes | str | None) -> str | None:
    return None if value is None else text(value)


async def string(redis: aioredis.Redis, key: str) -> str | None:
    return _opt(await redis.get(key))


async def positions(redis: aioredis.Redis, keys: Keys) -> tuple[dict[str, bytes], str | None]:
    """The positions hash and its cursor, read together (MULTI), so the cursor says what the
    positions read include."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.positions)
        pipe.get(keys.positions_cursor)
        raw, cursor = await pipe.execute()
    return {text(k): bytes(v) for k, v in raw.items()}, _opt(cursor)


async def assets(redis: aioredis.Redis, keys: Keys
                 ) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(account, symbol) -> (base, quote) the positions projector folded its fills with;
    an unreadable entry is left out."""
    out: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    raw: Any = await redis.hgetall(keys.assets)
    for key, value in raw.items():
        account, _, symbol = text(key).partition(":")
        try:
            base, quote = _assets.decode(value)
        except (msgspec.DecodeError, ValueError):
            continue
        out[(account, symbol)] = (base, quote)
    return out


_assets = msgspec.json.Decoder(tuple[str | None, str | None])

AssetMap = dict[tuple[str, str], str]


async def fold_assets(redis: aioredis.Redis, keys: Keys, settings: Settings
                      ) -> tuple[AssetMap, AssetMap]:
    """(quote assets, base assets) per (account, symbol): what a fill's commission asset
    means for its position, as the projector folded it (it asked the brokers: Binance's
    exchangeInfo, recorded in the assets hash), else the paper accounts' symbols."""
    symbols = [(account, symbol, sym) for account, config in settings.accounts.items()
               if isinstance(config, PaperAccount) for symbol, sym in config.symbols.items()]
    quotes = {(account, symbol): sym.quote_asset for account, symbol, sym in symbols}
    bases = {(account, symbol): sym.base_asset for account, symbol, sym in symbols}
    for key, (base, quote) in (await assets(redis, keys)).items():
        for known, asset in ((bases, base), (quotes, quote)):
            if asset is not None:
                known[key] = asset
            else:
                known.pop(key, None)
    return quotes, bases


async def stored(redis: aioredis.Redis, keys: Keys) -> Stored:
    """Every order record, the open set, the positions and their cursor, and the
    retention's checkpoint and trim point (read with the positions, in one MULTI)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.positions)
        pipe.get(keys.positions_cursor)
        pipe.hgetall(keys.positions_base)
        pipe.get(keys.positions_base_cursor)
        pipe.get(keys.events_trimmed)
        held, cursor, base, base_cursor, trimmed = await pipe.execute()
    ids = await order_ids(redis, keys)
    return Stored(orders=await stored_orders(redis, keys, ids), open=await open_ids(redis, keys),
                  positions={text(k): bytes(v) for k, v in held.items()},
                  positions_cursor=_opt(cursor),
                  base={text(k): bytes(v) for k, v in base.items()},
                  base_cursor=_opt(base_cursor), trimmed_before=_opt(trimmed))


_worker_decoder = msgspec.json.Decoder(WorkerInfo)


async def workers(redis: aioredis.Redis, keys: Keys) -> list[WorkerInfo | str]:
    """The heartbeat of every live worker (its consumer name where the value is unreadable)."""
    names = await scan_suffixes(redis, keys.worker(""))
    if not names:
        return []
    values = await redis.mget([keys.worker(n) for n in names])
    out: list[WorkerInfo | str] = []
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue  # expired between SCAN and MGET
        try:
            out.append(_worker_decoder.decode(value))
        except msgspec.DecodeError:
            out.append(name)
    return out


async def group(redis: aioredis.Redis, keys: Keys) -> tuple[dict[str, Any] | None,
                                                           list[dict[str, Any]]]:
    """XINFO GROUPS' entry for the executors group and XINFO CONSUMERS (None, [] when the
    stream or the group does not exist yet)."""
    try:
        groups: Any = await redis.xinfo_groups(keys.pending)
    except ResponseError:
        return None, []  # no such stream
    mine = next((g for g in groups if text(g["name"]) == GROUP), None)
    if mine is None:
        return None, []
    consumers: Any = await redis.xinfo_consumers(keys.pending, GROUP)
    return mine, list(consumers)


async def exists(redis: aioredis.Redis, names: Sequence[str]) -> list[bool]:
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(name)
        return [bool(n) for n in await pipe.execute()]


async def lengths(redis: aioredis.Redis, streams: Sequence[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for name in streams:
            pipe.xlen(name)
        return [int(n) for n in await pipe.execute()]


async def count_after(redis: aioredis.Redis, stream: str, after: str, cap: int) -> int:
    """How many entries of ``stream`` come after ``after``, counted up to ``cap``."""
    reply: Any = await redis.xrange(stream, min=f"({after}", max="+", count=cap)
    return len(reply)


async def reference_prices(redis: aioredis.Redis, keys: Keys, settings: Settings,
                           wanted: Iterable[tuple[str, str]],
                           clock: Callable[[], int]) -> dict[tuple[str, str], Decimal]:
    """The paper exchange's reference price of each (account, symbol) it has one for: the
    operator's override, else its price model (static: the configured price; walk: the walk
    from the exchange's shared origin, as the exchange computes it). Read-only: an exchange
    that never started (no origin) is priced at the configured price."""
    out: dict[tuple[str, str], Decimal] = {}
    by_account: dict[str, list[str]] = {}
    for account, symbol in wanted:
        by_account.setdefault(account, []).append(symbol)
    for account, symbols in by_account.items():
        config = settings.accounts.get(account)
        if not isinstance(config, PaperAccount):
            continue
        exchange = ExchangeStore(redis, keys, account)
        prices = Prices(config, clock)
        prices.set_overrides(await exchange.overrides())
        origin = await string(redis, exchange.origin)
        if origin is not None:
            prices.set_origin(int(origin))
        for symbol in symbols:
            if symbol in prices.overrides:
                out[account, symbol] = prices.overrides[symbol]
            elif symbol in config.symbols and origin is None:
                out[account, symbol] = config.symbols[symbol].price
            elif symbol in config.symbols:
                # A walk from an old origin is long to catch up on: off the event loop.
                out[account, symbol] = await asyncio.to_thread(prices.price, symbol)
    return out
