"""What the worker reads from Redis and its brokers for the metrics and /readyz: consumer
group lag and pending entries, stream lengths, open orders by state, positions, trading
states and circuit breakers, and whether Redis and each broker answer.

Fleet-wide figures (lag, streams, orders, positions) are probed from Redis, the one truth
every worker shares, rather than kept from the events one worker wrote: a worker sees only
its own writes and starts from nothing after a restart, so per-worker tallies could not be
added up into a correct gauge. Every worker reports the same values; dashboards take max().

A broker is pinged with its optional ``async def ping(self) -> None`` (raises when the
broker cannot be reached); a broker without one counts as up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from producer.contract import OrderState
from producer.keys import GROUP, Keys
from producer.replies import text

from ..brokers.base import Broker
from ..infra.metrics import Metrics
from ..model.positions import decode_position, position_key
from ..model.states import is_terminal
from ..safety import breaker, trading
from ..safety.breaker import CircuitState
from . import retention

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0
# Above this many open orders the by-state gauge is dropped rather than counted. Only one
# worker of the fleet counts (``counts_orders``), every fifth probe, in script calls of
# about ``_COUNTED_AT_ONCE`` orders each (3 us each in Redis): one call over 10,000 held
# Redis, so every worker's requests, for 26 ms.
OPEN_ORDERS_COUNTED = 10_000
_COUNTED_AT_ONCE = 500
OPEN_STATES = tuple(s for s in OrderState if not is_terminal(s))
# Lag probes between two counts of the open orders and two broker pings: a real broker's
# ping is an HTTP call that counts against its rate limits.
SLOW_EVERY = 5


async def ping(broker: Broker) -> str | None:
    """None if the broker answers its ping (or has none), else why not."""
    method: Callable[[], Awaitable[None]] | None = getattr(broker, "ping", None)
    if method is None:
        return None
    try:
        await asyncio.wait_for(method(), PING_TIMEOUT_S)
    except TimeoutError:
        return f"broker {broker.account}: no answer to ping within {PING_TIMEOUT_S:.0f} s"
    except Exception as exc:  # any failure of any adapter means "not reachable"
        return f"broker {broker.account}: ping failed ({type(exc).__name__})"
    return None


class Probe:
    def __init__(self, redis: aioredis.Redis, keys: Keys, metrics: Metrics,
                 brokers: Mapping[str, Broker], symbols: Mapping[str, list[str]],
                 counts_orders: Callable[[], bool] = lambda: True) -> None:
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.brokers = brokers
        # The positions exported: configured accounts and symbols only (bounded labels).
        self.position_fields = [(a, s, position_key(a, s))
                                for a, names in symbols.items() for s in names]
        self._open_states = redis.register_script(
            (resources.files("executor.infra") / "lua" / "open_states.lua").read_text())
        self.counts_orders = counts_orders
        self._probes = 0
        self._too_many_warned = False

    async def once(self) -> None:
        """One probe of everything; Redis failing sets redis_up 0 and skips the rest of the
        Redis figures (they keep their last values)."""
        slow = self._probes % SLOW_EVERY == 0
        if slow:
            await self.ping_brokers()
        try:
            await self._lag()
            await self._streams()
            await self._readers()
            if slow:
                await self._orders()
            await self._positions()
            await self._safety()
        except ResponseError as exc:  # Redis answered: up, though this probe was refused
            log.debug("probe refused by redis: %s", exc)
        except RedisError as exc:
            self.metrics.redis_up.set(0)
            log.debug("probe of redis failed: %s", exc)
            return
        finally:
            self._probes += 1
        self.metrics.redis_up.set(1)

    async def run(self, running: Callable[[], bool], interval_s: float) -> None:
        while running():
            await self.once()
            await asyncio.sleep(interval_s)

    async def ping_brokers(self) -> list[str]:
        """Ping every broker at once; sets broker_up; returns the reasons of those down."""
        names = list(self.brokers)
        answers = await asyncio.gather(*(ping(self.brokers[n]) for n in names))
        for name, why in zip(names, answers, strict=True):
            self.metrics.broker_up.labels(name).set(0 if why else 1)
        return [why for why in answers if why]

    async def group_joined(self) -> bool:
        try:
            groups: Any = await self.redis.xinfo_groups(self.keys.pending)
        except ResponseError:  # no such stream
            return False
        return any(text(g.get("name", b"")) == GROUP for g in groups)

    async def not_ready(self) -> str | None:
        """Why this worker should not be sent traffic (None: ready): Redis must answer, the
        consumer group must exist, and every broker must answer its ping."""
        try:
            await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S)
            joined = await asyncio.wait_for(self.group_joined(), PING_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            self.metrics.redis_up.set(0)
            return f"redis: not reachable ({type(exc).__name__})"
        self.metrics.redis_up.set(1)
        if not joined:
            return f"consumer group {GROUP} does not exist on {self.keys.pending}"
        down = await self.ping_brokers()
        return "; ".join(down) if down else None

    async def _lag(self) -> None:
        groups: Any = await self.redis.xinfo_groups(self.keys.pending)
        for group in groups:
            if text(group.get("name", b"")) == GROUP:
                lag = group.get("lag")
                if lag is not None:  # Redis < 7 has no lag
                    self.metrics.consumer_lag.set(int(lag))
                self.metrics.pending_entries.set(int(group.get("pending", 0)))

    async def _streams(self) -> None:
        k = self.keys
        names = {"pending": k.pending, "completed": k.completed, "failed": k.failed,
                 "events": k.events}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in names.values():
                pipe.xlen(key)
            lengths = await pipe.execute()
        for name, length in zip(names, lengths, strict=True):
            self.metrics.stream_length.labels(name).set(length)

    async def _readers(self) -> None:
        gauge = self.metrics.event_reader_lag
        lags = await retention.reader_lags(self.redis, self.keys)
        gauge.clear()  # an unregistered reader must not stay as a stale series
        for reader, seconds in lags.items():
            gauge.labels(reader).set(seconds)
        results = self.metrics.result_reader_lag
        result_lags = await retention.result_reader_lags(self.redis, self.keys)
        results.clear()
        for (stream, reader), seconds in result_lags.items():
            results.labels(stream, reader).set(seconds)

    async def _orders(self) -> None:
        gauge = self.metrics.open_orders
        if not self.counts_orders():
            gauge.clear()  # another worker counts; a stale copy here would mislead max()
            return
        counts: Counter[str] = Counter()
        cursor = "0"
        while True:
            reply: Any = await self._open_states(
                keys=[self.keys.open],
                args=[self.keys.order(""), cursor, _COUNTED_AT_ONCE, OPEN_ORDERS_COUNTED])
            total = int(reply[1])
            if total > OPEN_ORDERS_COUNTED:
                if not self._too_many_warned:
                    log.warning("%d open orders, over the %d counted by state: the open "
                                "orders gauge is left empty", total, OPEN_ORDERS_COUNTED)
                    self._too_many_warned = True
                gauge.clear()
                return
            counts.update({text(reply[i]): int(reply[i + 1]) for i in range(2, len(reply), 2)})
            cursor = text(reply[0])
            if cursor == "0":
                break
        # Orders that moved while the steps were taken may count twice or not at all
        # (SSCAN's promise is only for those that stayed): a gauge, not a ledger.
        for state in OPEN_STATES:
            gauge.labels(state.value).set(counts.get(state.value, 0))

    async def _safety(self) -> None:
        """The shared trading states and circuit breakers (Redis holds the truth; a
        worker's own breaker changes are also set as they happen, by CircuitBroker)."""
        accounts = list(self.brokers)
        states: Any = await self.redis.hgetall(self.keys.trading)
        self.metrics.trading_state.labels(trading.GLOBAL).set(
            trading.parse(states.get(trading.GLOBAL.encode())).code)
        for account in accounts:
            self.metrics.trading_state.labels(account).set(
                trading.effective(states, account).code)
        for account, fields in (await breaker.states(self.redis, self.keys, accounts)).items():
            state = CircuitState(fields.get("state", CircuitState.CLOSED))
            self.metrics.circuit_state.labels(account).set(state.code)

    async def _positions(self) -> None:
        if not self.position_fields:
            return
        raw: Any = await self.redis.hmget(self.keys.positions,
                                          [f for _, _, f in self.position_fields])
        for (account, symbol, _), value in zip(self.position_fields, raw, strict=True):
            quantity = float(decode_position(value).quantity) if value else 0.0
            self.metrics.position.labels(account, symbol).set(quantity)
