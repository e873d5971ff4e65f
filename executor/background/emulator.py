"""The emulator: watches the orders each account's ``EmulatingBroker`` holds and releases
each as a plain order when the reference price triggers it (brokers/emulating.py); in the
same pass, under the same lease, the account's position exits (exits.py), contingent
lists (lists.py) and execution algorithms (algos.py).

One worker at a time emulates an account (a lease per account, ``Keys.emulator_lease``,
renewed every pass), so a trigger is decided by one process; a worker that dies leaves its
lease to expire and the next worker carries on from the state stored with each order
(the trail, in the record): nothing held lives only in a process's memory. Each adapter is
told when this worker starts and stops holding its account's lease (``lead_prices``, an
optional hook: Alpaca streams prices only on the holder); it leads from a pass that took
or renewed the lease until one finds another holder, the lease lapses unrenewed (nothing
to watch, or failing passes) or it is released on a clean stop.

A pass, per account with held orders: read their records, ask the broker adapter for the
price of each symbol (``emulating.trigger_price``: the paper exchange's own, else the
adapter's reference price from its cache and source: Binance's ticker, OANDA's pricing
stream (polled while it is down), Alpaca's quotes), move each order (model/emulation.py)
and write what moved, each write a compare-and-set that re-checks the lease
(infra/lua/emulation.lua). A symbol without a price fires nothing and moves nothing; the
pass says so (a warning once per symbol per minute and ``orderstream_emulator_no_price_total``).

A triggered order is sent through the account's guards (rate limits, breaker) under a send
token of its own (send.lua's ``release_sender``), taken at the door: so a worker that lost
the lease while it waited, and the one that took over, never both send it.

- Sent: the record says ``released``; the order is the broker's and the tracker follows it
  by its client id as any other (it is made due at once).
- Refused for good by the broker: ``refused``; the tracker records it cancelled with the
  broker's reason (an accepted order is never rejected).
- Not sent, certainly (a retryable error, a rate limit): stays triggered, sent again by the
  next pass under the same token.
- Outcome unknown (a timeout, a lost answer): its token is marked ``<token>:unknown``, so
  nobody sends it again, its holder included; it is looked up as below.
- Another worker's token (it died, or stalls, between taking it and sending), or an unknown
  outcome: looked up at
  the broker by client id (once per ``lookup_interval_ms``) and never sent by this worker;
  found: released. Not found ``unknown_resolve_ms`` after the trigger (the pipeline's rule
  for an order of unknown outcome): it ends cancelled, with the reason, and an error log.
  As for the pipeline's sends, a worker stalled longer than that after taking the token
  could still send it (operating.md, "no order is sent twice").

Before a release the trading state is read: halted (the account or everything) cancels the
order instead ("nothing new goes"); reducing sends it only if it reduces the position
(``orders:positions``), else cancels it. Then the pre-trade risk checks run again, as
for any order, on the release as it will be sent and at the reference price now
(``recheck``: the worker's risk step, the order judged as replacing its own reservation,
which is re-priced); denied, the order is cancelled with the check's reason, and nothing
is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.contract import OrderSpec, decoder, encode
from producer.keys import Keys
from producer.replies import text

from ..brokers.base import (
    BrokerError,
    OrderNotFound,
    PermanentError,
    RetryableError,
    SendRefused,
)
from ..brokers.emulating import (
    EmulatingBroker,
    end_native_exits,
    lead_prices,
    step_of,
    tick_of,
    traded_volume,
    trigger_price,
    trigger_prices,
    volume_interval_ms,
)
from ..brokers.sending import SEND_TOKENS
from ..infra.clock import wall_clock_ms
from ..infra.lease import Lease
from ..infra.logs import Every
from ..infra.metrics import Metrics
from ..infra.store import Store, decode_order
from ..model.emulation import Emulation, Held, expired, step
from ..model.exits import AutoExit
from ..model.positions import decode_position, position_key
from ..model.states import is_terminal
from ..safety.risk.book import reduces_position
from ..safety.trading import TradingState, effective
from .algos import AlgoWatcher, Market
from .exits import ExitWatcher, LeaseLost
from .lists import ListWatcher

log = logging.getLogger(__name__)

_held = decoder(Held)
_NO_PRICE_LOG_MS = 60_000


AUTO_INTERVAL_MS = 1_000
# (client id, request id, the release) -> why the risk checks deny it, None if they pass;
# raises CheckUnavailable when they could not decide.
Recheck = Callable[[str, str, OrderSpec], Awaitable[str | None]]


class CheckUnavailable(Exception):
    """The risk checks of a release could not decide (their state unreadable, a bug): the
    release waits for the next pass; neither sent unchecked nor cancelled for it."""


class _LeaseLost(Exception):
    """The account's lease moved to another worker during a pass: stop the pass."""


