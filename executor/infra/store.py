"""Redis I/O for orders and results: the only module that writes order records, events and
result entries. Multi-key changes are single Lua scripts (infra/lua/*.lua), one call per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from producer.connect import home_node
from producer.contract import (
    Event,
    OrderState,
    Result,
    decoder,
    encode,
    encode_events,
)
from producer.keys import GROUP, Keys
from producer.replies import text

from ..model.order import Order
from ..model.positions import position_key
from ..model.states import is_terminal
from .attention import Attention
from .batch_read import BatchRead, raise_failed
from .coalesce import Coalescer, run_script

_order_decoder = decoder(Order)
# The short values of a script call go in one MessagePack argument (see infra/lua/*.lua); it
# writes the enums' values itself, cheaper than asking each for its ``.value``.
_pack = msgspec.msgpack.Encoder().encode
# The placeholders of an outcome without an order change, which finish.lua skips.
_NO_ORDER = (0, 0, 0, "", 0, 0, 0)


def _load_script(name: str) -> str:
    return (resources.files("executor.infra") / "lua" / name).read_text()


def compose(first: str, second: str) -> str:
    """One script that runs the script ``first`` and, only if it returned 1, ``second``,
    atomically: each sees its own KEYS and ARGV. Called with KEYS = first's then second's,
    ARGV = first's number of keys, first's number of args, first's args, second's args.
    Returns false when ``first`` did not return 1 (``second`` did not run), else what
    ``second`` returned. Each body runs as a Lua function, with KEYS and ARGV as its
    parameters, so the scripts are the files as they are."""
    return (
        "local function first(KEYS, ARGV)\n" + first + "\nend\n"
        "local function second(KEYS, ARGV)\n" + second + "\nend\n"
        "local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
        "if first({unpack(KEYS, 1, nk)}, {unpack(ARGV, 3, 2 + na)}) ~= 1 then\n"
        "  return false\n"
        "end\n"
        "return second({unpack(KEYS, nk + 1)}, {unpack(ARGV, 3 + na)})\n")


def _guarded(guard: ScriptCall | None, keys: list[str], args: list[Any]
             ) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of a script, or of ``compose(guard's script, it)``."""
    if guard is None:
        return keys, args
    return [*guard.keys, *keys], [len(guard.keys), len(guard.args), *guard.args, *args]


# A lean call's answer where something needs the records it left out: nothing was written.
AGAIN = 2


