"""Redis I/O of the paper exchange: its keys, and the Lua scripts that change them.

Keys (``<prefix>:paper:<account>:<name>``):

| name | type | what |
|---|---|---|
| ``orders`` | hash | client id -> order record (JSON, ``records.PaperOrder``) |
| ``received`` | stream | one entry per order accepted (the truth for "at most once") |
| ``duplicates`` | stream | one entry per submit refused for a client id already taken |
| ``book`` | set | client ids of open orders |
| ``finished`` | zset | client ids of finished orders by when they ended (forgotten after
  ``retention_ms``, with their records) |
| ``watch:<symbol>:<up|down>`` | zset | open orders by the level (in ticks) that wakes them |
| ``watch:<symbol>:every`` | zset | untriggered trailing stops (score 0), woken every pass |
| ``expiry`` | zset | open GTD orders by ``expire_at`` |
| ``prices`` | hash | symbol -> reference price set by an operator (wins over the model) |
| ``origin`` | string | epoch ms of step 0 of the price walk |
| ``executions`` | stream | every change of a resting order a client sees (``BrokerOrder``
  JSON in ``data``; not a trailing stop's trail moving) |

The streams' entries older than ``retention_ms`` are trimmed with the finished orders
(``trim.lua``, run by the matcher), so the exchange's memory follows its open orders and
its recent past, not every order it ever saw.
| ``matcher`` | string | the lease of the one worker that matches resting orders |

Every write is one Lua script (``*.lua`` beside this module, and the shared lease of
executor/infra/lease.py), so a crash never leaves half a change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from producer.keys import Keys
from producer.replies import text as _text

from ...infra.lease import SCRIPT as LEASE_SCRIPT
from .matching import Direction
from .records import PaperOrder, decode_order

EXECUTIONS_MAXLEN = 1_000_000
_msgpack = msgspec.msgpack.Encoder()


def _script(name: str) -> str:
    return (resources.files("executor.brokers.paper") / name).read_text()


SUBMIT_SCRIPT = _script("submit.lua")  # the exchange's door: it takes new orders



@dataclass(slots=True)
class NewOrder:
    """An order to store at submission, and where it rests if it is open."""

    client_order_id: str
    record: str  # JSON (str: the script takes it in a msgpack array, as a msgpack string)
    watch: str | None = None  # the watch key of an open order, and its level in ticks
    score: int = 0
    expire_at: int | None = None
    ended_at: int = 0  # epoch ms of an order final at once (filled, expired); 0: open
    # Over the ended native exit stored at this version (the workers' exit placed under its
    # id, lists.py); 0: a new client id.
    replaces: int = 0
    # The native exit placed with this entry's fill at submission (lists.py): stored in the
    # same call, right after it, and only if this order was taken just now.
    placed: NewOrder | None = None


@dataclass(slots=True)
class Change:
    """A new state of a stored order, valid only over ``expected_version``."""

    client_order_id: str
    expected_version: int
    record: bytes
    open: bool
    leave: str | None = None  # watch key to leave
    join: str | None = None  # watch key to join, with ``score``
    score: int = 0
    report: bytes | None = None  # appended to the executions stream
    # A new order placed with this change, only if it applies (an entry's native exit
    # with its fill, lists.py); its ``watch`` None when it ended at once.
    placed: NewOrder | None = None


class _KeyIndex:
    """The KEYS list of one script call: fixed keys first, then each watch key once."""

    __slots__ = ("index", "keys")

    def __init__(self, fixed: list[str]) -> None:
        self.keys = list(fixed)
        self.index: dict[str, int] = {}

    def __call__(self, key: str | None) -> int:
        if key is None:
            return 0
        at = self.index.get(key)
        if at is None:
            self.keys.append(key)
            at = self.index[key] = len(self.keys)  # Lua's KEYS is 1-based
        return at


READ_ATTEMPTS = 3  # a closed pooled connection fails once; a Redis that is down, every time


class ExchangeStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, account: str) -> None:
        self.redis = redis
        self._keys = keys
        self.account = account
        self.orders = self.key("orders")
        self.received = self.key("received")
        self.duplicates = self.key("duplicates")
        self.book = self.key("book")
        self.expiry = self.key("expiry")
        self.prices = self.key("prices")
        self.origin = self.key("origin")
        self.executions = self.key("executions")
        self.matcher = self.key("matcher")
        self.finished = self.key("finished")
        self._submit = redis.register_script(SUBMIT_SCRIPT)
        self._update = redis.register_script(_script("update.lua"))
        self._trim = redis.register_script(_script("trim.lua"))
        self._lease = redis.register_script(LEASE_SCRIPT)

    def order_record(self, client_order_id: str) -> str:
        """The worker's record of an order (not the exchange's), whose send token the
        guarded submit takes at the door (submit.lua)."""
        return self._keys.order(client_order_id)

    def key(self, name: str) -> str:
        return self._keys.paper(self.account, name)

    def watch_key(self, symbol: str, direction: Direction) -> str:
        return self.key(f"watch:{symbol}:{direction}")

    async def load_scripts(self) -> None:
        for script in (self._submit, self._update, self._trim, self._lease):
            await self.redis.script_load(script.script)

    # -- orders ----------------------------------------------------------------------------

    async def insert(self, items: Sequence[NewOrder],
                     guards: Sequence[tuple[str, str] | None] | None = None) -> list[int]:
        """Store new orders in one script call: per order 1 accepted, 0 the client id
        already exists. ``guards``: per order, the worker's order record and the send token
        to take on it as the order is taken (submit.lua), or None; -1 / -2 where that
        refused: the order no longer pending_submit / the token another delivery's."""
        keys, args = self.insert_call(items, guards)
        replies = await self._submit(keys=keys, args=args)
        return self.answers(items, replies)

    def insert_call(self, items: Sequence[NewOrder],
                    guards: Sequence[tuple[str, str] | None] | None = None
                    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``insert``'s call of ``SUBMIT_SCRIPT``, to be made
        on its own or inside the worker's own write of the orders (exchange.py,
        ``open_door``)."""
        keys = _KeyIndex([self.orders, self.received, self.book, self.expiry,
                          self.duplicates, self.finished])
        flat: list[str | int] = []
        stored: list[NewOrder] = []  # in the script's order: each placed after its entry
        for k, item in enumerate(items):
            guard = guards[k] if guards is not None else None
            flat += (item.client_order_id, item.record, item.ended_at,
                     *((0, "") if guard is None else (keys(guard[0]), guard[1])),
                     item.replaces)
            stored.append(item)
            if item.placed is not None:
                placed = item.placed
                flat += (placed.client_order_id, placed.record, placed.ended_at, 0, "", -1)
                stored.append(placed)
        args: list[Any] = [_msgpack.encode(flat)]
        for k, item in enumerate(stored, 1):
            if item.watch is not None:
                args += (k, keys(item.watch), item.score,
                         "" if item.expire_at is None else item.expire_at)
        return keys.keys, args

    @staticmethod
    def answers(items: Sequence[NewOrder], replies: Sequence[Any]) -> list[int]:
        """submit.lua's codes of ``items`` (``insert_call``'s), those of the orders placed
        with them left out (the entry's code is theirs)."""
        out: list[int] = []
        codes = iter(replies)
        for item in items:
            out.append(int(next(codes)))
            if item.placed is not None:
                next(codes)
        return out

    async def update(self, changes: Sequence[Change], now: int) -> list[bool]:
        """Compare-and-set new states in one script call; False where the version moved.
        An order a change ends is stamped finished at ``now``."""
        keys = _KeyIndex([self.orders, self.book, self.expiry, self.executions,
                          self.finished, self.received])
        args: list[Any] = [EXECUTIONS_MAXLEN, now, len(changes)]
        for change in changes:
            placed = change.placed
            args += [
                change.client_order_id,
                change.expected_version,
                change.record,
                1 if change.open else 0,
                keys(change.leave),
                keys(change.join),
                change.score,
                b"" if change.report is None else change.report,
                "" if placed is None else placed.client_order_id,
                "" if placed is None else placed.record,
                0 if placed is None else keys(placed.watch),
                0 if placed is None else placed.score,
            ]
        replies = await self._update(keys=keys.keys, args=args)
        return [reply == 1 for reply in replies]

    async def trim(self, cutoff: int, limit: int) -> tuple[int, int]:
        """Forget the orders finished by ``cutoff`` (epoch ms) and the stream entries older
        than it, at most ``limit`` of each; returns (orders forgotten, entries removed)."""
        keys = [self.orders, self.finished, self.received, self.duplicates, self.executions]
        forgotten, removed = await self._trim(keys=keys, args=[cutoff, limit])
        return int(forgotten), int(removed)

    async def get(self, client_order_id: str) -> PaperOrder | None:
        data = await self.redis.hget(self.orders, client_order_id)
        return None if data is None else decode_order(data)

    async def get_many(self, client_order_ids: Sequence[str]) -> list[PaperOrder | None]:
        if not client_order_ids:
            return []
        raw = await self.redis.hmget(self.orders, list(client_order_ids))
        return [None if data is None else decode_order(data) for data in raw]

    async def open_ids(self) -> list[str]:
        return sorted(_text(m) for m in await self.redis.smembers(self.book))

    async def woken(self, ranges: Sequence[tuple[str, str, str]], now: int,
                    limit: int, every: Sequence[str] = ()) -> list[str]:
        """Client ids of open orders that may need matching: those of each watch key whose
        score is within its (min, max) range, the GTD orders due by ``now``, and all of
        each ``every`` key (trailing stops: unbounded, as one left out of a pass would not
        follow the price; each costs a read per pass, a write only when its trail moved)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, low, high in ranges:
                pipe.zrangebyscore(key, low, high, start=0, num=limit)
            for key in every:
                # The whole set, asked as a score range: the worker's ACL user
                # (deploy/redis-users.acl) has ZRANGEBYSCORE, not ZRANGE.
                pipe.zrangebyscore(key, "-inf", "+inf")
            pipe.zrangebyscore(self.expiry, "-inf", now, start=0, num=limit)
            replies = await pipe.execute()
        seen: dict[str, None] = {}
        for reply in replies:
            for member in reply:
                seen[_text(member)] = None
        return list(seen)

    async def received_count(self) -> int:
        return int(await self.redis.xlen(self.received))

    # -- prices ------------------------------------------------------------------------------

    async def init_origin(self, now: int) -> int:
        """The walk's origin: ``now`` unless another worker set it first (SET NX)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.origin, now, nx=True)
            pipe.get(self.origin)
            _, value = await pipe.execute()
        return int(value)

    async def overrides(self) -> dict[str, Decimal]:
        raw: Mapping[bytes | str, bytes | str] = await self.redis.hgetall(self.prices)
        return {_text(k): Decimal(_text(v)) for k, v in raw.items()}

    async def override(self, symbol: str) -> Decimal | None:
        # A read, so asked again when the connection broke under it: after Redis restarts
        # or fails over, each pooled connection it closed fails its next command once, and
        # a reference price missing for that reason would deny an order.
        for attempt in range(READ_ATTEMPTS):
            try:
                value = await self.redis.hget(self.prices, symbol)
                break
            except RedisConnectionError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
        return None if value is None else Decimal(_text(value))

    async def set_override(self, symbol: str, price: Decimal | None) -> None:
        if price is None:
            await self.redis.hdel(self.prices, symbol)
        else:
            await self.redis.hset(self.prices, symbol, format(price, "f"))

    # -- matcher lease -----------------------------------------------------------------------

    async def lease(self, token: str, ttl_ms: int) -> bool:
        """Acquire or renew the matcher lease; True while ``token`` holds it."""
        return bool(await self._lease(keys=[self.matcher], args=[token, ttl_ms]) == 1)

    async def release(self, token: str) -> None:
        await self._lease(keys=[self.matcher], args=[token, 0])