class Emulator:
    def __init__(self, redis: aioredis.Redis, keys: Keys, brokers: Mapping[str, Any],
                 consumer: str, *, interval_ms: int = 250, lease_ms: int = 3_000,
                 unknown_resolve_ms: int = 600_000, lookup_interval_ms: int = 1_000,
                 signed: bool = False, auto: Mapping[str, AutoExit] | None = None,
                 metrics: Metrics | None = None,
                 clock: Callable[[], int] = wall_clock_ms,
                 recheck: Recheck | None = None, store: Store | None = None) -> None:
        self.redis = redis
        self.keys = keys
        # Every account may have exits (stop-loss / take-profit on positions); the accounts
        # behind an EmulatingBroker may also have held orders.
        self.accounts: dict[str, Any] = dict(brokers)
        self.brokers: dict[str, EmulatingBroker] = {
            name: b for name, b in brokers.items() if isinstance(b, EmulatingBroker)}
        self.consumer = consumer
        self.interval_s = interval_ms / 1000
        self.lease_ms = lease_ms
        self.metrics = metrics
        self.clock = clock
        self.token = f"{consumer}:emulator"
        self.leases = {name: Lease(redis, keys.emulator_lease(name), self.token)
                       for name in self.accounts}
        # Accounts whose lease this worker holds -> when it lapses unless renewed
        # (time.monotonic): each adapter is told when it starts and stops leading
        # (emulating.lead_prices), and until then it leads nothing.
        self._leading: dict[str, float] = {}
        for broker in self.accounts.values():
            lead_prices(broker, False)
        self.exits = ExitWatcher(redis, keys, self.token, signed=signed, metrics=metrics)
        self.lists = ListWatcher(redis, keys, self.token, signed=signed, metrics=metrics)
        # Without the store (a test's emulator alone), no algorithm is run.
        self.algos = None if store is None else AlgoWatcher(
            redis, keys, store, self.token, consumer, metrics=metrics)
        self.auto = {a: x for a, x in (auto or {}).items() if a in self.accounts}
        self._auto_at: dict[str, int] = {}  # account -> when its positions were last read
        self._no_price_logged = Every(_NO_PRICE_LOG_MS)
        self.unknown_resolve_ms = unknown_resolve_ms
        # The pre-trade risk checks of a release, at the price now (the worker's risk step:
        # Worker.recheck_release); None: only the trading state is checked.
        self.recheck = recheck
        self.lookup_interval_ms = lookup_interval_ms
        self._looked_up: dict[str, int] = {}  # client id -> when last looked up

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        while running():
            for account in self.accounts:
                try:
                    await self.once(account)
                except RedisError as exc:
                    log.warning("emulator pass of account %s failed: %s", account, exc)
                    self._lead(account, None)
                except Exception:
                    # A bug one account's pass trips holds up no other account.
                    log.exception("emulator pass of account %s failed", account)
                    if self.metrics is not None:
                        self.metrics.background_errors.labels("emulator").inc()
                    self._lead(account, None)
            await sleep(self.interval_s)

    async def release_leases(self) -> None:
        """Give the leases up on a clean stop, so another worker emulates at once."""
        for account, lease in self.leases.items():
            self._lead(account, False)
            await lease.release()

    def _lead(self, account: str, holds: bool | None, asked: float = 0.0) -> None:
        """What a pass learnt of the account's lease: held (``holds``, renewed by a call
        made at ``asked``), held by another worker or given up (False), or not asked
        (None: nothing to watch, or the pass failed): this worker leads until the lease
        it renewed last lapses. The adapter is told each change, never waited for."""
        if holds:
            led = account in self._leading
            self._leading[account] = asked + self.lease_ms / 1000
            if not led:
                lead_prices(self.accounts[account], True)
            return
        until = self._leading.get(account)
        if until is None or (holds is None and time.monotonic() < until):
            return
        del self._leading[account]
        lead_prices(self.accounts[account], False)

    async def once(self, account: str) -> int:
        """One pass over the account's emulated orders and exits if this worker holds (or
        takes) its lease; returns how many orders it sent or ended."""
        broker = self.brokers.get(account)
        # All the account's state this pass watches, in one round trip: every worker
        # makes it for every account at every pass, lease or not.
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(self.keys.emulated(account))
        self.exits.queue_read(pipe, account)
        self.lists.queue_read(pipe, account)
        if self.algos is not None:
            self.algos.queue_read(pipe, account)
        members, raw_exits, raw_lists, legacy, *raw_algos = await pipe.execute()
        cids = sorted(text(c) for c in members) if broker is not None else []
        exits = self.exits.parse(raw_exits)
        lists = await self.lists.parse(raw_lists, legacy, account, self.clock())
        algos = AlgoWatcher.parse(raw_algos[0]) if raw_algos else {}
        auto = self.auto.get(account)
        watching = bool(cids or exits or auto or lists or algos)
        asked = time.monotonic()
        holds = watching and await self.leases[account].hold(self.lease_ms)
        self._lead(account, holds if watching else None, asked)
        if self.metrics is not None:
            self.metrics.emulated_orders.labels(account).set(len(cids) if holds else 0)
            self.metrics.lists.labels(account).set(len(lists) if holds else 0)
            self.metrics.algos.labels(account).set(len(algos) if holds else 0)
            if not (holds and lists):  # else set by the lists' pass
                self.metrics.exits_blocked.labels(account, "list").set(0)
            if not (holds and exits):
                self.metrics.exits_blocked.labels(account, "position").set(0)
        if not holds:
            return 0
        rows: list[list[Any]] = []
        if cids:
            pipe = self.redis.pipeline(transaction=False)
            for cid in cids:
                pipe.hmget(self.keys.order(cid), "emulation", "held", "record",
                           "release_sender")
            rows = await pipe.execute()
        adapter = self.accounts[account] if broker is None else broker.inner
        prices = await self._prices(account, adapter, rows, exits)
        done = 0
        for cid, row in zip(cids, rows, strict=True):
            assert broker is not None
            try:
                moved = await self._one(broker, cid, row, prices)
            except _LeaseLost:
                return done
            except RedisError:
                raise
            except Exception:
                # A record it cannot read, or a bug this order trips: that order waits (and
                # is logged every pass); the account's other orders go on.
                log.exception("emulated order %s: its pass failed", cid)
                if self.metrics is not None:
                    self.metrics.background_errors.labels("emulator").inc()
                continue
            done += moved
        try:
            now = self.clock()
            if auto is not None and now - self._auto_at.get(account, 0) >= AUTO_INTERVAL_MS:
                # Positions are read whole: once a second, not every pass.
                self._auto_at[account] = now
                if await self.exits.auto(account, auto, exits, now,
                                         lambda symbol: tick_of(adapter, symbol)):
                    return done  # the new exits are watched from the next pass
            if exits:
                done += await self.exits.once(account, exits, prices, now,
                                              lambda symbol: tick_of(adapter, symbol),
                                              lambda symbol: step_of(adapter, symbol),
                                              self.accounts[account].check)
            if lists:
                done += await self.lists.once(
                    account, lists, now, lambda symbol: step_of(adapter, symbol),
                    self.accounts[account].check,
                    lambda cid, symbol, oco: end_native_exits(adapter, cid, symbol, oco))
            if algos and self.algos is not None:
                done += await self.algos.once(account, algos, now, Market(
                    step=lambda symbol: step_of(adapter, symbol),
                    tick=lambda symbol: tick_of(adapter, symbol),
                    check=self.accounts[account].check,
                    price=lambda symbol: trigger_price(adapter, symbol),
                    volume=lambda symbol, since: traded_volume(adapter, symbol, since),
                    volume_every_ms=volume_interval_ms(adapter)))
        except LeaseLost:
            return done
        return done

    async def _prices(self, account: str, adapter: Any, rows: list[list[Any]],
                      exits: dict[str, bytes]) -> dict[str, Decimal | None]:
        """The prices of the symbols a pass needs (its held orders', its exits'), in one
        call where the adapter can (Binance: one every-ticker call, not one per symbol)."""
        symbols: set[str] = set(exits)
        for emulation, _, record, _ in rows:
            if emulation == b"held" and record is not None:
                try:
                    symbols.add(decode_order(record).spec.symbol)
                except Exception:  # _one logs the record it cannot read
                    continue
        try:
            prices = await trigger_prices(adapter, sorted(symbols))
        except BrokerError as exc:
            log.info("emulator of account %s: no prices (%s)", account, exc)
            prices = {}
        for symbol in symbols:
            if prices.get(symbol) is None:
                self._no_price(account, symbol)
        return prices

    async def _one(self, broker: EmulatingBroker, cid: str, row: list[Any],
                   prices: dict[str, Decimal | None]) -> int:
        """One order's turn in a pass: how many it sent or ended (0 or 1)."""
        account = broker.account
        emulation, held_json, record, sender = row
        if record is None or emulation is None or emulation.decode() not in (
                Emulation.HELD, Emulation.TRIGGERED):
            await self._script(broker, "forget", cid)
            return 0
        order = decode_order(record)
        spec = order.spec
        if is_terminal(order.state) and emulation.decode() == Emulation.HELD:
            # Ended otherwise (an operator's repair, a replay): never to be released.
            await self._script(broker, "cancel", cid)
            return 0
        held = _held.decode(held_json) if held_json else Held()
        if emulation.decode() == Emulation.TRIGGERED:
            return await self._resume(broker, cid, spec, held, sender, order.request_id)
        if expired(spec, self.clock()):
            await self._script(broker, "expire", cid)
            await self._due(account, cid)
            return 1
        ref = prices.get(spec.symbol)
        if ref is None:
            return 0  # said once for the pass (_prices)
        moved = step(spec, held, ref, self.clock(), tick_of(broker.inner, spec.symbol))
        if moved is None:
            return 0
        op = "track" if moved.release is None else "trigger"
        wrote = await broker.script(
            keys=[self.keys.order(cid), self.keys.emulator_lease(account)],
            args=[op, self.token, encode(moved)])
        if wrote == -2:
            raise _LeaseLost  # the next holder carries on
        if wrote != 1 or moved.release is None:
            return 0
        log.info("emulated order %s triggered at %s: sending %s %s", cid,
                 moved.trigger_price, moved.release.type, moved.release.side)
        if self.metrics is not None:
            self.metrics.emulator_triggered.labels(account).inc()
        return await self._release(broker, cid, moved, order.request_id)

    # -- releases --------------------------------------------------------------------------

    async def _release(self, broker: EmulatingBroker, cid: str, held: Held,
                       request_id: str) -> int:
        spec = held.release
        assert spec is not None
        blocked = await self._blocked(spec)
        if blocked is None and self.recheck is not None:
            try:
                denied = await self.recheck(cid, request_id, spec)
            except (RedisError, CheckUnavailable) as exc:
                log.warning("emulated order %s not sent: its risk checks could not run "
                            "(%s); again at the next pass", cid, exc)
                return 0
            blocked = None if denied is None else f"risk checks at release: {denied}"
        if blocked is not None:
            await self._script(broker, "refused", cid, blocked)
            await self._due(spec.account, cid)
            log.warning("emulated order %s triggered but not sent: %s", cid, blocked)
            return 1
        tokens = SEND_TOKENS.set({cid: self.token})  # this loop's own task: no one else's
        try:
            report = await broker.inner.submit(cid, spec)
        except SendRefused as exc:
            # Held: another emulator took the release token (the next pass looks it up);
            # moved on: no longer triggered; not durable: not sent, again next pass.
            log.warning("emulated order %s not sent: %s", cid, exc)
            return 0
        except (RetryableError, RedisError) as exc:
            log.warning("emulated order %s not sent (%s); again at the next pass", cid, exc)
            return 0
        except PermanentError as exc:
            await self._script(broker, "refused", cid, f"refused when released: {exc}")
            await self._due(spec.account, cid)
            log.warning("emulated order %s: the broker refused its release: %s", cid, exc)
            return 1
        except Exception as exc:
            # Outcome unknown (a timeout, a lost answer): never sent again; the next passes
            # look it up, as for a token another worker took.
            log.warning("emulated order %s: release outcome unknown (%s); looked up by "
                        "client id, never sent again", cid, exc)
            await broker.script(keys=[self.keys.order(cid)], args=["unknown", self.token])
            return 0
        finally:
            SEND_TOKENS.reset(tokens)
        log.info("emulated order %s released: %s at the broker", cid, report.status)
        await self._released(broker, cid, spec.account)
        return 1

    async def _resume(self, broker: EmulatingBroker, cid: str, spec: OrderSpec, held: Held,
                      sender: bytes | None, request_id: str) -> int:
        """A triggered order not yet released: sent by this pass if nobody else holds its
        token, else looked up at the broker (at most once per ``lookup_interval_ms``) until
        it shows there, or ``unknown_resolve_ms`` after the trigger, when it ends cancelled:
        the pipeline's rule for an order of unknown outcome."""
        if sender is None or sender.decode() == self.token:
            return await self._release(broker, cid, held, request_id)
        now = self.clock()
        if now - self._looked_up.get(cid, 0) < self.lookup_interval_ms:
            return 0
        self._looked_up[cid] = now
        try:
            await broker.inner.get_order(cid, spec.symbol)
        except OrderNotFound:
            if now - held.triggered_at < self.unknown_resolve_ms:
                return 0
            holder = sender.decode()
            how = (f"sent by {holder.removesuffix(':unknown')} with its outcome unknown"
                   if holder.endswith(":unknown") else
                   f"its release's send token taken by {holder}")
            reason = (f"triggered at {held.trigger_price}, {how}, and not at the broker "
                      f"{self.unknown_resolve_ms} ms later: it never reached it; not sent "
                      "again")
            log.error("emulated order %s: %s", cid, reason)
            self._looked_up.pop(cid, None)
            await self._script(broker, "refused", cid, reason)
            await self._due(spec.account, cid)
            return 1
        except Exception as exc:
            log.warning("emulated order %s: lookup failed (%s); again later", cid, exc)
            return 0
        self._looked_up.pop(cid, None)
        await self._released(broker, cid, spec.account)
        return 1

    async def _blocked(self, spec: OrderSpec) -> str | None:
        """Why the trading state stops this release (None: it may go)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.trading)
        pipe.hget(self.keys.positions, position_key(spec.account, spec.symbol))
        states, position = await pipe.execute()
        state = effective(states, spec.account)
        if state is TradingState.HALTED:
            return "trading is halted: nothing new goes"
        if state is TradingState.REDUCING:
            qty = decode_position(position).quantity if position else Decimal(0)
            if spec.quantity is None or not reduces_position(qty, spec.side, spec.quantity):
                return "trading is reducing and this order does not reduce the position"
        return None

    async def _released(self, broker: EmulatingBroker, cid: str, account: str) -> None:
        await self._script(broker, "released", cid)
        await self._due(account, cid)

    async def _due(self, account: str, cid: str) -> None:
        # The tracker looks at it now rather than at its next scheduled look.
        await self.redis.zadd(self.keys.due(account), {cid: self.clock()})

    async def _script(self, broker: EmulatingBroker, op: str, cid: str, *args: str) -> Any:
        return await broker.script(keys=[self.keys.order(cid), self.keys.emulated(broker.account)],
                                   args=[op, cid, *args])

    def _no_price(self, account: str, symbol: str) -> None:
        if self.metrics is not None:
            self.metrics.emulator_no_price.labels(account, symbol).inc()
        now = int(time.monotonic() * 1000)
        if self._no_price_logged.due((account, symbol), now):
            log.warning("emulator of account %s: no fresh price for %s; its emulated orders "
                        "neither move nor fire until there is one", account, symbol)