def compose_door(reserve: str, begin: str, door: str, finish: str | None = None,
                 lean: bool = False) -> str:
    """``compose(reserve, begin)`` followed, when ``begin`` created every one of its orders,
    by ``door``: an adapter's script that takes those orders (brokers/sending.py ``Door``),
    and, when ``finish`` is given, the door took every order (1 each) and every order's
    request is still pending, by ``finish``: finish.lua writing the outcomes the orders'
    answers make, known before the call, each a fresh item (expected seq -1). Then
    ``begin`` creates the records alone, and ``finish`` makes the rest (begin.lua's
    ``mode``; where every order is created pending_submit, ``begin`` only checks that none
    exists, and ``finish`` writes each record whole, once); where it does not run,
    ``begin``'s rest is made after the door. The door is told (``ARGV.fresh``) when every
    order it sees was just created pending_submit, so its guards need not read them, and
    where those records are written after it, it hands the send tokens it takes to that
    write (``ARGV.senders``); whether every request is still pending is one XPENDING over
    the batch's span of ids.
    ARGV = the three first scripts' numbers of keys and args, then each one's args; KEYS =
    each one's keys, in that order (``finish``'s: the rest of both). Returns false when
    ``reserve`` did not apply (nothing ran), else {what ``begin`` returned, what ``door``
    returned or false when it did not run (an order already existed: each goes the usual
    way)}, and with ``finish`` a third item, true, when it ran (its items are fresh: none
    is ever skipped).

    ``lean`` (with ``finish``, and a door that answers ``ARGV.probe``, submit.lua): the
    call carries begin's short values alone, not the records and events of the orders
    created pending_submit, which ``finish``'s records replace when it runs (a fifth of
    the bytes such a call carried for market orders, each read into Lua, and encoded by
    the worker). Whatever would need them is known before any write, and then it writes
    nothing and returns ``AGAIN``, and the caller makes the full call: an order not
    created pending_submit, one that exists (or twice in the batch), outcomes that are
    not every order's in order, a request no longer pending, an order the door would not
    take (its probe)."""
    finishing = finish is not None
    if lean and not finishing:
        raise ValueError("a lean call needs the outcomes' write")
    # Where the outcomes may follow, begin makes its rest only where they do not.
    rest = "    rest()\n" if finishing else ""
    head = [
        "" if finish is None else "local function finish(KEYS, ARGV)\n" + finish + "\nend\n",
        "local function reserve(KEYS, ARGV)\n" + reserve + "\nend\n",
        "local function begin(KEYS, ARGV)\n" + begin + "\nend\n",
        "local function door(KEYS, ARGV)\n" + door + "\nend\n",
        "local k1, a1 = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
        "local k2, a2 = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
        "local k3, a3 = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
        "local rk, ra = {unpack(KEYS, 1, k1)}, {unpack(ARGV, 7, 6 + a1)}\n"
        "local bk, ba = {unpack(KEYS, k1 + 1, k1 + k2)}, {unpack(ARGV, 7 + a1, 6 + a1 + a2)}\n"
        "local dk = {unpack(KEYS, k1 + k2 + 1, k1 + k2 + k3)}\n"
        "local da = {unpack(ARGV, 7 + a1 + a2, 6 + a1 + a2 + a3)}\n"
        # begin.lua's items: 7 values each, the request id second and the state third.
        # Where every order is created pending_submit, the door is told so (ARGV.fresh):
        # its guards need not read the state back (submit.lua); and where the outcomes may
        # follow, begin leaves the records to be written after the door (ARGV.deferred),
        # to which the door hands the send tokens it takes (ARGV.senders).
        "local items = cmsgpack.unpack(ba[1])\n"
        "local begun\n"
        "local fresh = true\n"
        "for m = 3, #items, 7 do\n"
        "  if items[m] ~= 'pending_submit' then\n"
        "    fresh = nil\n"
        "  end\n"
        "end\n"]
    if finishing:
        head.append(
            # finish.lua's KEYS[5] is the requests' stream and its ARGV[1] their group.
            "local fk = k1 + k2 + k3\n"
            "local stream, group = KEYS[fk + 5], ARGV[7 + a1 + a2 + a3]\n"
            "local function before(a, b)\n"
            "  local am, as = string.match(a, '^(%d+)-(%d+)$')\n"
            "  local bm, bs = string.match(b, '^(%d+)-(%d+)$')\n"
            "  if am ~= bm then\n"
            "    if #am ~= #bm then return #am < #bm end\n"
            "    return am < bm\n"
            "  end\n"
            "  if #as ~= #bs then return #as < #bs end\n"
            "  return as < bs\n"
            "end\n"
            # The outcomes write every record begin.lua left to them: one order change per
            # order, in begin's order (finish.lua's KEYS: 7, then an order key and an index
            # each).
            "local function matched(n)\n"
            "  if #KEYS - fk ~= 7 + 2 * n then return false end\n"
            "  for i = 1, n do\n"
            "    if KEYS[fk + 6 + 2 * i] ~= bk[3 * i] then return false end\n"
            "  end\n"
            "  return true\n"
            "end\n"
            # Whether the first n requests are all still pending is one XPENDING over the
            # span of their ids, each id looked for in its answer (other deliveries' entries
            # interleave in the span at most a batch or two of them); where the span holds
            # more than asked, the ids not in the answer are asked one by one.
            "local function pending(n)\n"
            "  local lo, hi\n"
            "  for i = 1, n do\n"
            "    local rid = items[7 * i - 5]\n"
            "    if lo == nil or before(rid, lo) then lo = rid end\n"
            "    if hi == nil or before(hi, rid) then hi = rid end\n"
            "  end\n"
            "  if lo == nil then return true end\n"
            "  local limit = 2 * n + 64\n"
            "  local span = redis.call('XPENDING', stream, group, lo, hi, limit)\n"
            "  local held = {}\n"
            "  for _, entry in ipairs(span) do\n"
            "    held[entry[1]] = true\n"
            "  end\n"
            "  for i = 1, n do\n"
            "    local rid = items[7 * i - 5]\n"
            "    if not held[rid] and (#span < limit\n"
            "        or #redis.call('XPENDING', stream, group, rid, rid, 1) == 0) then\n"
            "      return false\n"
            "    end\n"
            "  end\n"
            "  return true\n"
            "end\n"
            "local function finished(codes)\n"
            "  local fa = {unpack(ARGV, 7 + a1 + a2 + a3)}\n"
            "  fa.senders = da.senders\n"
            "  finish({unpack(KEYS, fk + 1)}, fa)\n"
            "  return {begun, codes, true}\n"
            "end\n")
    if lean:
        return "".join([
            *head,
            # Everything that would need the records left out is read before any write.
            f"if not fresh then return {AGAIN} end\n"
            "ba.mode, ba.deferred = 'record', true\n"
            "begun = begin(bk, ba)\n"
            "for i = 1, #begun do\n"
            f"  if begun[i] ~= 0 then return {AGAIN} end\n"
            "end\n"
            f"if not matched(#begun) or not pending(#begun) then return {AGAIN} end\n"
            "da.fresh, da.probe = true, true\n"
            f"if door(dk, da) ~= true then return {AGAIN} end\n"
            "da.probe = nil\n"
            "if reserve(rk, ra) ~= 1 then\n"
            "  return false\n"
            "end\n"
            "da.senders = {}\n"
            "local codes = door(dk, da)\n"
            "for i = 1, #begun do\n"
            "  if codes[i] ~= 1 then\n"
            # The probe said it would: an order now at the exchange has no record, a bug.
            "    return redis.error_reply('the door refused an order its probe took')\n"
            "  end\n"
            "end\n"
            "return finished(codes)\n"])
    script = [
        *head,
        "if reserve(rk, ra) ~= 1 then\n"
        "  return false\n"
        "end\n",
        "ba.mode, ba.deferred = 'record', fresh\n" if finishing else "",
        "begun = begin(bk, ba)\n",
        "local function rest()\n"
        "  ba.mode, ba.created = 'rest', begun\n"
        "  begin(bk, ba)\n"
        "end\n" if finishing else "",
        "for i = 1, #begun do\n"
        "  if begun[i] ~= 0 then\n" + rest +
        "    return {begun, false}\n"
        "  end\n"
        "end\n"
        # Every order was created just now: none has a send token yet.
        "da.fresh = fresh\n",
        "da.senders = fresh and {} or nil\n" if finishing else "",
        "local codes = door(dk, da)\n",
        "ba.senders = da.senders\n" if finishing else ""]
    if not finishing:
        return "".join([*script, "return {begun, codes}\n"])
    return "".join([
        *script,
        # Anything else, and begin's rest writes the records.
        "if not matched(#begun) then\n" + rest +
        "  return {begun, codes}\n"
        "end\n"
        "for i = 1, #codes do\n"
        "  if codes[i] ~= 1 then\n" + rest +
        "    return {begun, codes}\n"
        "  end\n"
        "end\n"
        "if not pending(#codes) then\n" + rest +
        "  return {begun, codes}\n"
        "end\n"
        "return finished(codes)\n"])


