"""The worker: reads batches from the consumer group, runs them through the steps, writes
every outcome in one atomic step per batch, and keeps going through Redis trouble.

Stopping (SIGTERM/SIGINT) stops the reading; the batches in hand are finished and acked, a
batch read after the stop is handed back unstarted (made claimable by the other workers at
once), then the worker leaves the group and exits. Redis errors never end the loop: it
waits with backoff and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from producer.connect import home_node
from producer.contract import Action, OrderSpec, ReasonCode
from producer.keys import GROUP, Keys
from producer.partitions import partition_prefix
from producer.replies import text as _text

from .background.emulator import CheckUnavailable, Emulator
from .background.liveness import Liveness, WorkerInfo
from .background.probes import Probe
from .background.projector import Projector
from .background.reclaim import Reclaimer
from .background.retention import Retention
from .background.tracker import Tracker
from .brokers.base import Broker
from .brokers.emulating import emulating
from .brokers.registry import create_broker
from .brokers.sending import SendGuard, TakeTokens
from .brokers.wrapper import BrokerWrapper
from .config import Settings
from .infra.attention import Attention
from .infra.connection import connect as connect_redis
from .infra.failpoints import failpoint
from .infra.logs import about
from .infra.metrics import Metrics, start_http
from .infra.store import Durability, Outcome, Store
from .infra.tasks import cancel_and_wait, supervised
from .model.states import IllegalTransition
from .pipeline import results
from .pipeline.inflight import InFlight
from .pipeline.job import Job
from .pipeline.services import Services
from .pipeline.steps import guard
from .pipeline.steps.amend import Amend
from .pipeline.steps.authenticate import Authenticate
from .pipeline.steps.cancel import Cancel
from .pipeline.steps.deadline import Deadline
from .pipeline.steps.decode import Decode
from .pipeline.steps.exits import SetExits
from .pipeline.steps.gate import Gate
from .pipeline.steps.idempotency import Idempotency
from .pipeline.steps.persist import Persist
from .pipeline.steps.prefetch import Prefetch
from .pipeline.steps.risk import UNAVAILABLE, Risk
from .pipeline.steps.submit import FollowUp, Submit
from .pipeline.turn import Turns, pass_turn
from .safety.breaker import Breaker
from .safety.risk.state import RiskState

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


def version() -> str:
    try:
        return metadata.version("orderstream")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def connect(settings: Settings) -> aioredis.Redis:
    return connect_redis(settings.redis)


def partition_key_prefix(settings: Settings, partition: int | None) -> str:
    """The key prefix of the worker of ``partition``: None for an unpartitioned deployment
    (its keys live under ``redis.prefix``); ValueError where that does not fit the settings."""
    partitions = settings.partitions
    if partition is None:
        if partitions.enabled:
            raise ValueError("the deployment is partitioned: name the partition to serve")
        return settings.redis.prefix
    if not 0 <= partition < partitions.count:
        raise ValueError(f"partition {partition} does not exist (partitions.count is "
                         f"{partitions.count})")
    return partition_prefix(settings.redis.prefix, partition)


def guarded(broker: Broker, take: TakeTokens, *, at_door: bool = False) -> Broker:
    """A broker given from outside (tests, tools) behind the send-token guard, unless it
    has one already: no order is ever sent without its token."""
    inner: Any = broker
    while isinstance(inner, BrokerWrapper):
        if isinstance(inner, SendGuard):
            return broker
        inner = inner.inner
    return SendGuard(broker, take, at_door=at_door)


def settle_heap() -> None:
    """Tune the garbage collector for a started worker. What exists by then (modules,
    config, clients, scripts) lives as long as the process, so full collections stop
    scanning it (``gc.freeze``); a batch makes many short-lived objects, so young
    collections run less often. Collections were about a tenth of a worker's CPU per order."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: aioredis.Redis | None = None,
        brokers: dict[str, Broker] | None = None,
        metrics: Metrics | None = None,
        partition: int | None = None,
    ) -> None:
        self.settings = settings
        self.partition = partition
        self.keys = Keys(partition_key_prefix(settings, partition))
        # The accounts this worker serves: all of them, or those of its partition.
        accounts = {name: account for name, account in settings.accounts.items()
                    if partition is None or settings.partitions.accounts[name] == partition}
        self.redis = redis or connect(settings)
        self.consumer = settings.worker.consumer
        w = settings.worker
        self.metrics = metrics or Metrics()
        self.breaker = Breaker(self.redis, self.keys, settings.breaker)
        r = settings.redis
        self.durability = (Durability(r.wait_replicas, r.wait_aof, r.wait_timeout_ms)
                           if r.durability == "wait" else None)
        self.store = Store(self.redis, self.keys, results_maxlen=w.results_maxlen,
                           order_ttl_ms=w.order_ttl_ms, durability=self.durability,
                           attention=Attention.of(w))
        take = self.store.take_send_tokens
        # The durability wait is made by the take (infra/store.py), before any send.
        at_door = self.durability is None
        self.brokers = {name: guarded(broker, take, at_door=at_door)
                        for name, broker in brokers.items()} if brokers is not None else {
            name: create_broker(name, account, self.redis, self.keys,
                                limits=settings.limits.get(name), breaker=self.breaker,
                                metrics=self.metrics,
                                visibility_timeout_ms=w.visibility_timeout_ms,
                                take_tokens=take, tokens_at_door=at_door)
            for name, account in accounts.items()
        }
        if w.emulate:
            self.brokers = {name: emulating(broker, self.redis, self.keys)
                            for name, broker in self.brokers.items()}
        self.emulator = Emulator(self.redis, self.keys, self.brokers, self.consumer,
                                 interval_ms=w.emulator_interval_ms,
                                 lease_ms=w.emulator_lease_ms,
                                 unknown_resolve_ms=w.unknown_resolve_ms,
                                 lookup_interval_ms=w.track_interval_ms,
                                 signed=bool(settings.auth.keys), auto=settings.exits,
                                 metrics=self.metrics, store=self.store)
        self.inflight = InFlight(self.redis, self.keys, self.consumer,
                                 visibility_timeout_ms=w.visibility_timeout_ms)
        self.svc = Services(settings, self.store, self.brokers, self.metrics, self.consumer)
        svc = self.svc
        self.store.assets_of = lambda account, symbol: (svc.base_asset(account, symbol),
                                                        svc.quote_asset(account, symbol))
        self.decode = Decode(self.svc)
        self.authenticate = Authenticate(self.svc)
        self.deadline = Deadline(self.svc)
        self.idempotency = Idempotency(self.svc)
        self.gate = Gate(self.svc, self.breaker)
        risk_state = RiskState(self.redis, self.keys)
        self.prefetch = Prefetch(self.svc, risk_state)
        self.risk = Risk(self.svc, risk_state)
        self.emulator.recheck = self.recheck_release
        self.persist = Persist(self.svc)
        self.submit = Submit(self.svc)
        self.cancel = Cancel(self.svc)
        self.amend = Amend(self.svc)
        self.exits = SetExits(self.svc)
        self.reclaimer = Reclaimer(
            self.store, self.consumer,
            visibility_timeout_ms=w.visibility_timeout_ms, max_deliveries=w.max_deliveries,
            batch_size=w.batch_size,
            record=lambda result: self.metrics.record(result, self.svc.clock(), self.brokers),
            dead_lettered=lambda reason, n: self.metrics.dead_letters.labels(reason).inc(n))
        self.liveness = Liveness(
            self.redis, self.keys,
            WorkerInfo(consumer=self.consumer, host=socket.gethostname(), pid=os.getpid(),
                       version=version(), started_at=int(time.time() * 1000),
                       mode=settings.mode),
            heartbeat_ms=w.heartbeat_ms)
        self.projector = Projector(self.redis, self.keys, self.consumer,
                                   quote_asset=self.svc.quote_asset,
                                   base_asset=self.svc.base_asset,
                                   on_fills=lambda fills: self.metrics.fills_recorded(
                                       fills, self.brokers),
                                   day_offset_ms=settings.risk.day_offset_ms,
                                   watcher=risk_state)
        self.retention = Retention(
            self.redis, self.keys, events_retention_ms=w.events_retention_ms,
            results_retention_ms=w.results_retention_ms, interval_ms=w.retention_interval_ms,
            clock=self.svc.clock, results_maxlen=w.results_maxlen,
            trimmed=lambda stream, n: self.metrics.trimmed.labels(stream).inc(n))
        self.tracker = Tracker(self.svc, self.liveness.peers,
                               interval_ms=w.track_interval_ms,
                               market_timeout_ms=w.market_timeout_ms)
        # The open orders are counted by one worker: the first of the live ones by name.
        self.probe = Probe(self.redis, self.keys, self.metrics, self.brokers, {
            name: list(getattr(account, "symbols", ()))
            for name, account in accounts.items()},
            counts_orders=lambda: min(self.tracker.peers) == self.consumer)
        self.metrics_port: int | None = None
        self._stopping = asyncio.Event()
        self.turns = Turns()
        # Per account: whether its requests may wait on more than this process and Redis
        # answering at once (``Broker.waits``, absent: they may; or every write waiting for
        # replicas or the disk, ``durability = "wait"``). Read once: neither changes.
        self._waits: dict[str, bool] = {
            name: self.durability is not None or bool(getattr(broker, "waits", True))
            for name, broker in self.brokers.items()}
        self._ready = False
        self._beating = True  # until close(): a stopping worker is alive while it drains
        self._runner: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        # Orders still being resolved after their batch's other outcomes were written
        # (lookups, resends: pipeline/steps/submit.py follow-ups); awaited before the worker closes.
        self._follow_ups: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started and not stopping."""
        return self._ready

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker %s stopping: finishing the batch in hand", self.consumer)
            self._stopping.set()

    async def recheck_release(self, client_order_id: str, request_id: str,
                              release: OrderSpec) -> str | None:
        """The risk checks of an emulated order's release (background/emulator.py): the
        release judged as the order's own request again, at the reference price now, so
        it replaces the order's reservation (re-priced) instead of adding to it. Why it is
        denied, or None (its new reservation written); ``CheckUnavailable`` when the checks
        could not decide (the release waits for the emulator's next pass)."""
        job = Job(request_id=request_id, fields={}, received_at=self.svc.clock(),
                  client_order_id=client_order_id, spec=release)
        await self.risk([job])
        if job.result is None:
            return None
        if job.result.reason_code in (UNAVAILABLE, ReasonCode.INTERNAL_ERROR):
            raise CheckUnavailable(job.result.reason or job.result.reason_code)
        return f"{job.result.reason_code}: {job.result.reason}"

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def start(self, *, serve_metrics: bool = True) -> None:
        w = self.settings.worker
        if serve_metrics:
            self._runner, self.metrics_port = await start_http(
                self.metrics.registry, w.metrics_host, w.metrics_port, ready=lambda: self._ready,
                not_ready=self.probe.not_ready)
            log.info("metrics on http://%s:%d/metrics", w.metrics_host, self.metrics_port)
        self.metrics.info.info({"version": version(), "worker": self.consumer,
                                "mode": self.settings.mode})
        await self._retrying(self._ensure_group)
        if self.durability is not None:
            await self._check_durability(self.durability)
        # Beating before the first read: a consumer never exists without its heartbeat, so
        # the others' sweep cannot take a starting worker for a gone one.
        await self._retrying(self.liveness.beat)
        self._tasks.append(asyncio.create_task(
            self.liveness.run(lambda: self._beating, asyncio.sleep), name="heartbeat"))
        self._tasks.append(asyncio.create_task(
            self.inflight.run(lambda: self._beating, asyncio.sleep), name="in-flight"))
        for broker in self.brokers.values():
            await broker.start()
        # Stops on the flag as well as on cancellation: redis-py can swallow a cancel that
        # lands inside a command (redis-py issue 2028), and close() must not hang on it.
        self._tasks.append(asyncio.create_task(
            self.probe.run(lambda: self._ready, w.lag_interval_ms / 1000), name="probe"))
        self._ready = True
        log.info("worker %s ready on %s (group %s), mode %s", self.consumer, self.keys.pending,
                 GROUP, self.settings.mode)

    async def close(self) -> None:
        self._ready = False
        self._beating = False
        await cancel_and_wait(self._tasks, "worker tasks")
        for broker in self.brokers.values():
            await broker.close()
        try:
            await self.projector.release()
            await self.emulator.release_leases()
            await self.liveness.leave()
        except RedisError as exc:
            log.warning("could not leave the group cleanly (%s); the others' sweep will", exc)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.redis.aclose()

    async def run(self) -> None:
        await self.start()
        settle_heap()
        try:
            await self.serve()
        finally:
            await self.close()

    async def _check_durability(self, durability: Durability) -> None:
        """Refuse to start where the durability asked for cannot be had (WAITAOF needs
        Redis >= 7.2 with appendonly yes); warn where it cannot be had now (too few
        replicas): orders are then not sent until it can."""
        try:
            reply = await self.redis.execute_command(  # type: ignore[no-untyped-call]
                *durability.command(), **await home_node(self.redis, self.keys.pending))
        except ResponseError as exc:
            raise RuntimeError(
                f'redis.durability = "wait" cannot be honoured by this Redis: '
                f"{' '.join(map(str, durability.command()[:1]))} failed ({exc}); WAITAOF "
                "(redis.wait_aof) needs Redis >= 7.2 with appendonly yes") from None
        if not durability.reached(reply):
            log.error("redis.durability: %s answered %r now; orders are not sent until Redis "
                      "confirms their records durable", durability.command()[0], reply)

    async def _ensure_group(self) -> None:
        # At id 0, so requests published before the first worker ever ran are executed too.
        try:
            await self.redis.xgroup_create(self.keys.pending, GROUP, id="0", mkstream=True)
            log.info("created consumer group %s on %s", GROUP, self.keys.pending)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _retrying(self, action: Any) -> None:
        delay = _BACKOFF_START_S
        while not self._stopping.is_set():
            try:
                await action()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- the loop --------------------------------------------------------------------------

    async def serve(self) -> None:
        """Read and process until stopped. Up to ``concurrency`` batches are in flight at
        once, one per lane, where batches wait on a broker or a limit (they pass the turn to
        read: ``_lane``); the reclaimer takes over what other workers left idle too long."""
        lanes = [asyncio.create_task(self._lane(), name=f"lane-{i}")
                 for i in range(self.settings.worker.concurrency)]
        running = self._running
        background: dict[str, Callable[[], Awaitable[None]]] = {
            "reclaim": self._housekeeping,
            "tracker": lambda: self.tracker.run(running, self._sleep),
            "retention": lambda: self.retention.run(running, self._sleep),
        }
        background["emulator"] = lambda: self.emulator.run(running, self._sleep)
        if self.settings.worker.project_positions:
            background["positions"] = lambda: self.projector.run(running, self._sleep)
        lanes += [asyncio.create_task(self._supervised(name, loop), name=name)
                  for name, loop in background.items()]
        try:
            await asyncio.gather(*lanes)
            # Orders still being resolved are finished, not abandoned: a stopping worker
            # drains what it holds.
            while self._follow_ups:
                await asyncio.gather(*self._follow_ups, return_exceptions=True)
        finally:
            for lane in lanes:
                lane.cancel()

    def _running(self) -> bool:
        return not self._stopping.is_set()

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        await supervised(name, loop, running=self._running, sleep=self._sleep,
                         failed=lambda task: self.metrics.background_errors.labels(task).inc(),
                         start_s=_BACKOFF_START_S, max_s=_BACKOFF_MAX_S)

    async def _lane(self) -> None:
        """Read and process batches. The lanes take turns reading (pipeline/turn.py): a
        lane holds the turn while its batch only computes and talks to Redis, so what comes
        meanwhile makes the next batch together; a batch that will wait on a broker or a
        limit passes it on first, and the next lane reads meanwhile. A lane whose batch
        did not pass the turn reads the next batch itself: handing an unpassed turn to an
        idle lane would cost every batch a switch of tasks for nothing."""
        delay = _BACKOFF_START_S
        while not self._stopping.is_set():
            async with self.turns.take() as turn:
                while not turn.passed:
                    if self._stopping.is_set():
                        return
                    reply, pause = await self._read(delay)
                    if pause is not None:
                        break
                    delay = _BACKOFF_START_S
                    for _stream, entries in reply or []:
                        if not entries:
                            continue
                        if self._stopping.is_set():
                            await self._hand_back(entries)
                        else:
                            with turn.batch():
                                await self._process_safely(entries)
            if pause:  # outside the turn: the other lanes need not wait out the backoff
                await self._sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _read(self, delay: float) -> tuple[Any, bool | None]:
        """One read of the requests stream: (reply, None) when it was made, else (None,
        whether to back off, ``delay`` seconds, before reading again)."""
        w = self.settings.worker
        try:
            return await self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.pending: ">"}, count=w.batch_size,
                block=w.block_ms), None
        except RedisTimeoutError:
            # redis-py issue 3138: a BLOCK close to the socket timeout can surface as a
            # timeout on an idle stream. Nothing was lost; read again.
            return None, False
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted under us
                await self._retrying(self._ensure_group)
                return None, False
            self.metrics.redis_errors.inc()
            log.error("redis refused the read: %s; retrying in %.1fs", exc, delay)
            return None, True
        except (RedisConnectionError, OSError) as exc:
            self.metrics.redis_errors.inc()
            log.warning("redis read failed (%s); reconnecting in %.1fs", exc, delay)
            return None, True

    async def _housekeeping(self) -> None:
        """Reclaim what other workers left idle too long, then remove the consumers of
        workers that are gone and own nothing any more."""
        idle_ms = self.settings.worker.visibility_timeout_ms
        while not self._stopping.is_set():
            try:
                claimed = await self.reclaimer.sweep(self._process_safely)
                if claimed:
                    self.metrics.reclaimed.inc(claimed)
                removed = await self.liveness.sweep(min_idle_ms=idle_ms)
                self.metrics.consumers_removed.inc(len(removed))
            except RedisError as exc:
                log.warning("reclaim pass failed: %s", exc)
            await self._sleep(self.reclaimer.interval_s)

    async def _hand_back(self, entries: Sequence[tuple[Any, Any]]) -> None:
        """Give back a batch read just as the worker stopped, without starting it: marked
        idle for a whole visibility timeout, so the others' next reclaim pass takes it, and
        with its delivery count reset, as it was not really delivered."""
        ids: list[Any] = [_text(entry_id) for entry_id, _ in entries]
        try:
            await self.redis.xclaim(
                self.keys.pending, GROUP, self.consumer, 0, ids,
                idle=self.settings.worker.visibility_timeout_ms, retrycount=0, justid=True)
            log.info("handed back %d requests read while stopping", len(ids))
        except RedisError as exc:
            log.warning("could not hand back %d requests (%s); they are reclaimed after the "
                        "visibility timeout", len(ids), exc)

    async def _process_safely(self, entries: Sequence[tuple[Any, Any]]) -> None:
        """Process a batch; whatever goes wrong, the lane lives on. A batch that failed
        half-way stays pending (nothing is acked before its outcome is written) and is
        redelivered, where the order records make redoing it safe."""
        ids = [_text(entry_id) for entry_id, _ in entries]
        self.inflight.hold(ids)
        try:
            await self.process(entries)
        except RedisError as exc:
            self.metrics.redis_errors.inc()
            log.warning("redis failed mid-batch (%s); %d requests stay pending",
                        exc, len(entries))
            pass_turn()
            await self._sleep(_BACKOFF_START_S)
        except IllegalTransition as exc:
            self.metrics.illegal_transition(exc)
            log.error("%s; the batch of %d requests stays pending", exc, len(entries))
        except Exception:
            log.exception("unexpected error in a batch of %d requests; they stay pending",
                          len(entries))
        finally:
            self.inflight.release(ids)

    async def process(self, entries: Sequence[tuple[Any, Any]]) -> None:
        """Run one batch through the pipeline and write its outcomes. Every request is
        decided on its own: a bug of ours met on one request fails that request alone
        (pipeline/steps/guard.py), and its batch-mates go on as if it were not there."""
        now = self.svc.clock()
        step = self.metrics.step
        jobs = [Job(_text(entry_id), fields or {}, now) for entry_id, fields in entries]
        self.metrics.batch_size.observe(len(jobs))
        # Signatures first: nothing is decoded for an entry its sender could not sign.
        with step("authenticate", jobs):
            self.authenticate.signatures(jobs)
        todo = [j for j in jobs if j.open]
        with step("decode", todo):
            self.decode(todo)
        todo = [j for j in jobs if j.open]
        with step("authorize", todo):
            self.authenticate(todo)
        todo = [j for j in jobs if j.open]
        with step("deadline", todo):
            self.deadline(todo)
        written: set[int] = set()
        extra: list[Outcome] = []
        follow_ups: list[FollowUp] = []
        undecided = [j for j in jobs if j.open]
        if any(self._may_wait(j.account) for j in undecided):
            pass_turn()  # it may wait on a broker: the next lane reads meanwhile
        # An amend is the place of its replacement, checked as one; its old order is
        # cancelled only once the checks passed (pipeline/steps/amend.py).
        placing = (Action.PLACE, Action.AMEND)
        for is_place, run in itertools.groupby(undecided, key=lambda j: j.action in placing):
            segment = list(run)
            if is_place:
                amends = [j for j in segment if j.action is Action.AMEND]
                # Only reads: a bug there is internal_error, nothing to hold.
                await self._batch("amend_prepare", amends, self.amend.prepare)
                # The usual way for the orders the speculative write did not decide.
                rest = segment if amends else await self._speculate(segment)
                if rest:
                    await self._prefetch(rest)
                    await self._batch("idempotency", rest, self.idempotency)
                    await self._batch("gate", rest, self.gate)
                    # Without amends, the orders that pass are created in the script that
                    # reserves for them (nothing has to happen between the two); the risk
                    # step holds them itself if a bug meets them after that write.
                    await self._batch("risk", rest,
                                      functools.partial(self.risk, persist=not amends))
                extra += await self._one_by_one("amend", amends, self.amend, decided=True)
                await self._batch("persist", segment, self.persist, written=True)
                await self._settle_reservations(segment)
                failpoint("after_persist")

                async def submit(todo: list[Job]) -> None:
                    follow_ups.extend(await self.submit(todo))
                # Never run again: it may have sent orders. It keeps one order's bug from
                # the others itself (pipeline/steps/submit.py); a bug outside that holds the rest.
                await self._batch("submit", segment, submit, written=True, redo=False)
                failpoint("after_submit")
            else:
                # A cancel must see the outcome of the places before it in the batch.
                await self._finish(jobs, written, extra)
                extra = await self._one_by_one("cancel", segment, self.cancel)
                await self._one_by_one("sl_tp", segment, self.exits)
        await self._finish(jobs, written, extra)
        if follow_ups:
            self._follow_up(follow_ups)

    def _may_wait(self, account: str | None) -> bool:
        """Whether a request of ``account`` may wait on more than Redis (see ``_waits``).
        A cancel by client id alone names no account: it may be of any served here. An
        account not served here counts as one that may."""
        if account is None:
            return any(self._waits.values())
        return self._waits.get(account, True)

    def _follow_up(self, items: list[FollowUp]) -> None:
        """Resolve the orders the first round left open (lookups over a broker's window,
        resends) apart from the lane, which goes on reading: one ambiguous order holds back
        neither its batch-mates' results nor the next batches. Their requests stay held
        (claimed) until their outcomes are written."""
        ids = [item.job.request_id for item in items]
        self.inflight.hold(ids)

        async def resolve() -> None:
            try:
                with self.metrics.step("follow_up", items):
                    await self.submit.follow_up(items)
                jobs = [item.job for item in items]
                await self._finish(jobs, set(), [])
            except RedisError as exc:
                self.metrics.redis_errors.inc()
                log.warning("redis failed while resolving %d orders (%s); their requests "
                            "stay pending", len(items), exc)
            except Exception:
                log.exception("unexpected error while resolving %d orders; their requests "
                              "stay pending", len(items))
            finally:
                self.inflight.release(ids)

        task = asyncio.create_task(resolve(), name="follow-up")
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)

    async def _batch(self, name: str, jobs: Sequence[Job],
                     run: Callable[[list[Job]], Awaitable[object]], *, written: bool = False,
                     redo: bool = True) -> None:
        """Run a step over a batch's open jobs in one go. A bug in it (any exception but a
        Redis error, which leaves the whole batch pending as before) is narrowed down by
        running the step again for each job alone, where that is what a redelivery would
        do anyway (``redo``: reads, compare-and-sets, persist's create-if-absent); the job
        that fails alone, or every open job of a step that cannot be redone, fails alone:
        ``internal_error``, or held when its order may be written (``written``)."""
        todo = [j for j in jobs if j.open]
        if not todo:
            return
        try:
            with self.metrics.step(name, todo):
                await run(todo)
            return
        except RedisError:
            raise
        except Exception as exc:
            if redo and len(todo) > 1:
                log.warning("bug in step %s over %d requests (%s); deciding each alone",
                            name, len(todo), type(exc).__name__)
                for job in todo:
                    await self._batch(name, [job], run, written=written, redo=False)
                return
            failed = exc
        if written:
            guard.hold(self.svc, todo, name, failed)
        else:
            for job in todo:
                if job.result is None:
                    guard.internal_error(self.svc, job, name, failed)

    async def _one_by_one(self, name: str, jobs: Sequence[Job],
                          run: Callable[[list[Job]], Awaitable[list[Outcome]]], *,
                          decided: bool = False) -> list[Outcome]:
        """Run a step that handles one request at a time and writes or sends as it goes
        (amend, cancel) for each job alone: a bug holds that job only, whose redelivery
        redoes it from the order's record as after a crash. ``decided``: jobs that already
        have a result go through it too (an amend refused by the checks is answered about
        its old order)."""
        todo = [j for j in jobs if not j.held and (decided or j.result is None)]
        out: list[Outcome] = []
        with self.metrics.step(name, todo):
            for job in todo:
                try:
                    out += await run([job])
                except RedisError:
                    raise
                except Exception as exc:
                    guard.hold(self.svc, [job], name, exc)
        return out

    async def _speculate(self, segment: Sequence[Job]) -> list[Job]:
        """The segment's new orders decided and written in one round trip, where this
        process's last write of their accounts lets it skip the reads (the risk step's
        ``speculate``); returns those left to the usual way (all of them, unchanged, where
        none was decided so)."""
        todo = [j for j in segment if j.open]
        try:
            with self.metrics.step("speculate", todo):
                decided = {id(j) for j in await self.risk.speculate(todo)}
        except RedisError:
            raise  # the write may have applied: pending, redone from the records
        except Exception:
            # Met before its write (after it, the risk step holds the jobs itself): nothing
            # is written, and the usual way decides.
            self.metrics.internal_errors.labels("speculate").inc()
            log.exception("a speculative write failed; the batch goes the usual way")
            return list(segment)
        return [j for j in segment if id(j) not in decided]

    async def _prefetch(self, segment: Sequence[Job]) -> None:
        # Only reads ahead of the steps: after a bug in it they read for themselves.
        todo = [j for j in segment if j.open]
        try:
            with self.metrics.step("prefetch", todo):
                await self.prefetch(todo)
        except RedisError:
            raise
        except Exception:
            self.metrics.internal_errors.labels("prefetch").inc()
            log.exception("the batch's first read failed; its steps read for themselves")
            for job in todo:
                job.reads = None

    async def _settle_reservations(self, segment: Sequence[Job]) -> None:
        # A held request keeps its reservation: its order may exist, and its redelivery
        # takes the reservation over (or the orphan sweep releases it).
        try:
            await self.risk.settle([j for j in segment if not j.held])
        except Exception:
            self.metrics.internal_errors.labels("settle").inc()
            log.exception("reservations not settled; the orphan sweep releases them")

    async def _finish(self, jobs: Sequence[Job], written: set[int],
                      extra: list[Outcome]) -> None:
        done = [j for j in jobs if j.result is not None and id(j) not in written]
        if any(j.written for j in done):
            # Written with their records (pipeline/steps/taken.py): only counted here.
            now = self.svc.clock()
            for job in done:
                if job.written:
                    written.add(id(job))
                    assert job.result is not None
                    self.metrics.record(job.result, now, self.brokers)
            done = [j for j in done if not j.written]
        if not done and not extra:
            return
        outcomes = [
            Outcome(j.request_id, j.result, j.order if j.events else None, j.expected_seq,
                    j.events, deferred=results.deferred(j))
            for j in done
        ]
        outcomes += extra
        try:
            with self.metrics.step("finish", outcomes):
                conflicts, unwritten = await self._write(outcomes)
        except Exception:
            # What was not written stays pending and is redone on redelivery, where the
            # order records make that safe. The loop goes on: a worker must not die of a
            # Redis hiccup.
            self.metrics.redis_errors.inc()
            log.exception("could not write the outcomes of %d requests", len(outcomes))
            written.update(id(j) for j in done)
            extra.clear()
            return
        now = self.svc.clock()
        for job in done:
            written.add(id(job))
            if job.request_id in unwritten:
                continue
            if job.request_id in conflicts:
                self.metrics.finish_conflicts.inc()
                log.warning("request %s (order %s): not written, as another worker "
                            "answered it or moved the order meanwhile", job.request_id,
                            job.client_order_id,
                            extra=about(job.client_order_id, job.request_id))
                continue
            assert job.result is not None
            if not results.deferred(job):  # counted when it is answered (algos.py)
                self.metrics.record(job.result, now, self.brokers)
        extra.clear()

    async def _write(self, outcomes: list[Outcome]) -> tuple[set[str], set[str]]:
        """Write the outcomes in one script call; returns the request ids of conflicts and
        of outcomes left unwritten. Anything but a Redis error was raised while the call
        was being built (encoding an outcome), before anything reached Redis: then each
        outcome is written alone, so only one that cannot be is left pending."""
        try:
            return set(await self.store.finish(outcomes)), set()
        except RedisError:
            raise
        except Exception as exc:
            if len(outcomes) == 1:
                raise
            log.warning("could not build the write of %d outcomes (%s); writing each alone",
                        len(outcomes), type(exc).__name__)
        conflicts: set[str] = set()
        unwritten: set[str] = set()
        for outcome in outcomes:
            try:
                conflicts.update(await self.store.finish([outcome]))
            except RedisError:
                raise
            except Exception:
                unwritten.add(outcome.request_id)
                self.metrics.internal_errors.labels("finish").inc()
                log.exception("request %s: outcome not written (bug); it stays pending and is "
                              "redone on redelivery", outcome.request_id,
                              extra=about(outcome.result.client_order_id
                                          if outcome.result else None, outcome.request_id))
        return conflicts, unwritten
