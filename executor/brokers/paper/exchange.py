"""``PaperBroker``: the ``Broker`` protocol over the simulated exchange kept in Redis.

Every worker process shares one exchange (one account's keys), so an order survives the
worker that sent it and any worker can look it up by client id.

- Submits issued in the same event-loop iteration are coalesced into one script call; each
  caller gets its own result or error. The matching decision is made here, in process, at
  the cached reference price; Redis only stores it, refusing duplicate client ids.
- Reference prices are cached; a background task refreshes the operator overrides every
  ``match_interval_ms`` and, while it holds the matcher lease (one worker at a time),
  matches the resting orders the price has reached, storing each change with a
  compare-and-set on the order's version and appending it to the executions stream.
- Faults are injected from ``random.Random(seed)`` in process: ``failure_rate`` refuses a
  submit before it reaches the book, ``timeout_rate`` stores it but answers UnknownOutcome.
- The matcher also forgets, every ``TRIM_INTERVAL_MS`` (or ``retention_ms`` if shorter), the
  orders finished more than
  ``retention_ms`` ago and the stream entries as old (store.py), so the exchange's memory
  does not grow with every order it ever took.
- Native contingent lists (``native_lists``, lists.py): an entry is taken with its exit,
  which the exchange places in the same script call that stores the entry's full fill (at
  submission, or in a match pass). The workers' exit ``<entry>-x1`` then finds it here
  before anything is stored (``adopt_native_exit``, ``native_lists.adoption``): taken as
  it, replaced, refused, or placed; never a second exit for one position.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import hashlib
import itertools
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.connect import home_node
from producer.contract import ContractError, OrderSpec, OrderType, TimeInForce, decoder, encode
from producer.keys import Keys
from producer.replies import text

from ..base import (
    EMULATED,
    FINAL_BROKER_STATUSES,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    NeedsEmulation,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RetryableError,
    UnknownOutcome,
    Volume,
    refuse_conditional,
)
from ..native_lists import Adoption, adoption, entry_of, first_exit_id
from ..sending import Door
from . import lists, matching
from .config import PaperAccount, SymbolConfig
from .matching import Book, Direction
from .pricing import Prices
from .records import PaperOrder, encode_order, report
from .store import SUBMIT_SCRIPT, Change, ExchangeStore, NewOrder

log = logging.getLogger(__name__)
_FLOOR = decimal.Context(prec=28, rounding=ROUND_FLOOR)

MAX_SCRIPT_BATCH = 1_000  # orders per submit script call, so one call never blocks Redis long
AT_RECORD_MEMORY = 10_000  # answers of orders taken with their record, kept until asked
# What open_door takes: the plain types, whose submit is the decision alone.
_AT_RECORD = frozenset({OrderType.MARKET, OrderType.LIMIT})
MATCH_LIMIT = 1_000  # orders woken per watch key per match pass
CANCEL_ATTEMPTS = 20  # compare-and-set retries of one cancel racing the matcher
VALID_MEMORY = 10_000  # order shapes remembered as passing the filters
TRIM_INTERVAL_MS = 10_000  # how often the matcher forgets what is past retention_ms
TRIM_BATCH = 1_000  # orders (and stream entries) forgotten per script call, so one call
TRIM_CALLS = 1_000  # never blocks Redis long; calls per pass at most
# Client ids the exchange takes (the contract's, as Binance's newClientOrderId is bounded).
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# A placeholder in submit_many's answers until the script call returns; never returned.
_NOT_YET = PermanentError("not answered")
_report_decoder = decoder(BrokerOrder)


def _unknown(exc: BaseException) -> UnknownOutcome:
    return UnknownOutcome(f"paper exchange: outcome unknown ({type(exc).__name__}: {exc})")


def _fail(batch: list[tuple[NewOrder, asyncio.Future[bool]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(_unknown(exc))


class PaperBroker:
    """A simulated exchange for one paper account."""

    # Its book is in Redis and every write there is one script: a lookup by client id after
    # our own send failed tells for certain whether that send took effect
    # (pipeline/steps/submit.py).
    definitive_not_found = True

    def __init__(self, account: str, config: PaperAccount, redis: aioredis.Redis, keys: Keys,
                 clock: Callable[[], int] | None = None) -> None:
        self.account = account
        self.config = config
        self.clock = clock or _now_ms
        self.store = ExchangeStore(redis, keys, account)
        self.prices = Prices(config, self.clock)
        self._rng = random.Random(config.seed)
        self._latency_s = config.latency_ms / 1000
        # Its calls wait on nothing but Redis unless it simulates a broker's latency or
        # faults (Broker.waits): then it is waited on as a remote broker is.
        self.waits = bool(self._latency_s or config.failure_rate or config.timeout_rate)
        self._books: dict[str, Book] = {}
        self._valid: dict[tuple[object, ...], SymbolConfig] = {}  # see _check
        self._queue: list[tuple[NewOrder, asyncio.Future[bool]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        # This instance's identity: in submission ids and as the matcher lease's holder.
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._submissions = itertools.count(1)
        self._lease_ms = max(1_000, 5 * config.match_interval_ms)
        self.is_matcher = False  # holds the matcher lease (as of the last pass)
        self._trimmed_at = 0  # when this instance last forgot finished orders (epoch ms)
        self._overrides_at: int | None = None  # when the overrides were last read (epoch ms)
        # Orders taken with their worker's record (open_door): client id -> the token they
        # were taken under, the record, submit.lua's code; until the submit step asks.
        self._at_record: dict[str, tuple[str, PaperOrder, int]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Load the scripts, agree on the walk's origin, and start the background task that
        refreshes prices and matches (``background=False``: an operator's tool, or a test
        that calls ``refresh_prices`` / ``match_once`` itself)."""
        await self.store.load_scripts()
        self.prices.set_origin(await self.store.init_origin(self.clock()))
        await self.refresh_prices()
        if self.config.prices == "walk":
            # An exchange whose origin is days old has a long path to catch up on (about a
            # second per week of 1 s steps): walk it off the event loop, once.
            for symbol in self.config.symbols:
                await asyncio.to_thread(self.prices.model_price, symbol)
        self._started = True
        self._closing = False
        if background:
            self._task = asyncio.create_task(self._run(), name=f"paper-matcher:{self.account}")

    async def close(self) -> None:
        # redis-py may turn a cancellation that lands inside a command into a timeout error,
        # so the task also stops on this flag.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self.is_matcher:
            try:
                await self.store.release(self.token)
            except RedisError as exc:
                log.warning("paper %s: could not release the matcher lease: %s", self.account,
                            exc)
            self.is_matcher = False
        self._started = False

    # -- the Broker protocol -----------------------------------------------------------------

    def check(self, order: OrderSpec) -> None:
        self._check(order)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        replaces = 0
        if entry_of(order) is not None:
            # Before the door, whose duplicate client id would refuse it: the exit the
            # exchange holds natively under this id is taken as it, or replaced.
            adopted, replaces = await self._adopt(client_order_id, order)
            if adopted is not None:
                return adopted
        record, item, timeout = self._prepare(client_order_id, order, replaces)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._queue:
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        self._queue.append((item, future))
        return self._answer(record, await future, timeout)

    async def submit_many(
        self, orders: Sequence[tuple[str, OrderSpec]]
    ) -> list[BrokerOrder | BrokerError]:
        """Submit a batch in as few script calls as possible: the worker's hot path. Each
        order gets its own outcome, exactly as ``submit`` would have answered it."""
        # Without guards no answer is a refusal code.
        return cast(list[BrokerOrder | BrokerError], await self._submit_many(orders, None))

    async def submit_many_guarded(
        self, orders: Sequence[tuple[str, OrderSpec]], tokens: Mapping[str, str]
    ) -> list[BrokerOrder | BrokerError | int]:
        """``submit_many``, taking each order's send token (client id -> token) on the
        worker's record of the order in the script that takes the order
        (brokers/sending.py, submit.lua): the exchange is in the worker's Redis, so the
        token is taken at its very door, and a worker that dies before leaves none it never
        used. Where the token was refused, send.lua's code instead of an answer: 0 another
        delivery holds it, -1 the worker's order is no longer pending_submit."""
        return await self._submit_many(
            orders, [(self.store.order_record(cid), tokens[cid]) for cid, _ in orders])

    def open_door(self, orders: Sequence[tuple[str, OrderSpec]],
                  tokens: Mapping[str, str]) -> Door | None:
        """Take new orders inside the worker's own write that records them
        (infra/store.py ``reserve_begin_and_open``; brokers/sending.py ``door_for``): the
        decision made here now, as ``submit`` would make it, and the door's script call,
        each order's send token taken on its worker record in it, as at ``submit``'s door.
        Once the write ran, ``opened`` keeps each order's answer, and the submit step's
        call of that order under that token gets it without a call of its own. None (each
        goes the usual way) unless every order is a plain market or limit order the
        exchange takes (anything it refuses is refused at the submit step, as ever) and the
        account injects no latency or faults (their draws stay the submit step's)."""
        config = self.config
        if not config.take_with_record or self.waits or not self._started or not orders:
            return None
        prepared: list[tuple[str, PaperOrder, NewOrder]] = []
        for cid, order in orders:
            # An exit of a list is looked up first (adopt_native_exit): the exchange may
            # hold it natively under its very id.
            if (order.type not in _AT_RECORD or order.algo is not None
                    or order.display_quantity is not None or order.take_profit is not None
                    or order.stop_loss is not None or entry_of(order) is not None):
                return None
            try:
                record, item, _ = self._prepare(cid, order)
            except (BrokerError, ContractError):
                return None
            prepared.append((cid, record, item))
        keys, args = self.store.insert_call(
            [item for _, _, item in prepared],
            [(self.store.order_record(cid), tokens[cid]) for cid, _, _ in prepared])

        def opened(codes: Sequence[int]) -> None:
            for (cid, record, _), code in zip(prepared, codes, strict=True):
                self._at_record[cid] = (tokens[cid], record, int(code))
            while len(self._at_record) > AT_RECORD_MEMORY:
                del self._at_record[next(iter(self._at_record))]
        return Door(SUBMIT_SCRIPT, keys, args, opened,
                    [report(record) for _, record, _ in prepared], probes=True)

    async def _submit_many(
        self, orders: Sequence[tuple[str, OrderSpec]],
        guards: Sequence[tuple[str, str]] | None,
    ) -> list[BrokerOrder | BrokerError | int]:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        out: list[BrokerOrder | BrokerError | int] = []
        pending: list[tuple[int, PaperOrder | BrokerOrder, NewOrder, bool]] = []
        for k, (client_order_id, order) in enumerate(orders):
            taken = self._at_record.pop(client_order_id, None)
            if taken is not None and guards is not None and taken[0] == guards[k][1]:
                # Taken with its record, under this very delivery's token (open_door).
                _, taken_record, taken_code = taken
                out.append(self._answered(taken_record, taken_code, timeout=False))
                continue
            try:
                replaces = 0
                if entry_of(order) is not None:
                    adopted, replaces = await self._adopt(client_order_id, order)
                    if adopted is not None:
                        # Under this delivery's send token, taken at the door as a send's
                        # is (a record "": nothing stored).
                        pending.append((len(out), adopted, NewOrder(client_order_id, ""),
                                        False))
                        out.append(_NOT_YET)
                        continue
                record, item, timeout = self._prepare(client_order_id, order, replaces)
            except BrokerError as exc:
                out.append(exc)
                continue
            pending.append((len(out), record, item, timeout))
            out.append(_NOT_YET)
        if not pending:
            return out
        stored = await self._store([item for _, _, item, _ in pending],
                                   None if guards is None else [guards[i] for i, *_ in pending])
        for (index, answer, _, timeout), code in zip(pending, stored, strict=True):
            out[index] = (code if isinstance(code, UnknownOutcome)
                          else self._answered(answer, code, timeout))
        return out

    def _answered(self, record: PaperOrder | BrokerOrder, code: int, timeout: bool
                  ) -> BrokerOrder | BrokerError | int:
        """The answer to a submit from submit.lua's code for it (``record`` a report: a
        native exit adopted under the send token)."""
        if code < 0:
            # As send.lua says it: -1 the order moved on, 0 another delivery's token.
            return -1 if code == -1 else 0
        if isinstance(record, BrokerOrder):
            return record
        try:
            return self._answer(record, code == 1, timeout)
        except BrokerError as exc:
            return exc

    async def _store(self, items: Sequence[NewOrder],
                     guards: Sequence[tuple[str, str]] | None = None
                     ) -> list[int | UnknownOutcome]:
        """Store new orders in script calls of bounded size: per order, accepted (1), a
        duplicate client id (0), refused by its guard (-1, -2: ExchangeStore.insert), or
        unknown when its script call failed (it may or may not have run)."""
        out: list[int | UnknownOutcome] = []
        for start in range(0, len(items), MAX_SCRIPT_BATCH):
            chunk = items[start:start + MAX_SCRIPT_BATCH]
            try:
                out += await self.store.insert(
                    chunk, None if guards is None else guards[start:start + MAX_SCRIPT_BATCH])
            except Exception as exc:
                out += [_unknown(exc)] * len(chunk)
        return out

    def _prepare(self, client_order_id: str, order: OrderSpec, replaces: int = 0
                 ) -> tuple[PaperOrder, NewOrder, bool]:
        """Decide what the exchange does with a new order (in process, at the cached
        price); the record still has to be stored. Raises what the exchange would answer
        before storing anything. ``replaces``: the version of the ended native exit stored
        under this id, which the order replaces (``_adopt``)."""
        if not self._started:
            raise RuntimeError("PaperBroker.start() must be awaited before submit")
        config = self.config
        if not _CLIENT_ID.fullmatch(client_order_id):
            raise PermanentError(f"paper exchange refused the client order id "
                                 f"{client_order_id!r}: it must match {_CLIENT_ID.pattern}")
        try:
            sym = self._check(order)
        except ContractError as exc:
            raise PermanentError(f"paper exchange refused the order: {exc}") from None
        if config.failure_rate and self._rng.random() < config.failure_rate:
            raise RetryableError("paper exchange: simulated failure, the order was not sent")
        timeout = bool(config.timeout_rate) and self._rng.random() < config.timeout_rate
        now = self.clock()
        book = self._book(order.symbol, sym, now)
        record = matching.submit(client_order_id, self.broker_order_id(client_order_id), order,
                                 book, sym, config, now,
                                 f"{self.token}:{next(self._submissions)}")
        if replaces:
            # Above the replaced one's, so no change computed from it ever applies to this.
            record.version = replaces + 1
        record.exit = lists.native_exit(client_order_id, order, config, self._check)
        item = self._new_order(record, sym, now)
        item.replaces = replaces
        placed = self._placed(None, record, book, sym, now)
        if placed is not None:
            item.placed = self._new_order(placed, sym, now)
        return record, item, timeout

    def _new_order(self, record: PaperOrder, sym: SymbolConfig, now: int) -> NewOrder:
        """A new order's record as the submit script stores it, and where it rests."""
        item = NewOrder(record.client_order_id, encode_order(record).decode(),
                        ended_at=0 if record.is_open else now)
        if record.is_open:
            item.watch, item.score = self._watch(record, sym)
            if record.spec.time_in_force is TimeInForce.GTD:
                item.expire_at = record.spec.expire_at
        return item

    def _placed(self, before: PaperOrder | None, after: PaperOrder, book: Book,
                sym: SymbolConfig, now: int) -> PaperOrder | None:
        """``lists.placed_exit``. An exit it cannot make (a record the exchange cannot
        read as an order) is left to the workers, who publish it once the entry has
        ended and find none here: the fill is stored all the same, never held up."""
        if after.exit is None:  # every order but a native list's entry: nothing to make
            return None
        try:
            return lists.placed_exit(before, after,
                                     self.broker_order_id(first_exit_id(after.client_order_id)),
                                     book, sym, self.config, now)
        except Exception:
            log.exception("paper %s: the native exit of %s could not be made; left to the "
                          "workers", self.account, after.client_order_id)
            return None

    def _check(self, order: OrderSpec) -> SymbolConfig:
        """``matching.check``, remembering the parameters that passed: the worker checks an
        order before persisting it and the exchange again on submit, and a flow of orders
        repeats a few shapes. The filters depend on nothing else (the config is fixed)."""
        if self.config.emulate_conditional:
            refuse_conditional(order, "paper (emulate_conditional)")
            if order.type is OrderType.OCO:
                raise NeedsEmulation(f"type oco is left to the emulator by this account "
                                     f"(emulate_conditional; {EMULATED})", "type")
        key = (order.symbol, order.type, order.quantity, order.price, order.stop_price,
               order.stop_limit_price, order.time_in_force, order.expire_at is None,
               order.trailing_offset is None, order.limit_offset is None)
        try:
            sym = self._valid.get(key)
        except TypeError:  # an unhashable amount (a signalling NaN): check it the long way
            return matching.check(order, self.config)
        if sym is None:
            sym = matching.check(order, self.config)
            if len(self._valid) >= VALID_MEMORY:
                self._valid.clear()
            self._valid[key] = sym
        return sym

    @staticmethod
    def _answer(record: PaperOrder, accepted: bool, timeout: bool) -> BrokerOrder:
        """The reply to a stored (or refused) submit."""
        if not accepted:
            raise DuplicateClientId(
                f"duplicate client order id {record.client_order_id}: the paper exchange "
                "already has an order with it"
            )
        if timeout:
            raise UnknownOutcome("paper exchange: simulated timeout after the order was sent")
        return report(record)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        for _ in range(CANCEL_ATTEMPTS):
            order = await self._load(client_order_id, symbol)
            if not order.is_open:
                raise NotCancellable(f"order {client_order_id} is {order.status}")
            cancelled = msgspec.structs.replace(
                order, version=order.version + 1, status=BrokerStatus.CANCELLED,
                updated_at=self.clock())
            change = self._change(order, cancelled, self.config.symbols[order.spec.symbol])
            try:
                applied = await self.store.update([change], self.clock())
            except RedisError as exc:
                raise UnknownOutcome(f"paper exchange: cancel outcome unknown: {exc}") from None
            if applied[0]:
                return report(cancelled)
        raise RetryableError(f"order {client_order_id} kept changing while being cancelled")

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        return report(await self._load(client_order_id, symbol))

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                       ) -> list[BrokerOrder | BaseException]:
        """``get_order`` of each order, in one read of the exchange's orders (a tracker's
        reconcile looks thousands up: one command each was most of its cost)."""
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        try:
            stored = await self.store.get_many([cid for cid, _ in orders])
        except RedisError as exc:
            unavailable = RetryableError(f"paper exchange unavailable: {exc}")
            return [unavailable for _ in orders]
        return [OrderNotFound(f"order {cid} ({spec.symbol}) not found")
                if order is None or order.spec.symbol != spec.symbol else report(order)
                for (cid, spec), order in zip(orders, stored, strict=True)]

    async def ping(self) -> None:
        """Raise if the exchange cannot be reached: it lives in Redis, so Redis must answer."""
        redis = self.store.redis
        await redis.ping(**await home_node(redis, self.store.orders))

    def quote_asset(self, symbol: str) -> str | None:
        sym = self.config.symbols.get(symbol)
        return None if sym is None else sym.quote_asset

    def base_asset(self, symbol: str) -> str | None:
        sym = self.config.symbols.get(symbol)
        return None if sym is None else sym.base_asset

    def step_size(self, symbol: str) -> Decimal | None:
        """The quantity step a closing order is rounded down to (background/exits.py)."""
        sym = self.config.symbols.get(symbol)
        return None if sym is None else sym.step_size

    def tick_size(self, symbol: str) -> Decimal | None:
        """The price tick the emulator rounds a trailing trigger to (as this exchange's own
        trailing stops do)."""
        sym = self.config.symbols.get(symbol)
        return None if sym is None else sym.tick_size

    async def updates(self) -> AsyncIterator[BrokerOrder]:
        """Changes of resting orders as the matcher (any worker's) makes them: the executions
        stream, followed from now on (the tracker's polling catches up on the past)."""
        cursor = "$"
        while True:
            reply: Any = await self.store.redis.xread({self.store.executions: cursor},
                                                      count=500, block=1_000)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    cursor = text(entry_id)
                    yield _report_decoder.decode(fields[b"data"])

    # -- native lists: an entry's exit placed by the exchange on its fill (lists.py) ----------

    async def _native_of(self, entry: str) -> PaperOrder | None:
        """The exit the exchange placed for ``entry`` natively (``<entry>-x1``, marked as
        its), None when there is none (not sent natively, ended before its full fill, or
        forgotten). Its own record is the truth: no worker record is asked first
        (native_exits.sent_natively), as it is a read of this same Redis."""
        try:
            found = await self.store.get(first_exit_id(entry))
        except RedisError as exc:
            raise RetryableError(f"paper exchange unavailable: {exc}") from None
        return found if found is not None and found.exit_of == entry else None

    async def adopt_native_exit(self, client_order_id: str, order: OrderSpec
                                ) -> BrokerOrder | None:
        """An exit of a list arriving to be placed (by ``submit``, or by the emulator
        before it would hold one): the native exit of its entry taken as it (its report),
        or None: ours is placed (after the native one was cancelled, when it had to be
        replaced). A native exit that traded and is not this one: ``PermanentError``."""
        adopted, _ = await self._adopt(client_order_id, order)
        return adopted

    async def _adopt(self, client_order_id: str, order: OrderSpec
                     ) -> tuple[BrokerOrder | None, int]:
        """``adopt_native_exit``, and the version of the ended native exit stored under
        ``client_order_id`` that ours must replace there (0: none; the exchange's ids are
        unique while it remembers an order).

        - none there, or ended untraded (never placed, cancelled, rejected): placed;
        - this is it (``<entry>-x1``) for the quantity it holds, or it has traded (never
          cancelled into a second exit): adopted, never stored a second time;
        - traded, and this is a later exit: refused;
        - else (the workers capped the exit by the position, or this is a later exit: the
          first was refused before it got here): the native one is cancelled first."""
        entry = entry_of(order)
        if entry is None:
            return None, 0
        native = await self._native_of(entry)
        if native is None:
            return None, 0
        first = first_exit_id(entry)
        held = native.spec.quantity
        traded = native.filled_quantity > 0
        verdict = adoption(client_order_id, entry, order.quantity, held=held or Decimal(0),
                           traded=traded, ended=native.status in FINAL_BROKER_STATUSES)
        if verdict is Adoption.PLACE:
            log.info("paper %s: the native exit of %s ended untraded (%s); %s is placed",
                     self.account, entry, native.status, client_order_id)
            return None, native.version if client_order_id == first else 0
        if verdict is Adoption.ADOPT:
            if held != order.quantity:
                log.warning("paper %s: the native exit of %s holds %s and has traded; taken "
                            "as %s for %s as it is", self.account, entry, held,
                            client_order_id, order.quantity)
            log.info("paper %s: exit %s is the native exit the exchange placed for %s: taken "
                     "as it, not placed again", self.account, client_order_id, entry)
            return report(native), 0
        if verdict is Adoption.REFUSE:
            log.error("paper %s: the native exit of %s has traded, and %s is not it: not "
                      "placed; check the position", self.account, entry, client_order_id)
            raise PermanentError(f"the native exit of {entry} at the paper exchange has "
                                 f"traded: {client_order_id} is not placed")
        after = await self._end_native(entry, order.symbol)
        if after is not None and after.filled_quantity > 0:
            raise PermanentError(f"the native exit of {entry} traded while being replaced: "
                                 f"{client_order_id} is not placed")
        log.warning("paper %s: the native exit of %s (%s) cancelled: %s for %s is placed "
                    "instead", self.account, entry, held, client_order_id, order.quantity)
        return None, (after.version if after is not None and client_order_id == first
                      else 0)

    async def _end_native(self, entry: str, symbol: str) -> PaperOrder | None:
        """Cancel the native exit of ``entry`` if it is open; it as it ended (None: no
        longer there). ``RetryableError`` while it is still open."""
        with contextlib.suppress(NotCancellable, OrderNotFound):  # ended meanwhile: read
            await self.cancel(first_exit_id(entry), symbol)
        after = await self._native_of(entry)
        if after is not None and after.is_open:
            raise RetryableError(f"paper: the native exit of {entry} is still open after "
                                 "its cancel")
        return after

    async def end_native_exits(self, entry: str, symbol: str, oco: bool) -> bool:
        """Called by the lists watcher before it ends the list of an entry sent natively
        whose exit was never taken as an order of ours (the list was cancelled, or no
        position is left to protect): the native exit still open at the exchange is
        cancelled, so that none is left there untracked. Whether none is open now (False:
        the exchange could not tell; the watcher asks again at its next pass)."""
        try:
            native = await self._native_of(entry)
            if native is None or not native.is_open:
                return True
            after = await self._end_native(entry, symbol)
        except BrokerError as exc:
            log.warning("paper %s: the native exit of %s could not be cancelled (%s); tried "
                        "again at the next pass", self.account, entry, exc)
            return False
        if after is not None and after.filled_quantity > 0:
            log.error("paper %s: the native exit of %s traded (%s) and is not an order of "
                      "ours: check the position", self.account, entry, after.filled_quantity)
        log.warning("paper %s: the native exit of %s cancelled: its list ended without an "
                    "exit of ours", self.account, entry)
        return True

    # -- operators and tests -----------------------------------------------------------------

    def broker_order_id(self, client_order_id: str) -> str:
        """The exchange's id of an order: deterministic (a hash of account and client id),
        so a rerun gives the same ids, yet unlike the client id, so code that mixes the two
        up fails here as it would at a real exchange."""
        key = f"{self.account}:{client_order_id}".encode()
        return "P" + hashlib.blake2b(key, digest_size=8).hexdigest()

    async def open_orders(self, symbol: str | None = None) -> list[BrokerOrder]:
        """The exchange's open orders (all symbols, or one), oldest first."""
        try:
            orders = await self.store.get_many(await self.store.open_ids())
        except RedisError as exc:
            raise RetryableError(f"paper exchange unavailable: {exc}") from None
        found = [o for o in orders if o is not None and o.is_open
                 and (symbol is None or o.spec.symbol == symbol)]
        found.sort(key=lambda o: (o.created_at, o.client_order_id))
        return [report(o) for o in found]

    async def set_price(self, symbol: str, price: Decimal | None) -> None:
        """Set (or, with None, clear) the reference price of ``symbol`` for every worker."""
        if symbol not in self.config.symbols:
            raise ContractError(f"unknown symbol {symbol!r}", "symbol")
        if price is not None and (not price.is_finite() or price <= 0):
            raise ContractError(f"price must be positive, got {price}", "price")
        await self.store.set_override(symbol, price)
        overrides = dict(self.prices.overrides)
        if price is None:
            overrides.pop(symbol, None)
        else:
            overrides[symbol] = price
        self.prices.set_overrides(overrides)

    async def reference_price(self, symbol: str) -> Decimal:
        """The reference price now: the override, else the model's. The overrides as this
        exchange fills at them (refreshed every ``match_interval_ms``), so that the risk
        checks value a market order at the price it fills at, without a Redis read on the
        order's path; read from Redis when they were not refreshed for two intervals (an
        operator's tool without the background task, or a pass that failed)."""
        if symbol not in self.config.symbols:
            raise ContractError(f"unknown symbol {symbol!r}", "symbol")
        now = self.clock()
        if (self._overrides_at is not None
                and now - self._overrides_at <= 2 * self.config.match_interval_ms):
            return self.prices.price(symbol, now)
        override = await self.store.override(symbol)
        return override if override is not None else self.prices.model_price(symbol, now)

    async def trigger_price(self, symbol: str) -> Decimal | None:
        """The price this exchange's own triggers and fills see now (overrides as of its
        last refresh, every ``match_interval_ms``): the emulator watches this one, so an
        emulated order fires at the price it then fills at, as a native one does."""
        if symbol not in self.config.symbols:
            return None
        return self.prices.price(symbol, self.clock())

    async def traded_volume(self, symbol: str, since: int) -> Volume | None:
        """The market's volume from ``since`` to now: the symbol's ``volume_per_minute``
        (the simulated other traders' flow; this exchange's own fills are not counted),
        rounded down (never more than traded); None for a symbol without one."""
        config = self.config.symbols.get(symbol)
        if config is None or config.volume_per_minute is None:
            return None
        now = self.clock()
        if now <= since:
            return Volume(Decimal(0), since)
        traded = _FLOOR.divide(_FLOOR.multiply(config.volume_per_minute, now - since), 60_000)
        return Volume(traded, now)

    async def received_count(self) -> int:
        """How many orders reached the exchange (entries of the ``received`` stream)."""
        return await self.store.received_count()

    async def refresh_prices(self) -> None:
        read_at = self.clock()
        self.prices.set_overrides(await self.store.overrides())
        self._overrides_at = read_at

    async def match_once(self) -> int:
        """One match pass over the resting orders the prices have reached; returns how many
        orders changed. The background task calls it while it holds the lease; calling it
        from two workers at once is safe (compare-and-set), just wasteful."""
        now = self.clock()
        books: dict[str, Book] = {}
        ranges: list[tuple[str, str, str]] = []
        every: list[str] = []  # untriggered trailing stops: all of them, every pass
        for name, symbol in self.config.symbols.items():
            book = books[name] = self._book(name, symbol, now)
            tick = symbol.tick_size
            ranges.append((self.store.watch_key(name, Direction.DOWN),
                           str(matching.ticks_up(book.ref, tick)), "+inf"))
            ranges.append((self.store.watch_key(name, Direction.UP), "-inf",
                           str(matching.ticks_down(book.ref, tick))))
            every.append(self.store.watch_key(name, Direction.EVERY))
        ids = await self.store.woken(ranges, now, MATCH_LIMIT, every)
        if not ids:
            return 0
        changes: list[Change] = []
        for order in await self.store.get_many(ids):
            if order is None:
                continue
            sym = self.config.symbols.get(order.spec.symbol)
            if sym is None:  # the symbol left the config; its orders stay as they are
                continue
            book = books[order.spec.symbol]
            new = matching.advance(order, book, sym, self.config, now)
            if new is not None:
                changes.append(self._change(order, new, sym,
                                            self._placed(order, new, book, sym, now)))
        if not changes:
            return 0
        return sum(await self.store.update(changes, now))

    async def forget_finished(self) -> int:
        """Forget the orders that finished more than ``retention_ms`` ago, and the stream
        entries as old; returns how many orders were forgotten. The background task calls
        it every ``TRIM_INTERVAL_MS`` while it holds the lease; safe from anywhere."""
        cutoff = self.clock() - self.config.retention_ms
        total = 0
        for _ in range(TRIM_CALLS):
            forgotten, removed = await self.store.trim(cutoff, TRIM_BATCH)
            total += forgotten
            if forgotten < TRIM_BATCH and not removed:
                break
        return total

    # -- internals ---------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Send every submit queued in this loop iteration, in script calls of bounded size."""
        batch, self._queue = self._queue, []
        try:
            stored = await self._store([item for item, _ in batch])
        except BaseException as exc:  # cancelled: no caller may wait for ever
            _fail(batch, exc)
            raise
        for (_, future), ok in zip(batch, stored, strict=True):
            if future.done():
                continue
            if isinstance(ok, UnknownOutcome):
                future.set_exception(ok)
            else:
                future.set_result(ok == 1)

    async def _load(self, client_order_id: str, symbol: str) -> PaperOrder:
        try:
            order = await self.store.get(client_order_id)
        except RedisError as exc:
            raise RetryableError(f"paper exchange unavailable: {exc}") from None
        if order is None or order.spec.symbol != symbol:
            raise OrderNotFound(f"order {client_order_id} ({symbol}) not found")
        return order

    def _book(self, symbol: str, sym: SymbolConfig, now: int) -> Book:
        ref = self.prices.price(symbol, now)
        book = self._books.get(symbol)
        if book is None or book.ref != ref:
            book = self._books[symbol] = Book(ref, sym, self.config)
        return book

    def _watch(self, order: PaperOrder, sym: SymbolConfig) -> tuple[str | None, int]:
        at = matching.watch(order, sym)
        if at is None:
            return None, 0
        return self.store.watch_key(order.spec.symbol, at[0]), at[1]

    def _change(self, old: PaperOrder, new: PaperOrder, sym: SymbolConfig,
                placed: PaperOrder | None = None) -> Change:
        # A trailing stop's trail moving is the exchange's own bookkeeping: nothing a client
        # sees changed, so nothing is pushed to the workers (one entry per new high would be).
        quiet = (new.status is old.status and new.triggered == old.triggered
                 and len(new.fills) == len(old.fills))
        change = Change(old.client_order_id, old.version, encode_order(new), new.is_open,
                        report=None if quiet else encode(report(new)))
        if placed is not None:  # stored only with this change (update.lua)
            change.placed = self._new_order(placed, sym, new.updated_at)
        before, after = self._watch(old, sym), self._watch(new, sym)
        if before != after:
            change.leave = before[0]
            change.join, change.score = after
        return change

    async def _run(self) -> None:
        """Refresh the price overrides and, while holding the lease, match; forever."""
        interval = self.config.match_interval_ms / 1000
        while not self._closing:
            try:
                await self.refresh_prices()
                self.is_matcher = await self.store.lease(self.token, self._lease_ms)
                if self.is_matcher:
                    await self.match_once()
                    every = min(TRIM_INTERVAL_MS, self.config.retention_ms)
                    if self.clock() - self._trimmed_at >= every:
                        self._trimmed_at = self.clock()
                        await self.forget_finished()
            except (RedisError, OSError) as exc:
                log.warning("paper %s: match pass failed: %s", self.account, exc)
            except Exception:
                log.exception("paper %s: match pass failed", self.account)
            if not self._closing:
                await asyncio.sleep(interval)