# (account, symbol) -> its (base asset, quote asset) at the account's broker (None: unknown).
AssetsOf = Callable[[str, str], tuple[str | None, str | None]]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """The keys and arguments of a call of one of infra/lua's scripts, to be made as part of
    another (``Store.begin``'s ``reserve``)."""

    keys: list[str]
    args: list[Any]


# An order's new place in the attention index: client id, account, seq read, due (None: out).
Reindex = tuple[str, str, int, int | None]


def decode_order(data: bytes | str) -> Order:
    order: Order = _order_decoder.decode(data)
    return order


@dataclass(slots=True)
class NewOrder:
    """An order to persist before submission, with its first events."""

    order: Order
    events: list[Event]


@dataclass(slots=True)
class Existing:
    """An order found under a client id that a request wanted to create."""

    request_id: str
    order: Order


@dataclass(slots=True)
class Outcome:
    """The final write for one request: its result, and the order change it made, if any."""

    request_id: str
    result: Result | None  # None: an order change with no result of its own (cancel_all)
    order: Order | None = None
    expected_seq: int = 0
    events: list[Event] = field(default_factory=list)
    # More fields of the result entry: a dead letter's raw:<field> (reclaim.py).
    entry_fields: Mapping[bytes, bytes] = field(default_factory=dict)
    # The request is acked with no result now: it comes when the order ends (an
    # algorithm's parent, background/algos.py).
    deferred: bool = False
    # The result of a request acked before (``deferred``): written with the order change
    # that ends the order, whose compare-and-set makes it once.
    late: bool = False


class NotDurable(Exception):
    """Redis could not confirm, within the configured time, that the orders' records reached
    the replicas (or the disk) the durability setting asks for: they are not sent."""


@dataclass(frozen=True, slots=True)
class Durability:
    """What must hold a write before an order is sent (``[redis] durability = "wait"``):
    ``replicas`` replicas acknowledged it and, with ``local``, this server's AOF has it on
    disk (WAITAOF, Redis >= 7.2), within ``timeout_ms``."""

    replicas: int
    local: bool
    timeout_ms: int

    def command(self) -> tuple[Any, ...]:
        if self.local:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def reached(self, reply: Any) -> bool:
        if self.local:
            local, replicas = int(reply[0]), int(reply[1])
            return local >= 1 and replicas >= self.replicas
        return int(reply) >= self.replicas


class Store:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, results_maxlen: int,
                 order_ttl_ms: int, durability: Durability | None = None,
                 attention: Attention | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.results_maxlen = results_maxlen
        self.order_ttl_ms = order_ttl_ms
        self.durability = durability
        # When the tracker must next look at an order, written with its record.
        self.attention = attention or Attention()
        # Each new order's symbol's assets are recorded (Keys.assets) before its first
        # write, once per process (``note_assets``).
        self.assets_of: AssetsOf | None = None
        self._assets_noted: set[tuple[str, str]] = set()
        self._begin = redis.register_script(_load_script("begin.lua"))
        self._reserve_begin = redis.register_script(
            compose(_load_script("risk_reserve.lua"), _load_script("begin.lua")))
        self._guarded_reserve_begin = redis.register_script(compose(
            _load_script("unchanged.lua"),
            compose(_load_script("risk_reserve.lua"), _load_script("begin.lua"))))
        self._send = redis.register_script(_load_script("send.lua"))
        self._send_loaded = False  # by script_load, for the pipeline with durability
        self._unsend = redis.register_script(_load_script("unsend.lua"))
        self._finish = redis.register_script(_load_script("finish.lua"))
        self._records = redis.register_script(_load_script("records.lua"))
        self._reindex = redis.register_script(_load_script("reindex.lua"))
        self._lists = redis.register_script(_load_script("lists.lua"))
        # (door script, with finish, guarded, lean) -> (the guard,) reserve, begin, it (and
        # finish), composed
        self._doors: dict[tuple[str, bool, bool, bool], Any] = {}
        # The creating writes of a batch's accounts, made side by side: one round trip.
        self.coalescer = Coalescer(redis)

    async def load_orders(self, client_order_ids: Sequence[str]) -> list[Order | None]:
        """Current records of these orders (None where there is none), in one round trip."""
        if not client_order_ids:
            return []
        raw = await self._records(keys=[self.keys.order(cid) for cid in client_order_ids])
        return [decode_order(data) if data else None for data in raw]

    def queue_records(self, batch: BatchRead, client_order_ids: Sequence[str]) -> None:
        """Queue ``load_orders``'s reads on ``batch`` (the batch's first read, with its other
        reads: pipeline/steps/prefetch.py); their replies go to ``parse_records``."""
        for cid in client_order_ids:
            batch.hget(self.keys.order(cid), "record")

    @staticmethod
    def parse_records(replies: Sequence[Any]) -> list[Order | None]:
        """``load_orders``'s answer from the replies of ``queue_records``: raises the error
        of a read that failed."""
        raise_failed(replies)
        return [decode_order(data) if data else None for data in replies]

    async def open_order_ids(self) -> list[str]:
        members = await self.redis.smembers(self.keys.open)
        return sorted(text(m) for m in members)

    # -- the attention index (attention.py): open orders by when the tracker is due ---------

    async def due_ids(self, account: str, until: int | None) -> list[str]:
        """The account's open orders due by ``until`` (epoch ms), soonest first; every one
        of them with None."""
        raw: Any = await self.redis.zrangebyscore(
            self.keys.due(account), "-inf", "+inf" if until is None else until)
        return [text(m) for m in raw]

    async def reindex(self, items: Sequence[Reindex], *, only_new: bool = False) -> None:
        """Set when each order is due next: (client id, account, the seq its record was
        read at, due epoch ms or None to drop it). Skipped where the record moved since
        (its writer set the time); an order whose record is gone leaves the index.
        ``only_new``: add orders missing from the index, never move one that is in it."""
        if not items:
            return
        keys: list[str] = []
        meta: list[Any] = []
        for cid, account, seq, due in items:
            keys += (self.keys.order(cid), self.keys.due(account))
            meta += (cid, seq, 0 if due is None else due)
        await self._reindex(keys=keys, args=[_pack(meta), "NX" if only_new else "XX"])

    # -- cancels deferred until their order has landed (steps/cancel.py, tracker.py) -----

    async def defer_cancels(self, requests: Mapping[str, str]) -> None:
        """Record cancels (client id -> the cancel's request id) for the tracker to send."""
        if requests:
            mapping: dict[Any, Any] = dict(requests)
            await self.redis.hset(self.keys.cancels, mapping=mapping)

    async def cancel_list(self, account: str, client_order_id: str, request_id: str) -> bool:
        """Mark the contingent list whose entry is ``client_order_id`` cancelled by the
        request ``request_id``, for the watcher to cancel its open exits
        (background/lists.py). False when there is no such list (over, or none)."""
        k = self.keys
        return bool(await self._lists(keys=[k.lists(account), k.lists_cancel, k.legacy_lists],
                                      args=["mark", client_order_id, request_id]))

    async def cancel_algo(self, account: str, client_order_id: str, request_id: str) -> bool:
        """Mark the algorithm whose parent is ``client_order_id`` cancelled by the request
        ``request_id``: its schedule stops (background/algos.py). False when it is over."""
        k = self.keys
        return bool(await self._lists(keys=[k.algos(account), k.algos_cancel, k.algos(account)],
                                      args=["mark", client_order_id, request_id]))

    async def keep_list(self, client_order_id: str) -> None:
        """Undo ``cancel_list``: the cancel of the entry failed, and it works on."""
        await self.redis.hdel(self.keys.lists_cancel, client_order_id)

    async def deferred_cancels(self) -> dict[str, str]:
        raw: Any = await self.redis.hgetall(self.keys.cancels)
        return {text(cid): text(rid) for cid, rid in raw.items()}

    async def drop_deferred_cancels(self, client_order_ids: Sequence[str]) -> None:
        if client_order_ids:
            await self.redis.hdel(self.keys.cancels, *client_order_ids)

    async def begin(self, items: Sequence[NewOrder]) -> list[Existing | None]:
        """Create each order unless its client id exists; None where it was created."""
        begun = await self._create(items, None)
        assert begun is not None
        return begun

    async def reserve_and_begin(self, items: Sequence[NewOrder], reserve: ScriptCall,
                                guard: ScriptCall | None = None
                                ) -> list[Existing | None] | None:
        """``begin``, made in one script after ``reserve``, the risk checks' compare-and-set
        of these orders' reservations (safety/risk/state.py): the orders are created only
        if it applied, and None is returned when it did not (nothing written). ``guard``:
        unchanged.lua's call, made first in the same script; when it does not pass,
        nothing runs and None is returned (a speculative write: pipeline/steps/risk.py)."""
        return await self._create(items, reserve, guard)

    async def reserve_begin_and_open(
            self, items: Sequence[NewOrder], reserve: ScriptCall, door: str,
            opening: ScriptCall, outcomes: Sequence[Outcome] = (),
            guard: ScriptCall | None = None, probes: bool = False,
    ) -> tuple[list[Existing | None], list[int] | None, bool] | None:
        """``reserve_and_begin``, and in the same script, once every order was created, the
        adapter's ``door`` script called with ``opening`` (the paper exchange taking them:
        brokers/sending.py ``Door``); then, with ``outcomes`` (each order's, as its answer
        from the door makes it), once the door took every order, ``finish``'s write of
        them. None when the reservations did not apply (nothing written); else what
        ``begin`` returns, the door's answer per order (None: an order already existed,
        and the door did not run) and whether the outcomes were written (all of them:
        fresh items are never skipped). ``guard``: as ``reserve_and_begin``'s.
        ``probes``: the door answers ``ARGV.probe`` (submit.lua), so outcomes for orders
        all created pending_submit, under distinct client ids, are first tried in a lean
        call, without the records the outcomes replace (``compose_door``); where that
        wrote nothing for want of them, the full call follows."""
        await self.note_assets(items)
        last = ScriptCall(*self._finish_call(outcomes, GROUP)) if outcomes else ScriptCall([], [])
        if (probes and outcomes and all(i.order.state == OrderState.PENDING_SUBMIT
                                        for i in items)
                and len({i.order.client_order_id for i in items}) == len(items)):
            reply = await self._open(items, reserve, door, opening, last, guard, True)
            if reply != AGAIN:
                return self._opened(reply)
        return self._opened(await self._open(items, reserve, door, opening, last, guard, False))

    async def _open(self, items: Sequence[NewOrder], reserve: ScriptCall, door: str,
                    opening: ScriptCall, last: ScriptCall, guard: ScriptCall | None,
                    lean: bool) -> Any:
        """The composed script's reply (``last``: finish.lua's call, or none)."""
        shape = (door, bool(last.keys), guard is not None, lean)
        script = self._doors.get(shape)
        if script is None:
            composed = compose_door(_load_script("risk_reserve.lua"), _load_script("begin.lua"),
                                    door, _load_script("finish.lua") if last.keys else None,
                                    lean)
            if guard is not None:
                composed = compose(_load_script("unchanged.lua"), composed)
            script = self._doors[shape] = self.redis.register_script(composed)
        keys, args = self._begin_call(items, records=not lean)
        last_keys, last_args = last.keys, last.args
        return await run_script(script, *_guarded(
            guard, [*reserve.keys, *keys, *opening.keys, *last_keys],
            [len(reserve.keys), len(reserve.args), len(keys), len(args),
             len(opening.keys), len(opening.args),
             *reserve.args, *args, *opening.args, *last_args]))

    def _opened(self, reply: Any) -> tuple[list[Existing | None], list[int] | None, bool] | None:
        if reply is None:
            return None
        begun, codes = reply[0], reply[1]
        return (self._begun(begun), None if codes is None else [int(c) for c in codes],
                len(reply) > 2)

    async def _create(self, items: Sequence[NewOrder], reserve: ScriptCall | None,
                      guard: ScriptCall | None = None) -> list[Existing | None] | None:
        if not items:
            return []
        await self.note_assets(items)
        keys, args = self._begin_call(items)
        if reserve is None:
            replies = await self._begin(keys=keys, args=args)
        else:
            script = self._reserve_begin if guard is None else self._guarded_reserve_begin
            replies = await run_script(script, *_guarded(
                guard, [*reserve.keys, *keys],
                [len(reserve.keys), len(reserve.args), *reserve.args, *args]))
            if replies is None:
                return None
        return self._begun(replies)

    async def note_assets(self, items: Sequence[NewOrder]) -> None:
        """Record the base and quote assets of the new orders' symbols (``assets_of``) in
        Keys.assets, before the orders' first write, the first time this process creates an
        order of each: a positions fold in a process with no brokers (``orderstream
        projector``) reads them there, as replay and the archive do. Where the broker knows
        neither yet (Binance's exchangeInfo not loaded), asked again at the next order."""
        if self.assets_of is None:
            return
        new: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        for item in items:
            spec = item.order.spec
            pair = (spec.account, spec.symbol)
            if pair in self._assets_noted or pair in new:
                continue
            base, quote = self.assets_of(*pair)
            if base is not None or quote is not None:
                new[pair] = (base, quote)
        if new:
            await self.redis.hset(self.keys.assets, mapping={
                position_key(*pair): msgspec.json.encode(list(assets))
                for pair, assets in new.items()})
            self._assets_noted.update(new)

    def _begin_call(self, items: Sequence[NewOrder], records: bool = True
                    ) -> tuple[list[str], list[Any]]:
        """begin.lua's keys and arguments for ``items`` (without their records and events
        unless ``records``: a lean call, ``compose_door``)."""
        keys = [self.keys.events, self.keys.open]
        meta: list[Any] = []
        payload: list[bytes] = []
        for item in items:
            order = item.order
            account = order.spec.account
            joins, joined = _registration(self.keys, order)
            keys += (self.keys.order(order.client_order_id), self.keys.due(account), joins)
            meta += (order.client_order_id, order.request_id, order.state, order.seq,
                     1 if item.events else 0,
                     self.attention.due(order, order.updated_at) or 0, joined)
            if records:
                payload.append(encode(order))
                if item.events:
                    payload.append(encode_events(item.events))
        return keys, [_pack(meta), *payload]

    @staticmethod
    def _begun(replies: Sequence[Any]) -> list[Existing | None]:
        """begin.lua's answer: None where the order was created, else the existing one."""
        out: list[Existing | None] = []
        for reply in replies:
            if reply == 0:
                out.append(None)
            else:
                rid, record = reply
                out.append(Existing(rid.decode() if isinstance(rid, bytes) else rid,
                                    decode_order(record)))
        return out

    async def take_send_tokens(self, tokens: Mapping[str, str]) -> list[int]:
        """Take the send token of each order (client id -> this delivery's token;
        infra/lua/send.lua): per order, in the mapping's order, 1 (this delivery's: it alone may
        send it), 0 (held by another delivery: look it up, never send) or -1 (no longer
        pending_submit). With durability configured, the same connection then waits for
        the replicas (or the AOF) to have everything written so far, the orders' records
        and the tokens included (one replication stream, so waiting for this connection's
        last write covers the earlier ones of any connection); ``NotDurable`` when they did
        not in time, after giving back the tokens taken."""
        if not tokens:
            return []
        keys = [self.keys.order(cid) for cid in tokens]
        args = list(tokens.values())
        durability = self.durability
        if durability is None:
            taken = await self._send(keys=keys, args=args)
            return [int(t) for t in taken]
        # The script by EVALSHA, loaded by us: a cluster pipeline neither loads registered
        # scripts nor allows its evalsha method (and a plain one checked SCRIPT EXISTS each
        # time). Loaded once, and again if the server lost it (restart, failover).
        home = await home_node(self.redis, self.keys.pending)
        for retry in (False, True):
            if not self._send_loaded:
                await self.redis.script_load(self._send.script)
                self._send_loaded = True
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command("EVALSHA", self._send.sha, len(keys), *keys, *args)
                    pipe.execute_command(*durability.command(), **home)
                    taken, reply = await pipe.execute()
                break
            except NoScriptError:  # it ran nothing: load it and send again
                self._send_loaded = False
                if retry:
                    raise
        if not durability.reached(reply):
            mine = [(k, a) for k, a, t in zip(keys, args, taken, strict=True) if int(t) == 1]
            await self._unsend(keys=[k for k, _ in mine], args=[a for _, a in mine])
            raise NotDurable(f"{' '.join(map(str, durability.command()))} answered {reply!r}")
        return [int(t) for t in taken]

    async def finish(self, outcomes: Iterable[Outcome], group: str = GROUP) -> list[str]:
        """Write results, order changes and XACKs atomically; returns request ids skipped
        because their order changed under us (they stay pending, to be redone)."""
        keys, args = self._finish_call(outcomes, group)
        if not args:
            return []
        conflicts = await self._finish(keys=keys, args=args)
        return [_text(c) for c in conflicts]

    def _finish_call(self, outcomes: Iterable[Outcome], group: str
                     ) -> tuple[list[str], list[Any]]:
        """finish.lua's keys and arguments for ``outcomes`` (no arguments: nothing to do)."""
        k = self.keys
        keys = [k.events, k.open, k.completed, k.failed, k.pending, k.completed_readers,
                k.failed_readers]
        meta: list[Any] = []
        payload: list[bytes] = []
        for outcome in outcomes:
            result, order = outcome.result, outcome.order
            cid = order.client_order_id if order is not None else None
            if result is None or outcome.deferred:
                meta += (outcome.request_id, cid or "", 5 if outcome.deferred else 1)
                payload.append(b"")
            else:
                meta += (outcome.request_id, result.client_order_id or cid or "",
                         (1 if result.ok else 2) + (2 if outcome.late else 0))
                payload.append(encode(result))
            if order is None:
                meta += _NO_ORDER
            else:
                keys += (k.order(order.client_order_id), k.due(order.spec.account))
                meta += (1, outcome.expected_seq, order.seq, order.state,
                         1 if is_terminal(order.state) else 0, 1 if outcome.events else 0,
                         self.attention.due(order, order.updated_at) or 0)
            meta.append(len(outcome.entry_fields))
            for name, value in outcome.entry_fields.items():
                payload += (name, value)
            if order is not None:
                payload.append(encode(order))
                if outcome.events:
                    payload.append(encode_events(outcome.events))
        if not meta:
            return keys, []
        return keys, [group, self.results_maxlen, self.order_ttl_ms, _pack(meta), *payload]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _registration(keys: Keys, order: Order) -> tuple[str, str]:
    """The hash a new order joins when it is created (begin.lua), and its JSON there ('':
    none): a contingent list's entry its account's lists, an algorithm's parent its
    account's algos, each watched by the worker emulating the account."""
    account = order.spec.account
    if order.spec.algo is not None:
        return keys.algos(account), msgspec.json.encode({"account": account}).decode()
    if order.spec.oto_trigger is not None:
        return keys.lists(account), msgspec.json.encode({"account": account}).decode()
    return keys.lists(account), ""
