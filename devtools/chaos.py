"""Chaos run: worker processes on one Redis are killed with SIGKILL at random moments and
restarted while orders are published and the paper exchange fails and times out some of
its calls. Afterwards, counted from Redis alone (what any other process could see):

- lost: requests without a result; duplicated: requests with more than one result;
- sent twice: client ids the exchange received more than once, plus submits it refused
  because the client id was already taken (a correct worker never sends one);
- inconsistent: a result that says the order reached the exchange when it did not, or
  the other way round;
- pending: entries left unacknowledged in the consumer group;
- replay: differences ``orderstream replay`` finds between the order records and positions
  and what the event log rebuilds (after the workers have stopped).

Some restarted workers are armed with a failpoint (executor/infra/failpoints.py), so they die
exactly between a broker call and the write of its outcome, or just after persisting.

Used by tests/integration/test_chaos.py (bounded, for CI) and bench/chaos.py (bigger).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from producer.contract import (
    OrderType,
    Request,
    Result,
    ResultStatus,
    Side,
    TimeInForce,
    decoder,
    encode,
    parse_decimal,
)
from producer.keys import GROUP, Keys
from producer.replies import text

_result_decoder = decoder(Result)
FAILPOINTS = ("after_submit", "after_persist")


class WorkerProcess:
    """One ``orderstream worker`` in a child process, its output in ``log``."""

    def __init__(self, redis_url: str, consumer: str, log: Path, **env: str) -> None:
        self.consumer = consumer
        self.log = log
        child_env = dict(os.environ, REDIS_URL=redis_url, ORDERSTREAM_CONSUMER=consumer,
                         ORDERSTREAM_METRICS_PORT="0", ORDERSTREAM_METRICS_HOST="127.0.0.1",
                         **env)
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "executor", "worker"],
                                         env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@dataclass
class ChaosConfig:
    orders: int = 5_000
    workers: int = 3
    publish_s: float = 8.0  # orders are published evenly over this long
    kill_every_s: tuple[float, float] = (0.5, 2.0)  # a kill every uniform(a, b) seconds
    kill_for_s: float = 12.0  # kills stop after this long (then the run settles)
    failpoint_share: float = 0.25  # restarts armed with a failpoint
    settle_timeout_s: float = 120.0  # after publishing, how long to wait for every result
    failure_rate: float = 0.02  # paper submits refused before the book (retryable)
    timeout_rate: float = 0.02  # paper submits stored but answered "unknown outcome"
    seed: int = 7
    config_file: str | None = None  # the workers' TOML (another broker than paper)
    worker_env: Mapping[str, str] = field(default_factory=lambda: {
        "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "1500",
        "ORDERSTREAM_LOOKUP_WINDOW_MS": "300",
        "ORDERSTREAM_HEARTBEAT_MS": "200",
        "ORDERSTREAM_MAX_DELIVERIES": "20",
        "ORDERSTREAM_BATCH_SIZE": "50",
    })


@dataclass
class ChaosReport:
    requests: int = 0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    sent_twice: int = 0
    inconsistent: int = 0
    unknown: int = 0  # answered submitted: sent, outcome unknown (never sent again)
    pending: int = 0
    replay_differences: int = -1  # -1: replay did not run or could not read its output
    kills: int = 0
    failpoint_crashes: int = 0
    elapsed_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # a few offending ids, for a failure

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.sent_twice or self.inconsistent
                    or self.pending or self.replay_differences != 0)

    def lines(self) -> list[str]:
        return [
            f"requests {self.requests}, results {self.results}, in {self.elapsed_s:.1f} s",
            f"kills {self.kills} (SIGKILL at random), failpoint crashes "
            f"{self.failpoint_crashes}",
            f"lost {self.lost}, duplicated {self.duplicated}, sent twice {self.sent_twice}, "
            f"inconsistent {self.inconsistent}, unknown {self.unknown}, "
            f"pending {self.pending}, "
            f"replay differences {self.replay_differences}",
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
        ] + [f"example: {e}" for e in self.examples]


def chaos_request(i: int, rng: random.Random) -> Request:
    """A mix of what traders send: market orders, IOC and resting limits, producer
    retries of an earlier client id, and orders whose id the worker generates."""
    side = Side.BUY if i % 2 else Side.SELL
    cid: str | None = f"chaos-{i}"
    roll = rng.random()
    if roll < 0.05 and i > 0:
        cid = f"chaos-{rng.randrange(i)}"  # a producer retry: must come back "duplicate"
    elif roll < 0.15:
        cid = None
    kind = rng.random()
    if kind < 0.6:
        return Request(client_order_id=cid, symbol="BTCUSDT", side=side,
                       type=OrderType.MARKET, quantity=parse_decimal("0.001"))
    price = "49000" if side is Side.BUY else "51000"  # rests: away from the 50000 reference
    tif = TimeInForce.IOC if kind < 0.8 else TimeInForce.GTC
    return Request(client_order_id=cid, symbol="BTCUSDT", side=side, type=OrderType.LIMIT,
                   quantity=parse_decimal("0.002"), price=parse_decimal(price),
                   time_in_force=tif)


# What the exchange saw: orders created per client id, and submits it refused because the
# client id was on an order already (a correct worker sends neither twice).
ExchangeCounts = Callable[[aioredis.Redis], Awaitable[tuple[Mapping[str, int], int]]]


async def paper_counts(redis: aioredis.Redis) -> tuple[Mapping[str, int], int]:
    keys = Keys()
    sent: Any = await redis.xrange(keys.paper("default", "received"))
    received = collections.Counter(text(f[b"client_order_id"]) for _, f in sent)
    return received, int(await redis.xlen(keys.paper("default", "duplicates")))


class Chaos:
    def __init__(self, redis_url: str, cfg: ChaosConfig, logdir: Path,
                 say: Any = lambda _msg: None,
                 exchange_counts: ExchangeCounts = paper_counts) -> None:
        self.url = redis_url
        self.exchange_counts = exchange_counts
        self.cfg = cfg
        self.logdir = logdir
        self.say = say
        self.keys = Keys()
        self.rng = random.Random(cfg.seed)
        self.report = ChaosReport()
        self.slots: list[WorkerProcess] = []
        self._generation = 0
        self._armed: set[str] = set()

    def _spawn(self, slot: int, failpoint: str | None = None) -> WorkerProcess:
        self._generation += 1
        name = f"chaos-{slot}-{self._generation}"
        env = dict(self.cfg.worker_env,
                   ORDERSTREAM_ACCOUNTS_DEFAULT_FAILURE_RATE=str(self.cfg.failure_rate),
                   ORDERSTREAM_ACCOUNTS_DEFAULT_TIMEOUT_RATE=str(self.cfg.timeout_rate),
                   ORDERSTREAM_ACCOUNTS_DEFAULT_SEED=str(self._generation))
        if self.cfg.config_file:
            env["ORDERSTREAM_CONFIG"] = self.cfg.config_file
        if failpoint:
            env["ORDERSTREAM_FAILPOINT"] = failpoint
            self._armed.add(name)
        return WorkerProcess(self.url, name, self.logdir / f"{name}.log", **env)

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        self.slots = [self._spawn(i) for i in range(self.cfg.workers)]
        redis = aioredis.Redis.from_url(self.url)
        try:
            ids = await asyncio.gather(self._publish(redis), self._kill_loop())
            request_ids = ids[0]
            await self._settle(redis, request_ids)
            for proc in self.slots:
                proc.stop()
            self.report.elapsed_s = time.monotonic() - started
            await self._count(redis, request_ids)
            await self._replay()
        finally:
            for proc in self.slots:
                proc.kill()
            await redis.aclose()
        return self.report

    async def _publish(self, redis: aioredis.Redis) -> list[str]:
        cfg = self.cfg
        rng = random.Random(cfg.seed + 1)
        chunk = 50
        pause = cfg.publish_s / max(cfg.orders / chunk, 1)
        ids: list[str] = []
        for start in range(0, cfg.orders, chunk):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + chunk, cfg.orders)):
                    pipe.xadd(self.keys.pending, {"data": encode(chaos_request(i, rng))})
                ids += [text(entry_id) for entry_id in await pipe.execute()]
            await asyncio.sleep(pause)
        self.say(f"published {len(ids)} orders")
        return ids

    async def _kill_loop(self) -> None:
        cfg = self.cfg
        deadline = time.monotonic() + cfg.kill_for_s
        while True:
            await asyncio.sleep(self.rng.uniform(*cfg.kill_every_s))
            if time.monotonic() >= deadline:
                break
            self._restart_dead()
            slot = self.rng.randrange(len(self.slots))
            self.slots[slot].kill()
            self.report.kills += 1
            armed = (self.rng.choice(FAILPOINTS) if self.rng.random() < cfg.failpoint_share
                     else None)
            self.slots[slot] = self._spawn(slot, armed)
        self._restart_dead()
        # The last ones run unarmed, so that the run can finish.
        for slot, proc in enumerate(self.slots):
            if proc.consumer in self._armed:
                proc.kill()
                self.slots[slot] = self._spawn(slot)

    def _restart_dead(self) -> None:
        """A worker armed with a failpoint kills itself; count it and start a new one."""
        for slot, proc in enumerate(self.slots):
            if not proc.alive():
                if proc.proc.returncode == -signal.SIGKILL and proc.consumer in self._armed:
                    self.report.failpoint_crashes += 1
                self.slots[slot] = self._spawn(slot)

    async def _settle(self, redis: aioredis.Redis, request_ids: list[str]) -> None:
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        want = len(request_ids)
        while time.monotonic() < deadline:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.xlen(self.keys.completed)
                pipe.xlen(self.keys.failed)
                done = sum(await pipe.execute())
            if done >= want:
                pending: Any = await redis.xpending(self.keys.pending, GROUP)
                if int(pending["pending"]) == 0:
                    return
            self._restart_dead()
            await asyncio.sleep(0.2)
        self.say("settle timeout: not every request was answered")

    async def _replay(self) -> None:
        """Rebuild orders and positions from the event log and compare with what is stored."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "executor", "replay", "--json",
            env=dict(os.environ, REDIS_URL=self.url), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        try:
            report = json.loads(out)
        except ValueError:
            self.say(f"replay failed ({proc.returncode}): {err.decode(errors='replace')}")
            return
        self.report.replay_differences = len(report["differences"])
        for difference in report["differences"][:5]:
            self.report.examples.append(f"replay: {difference}")

    async def _count(self, redis: aioredis.Redis, request_ids: list[str]) -> None:
        r = self.report
        r.requests = len(request_ids)
        answers: dict[str, list[Result]] = collections.defaultdict(list)
        for stream in (self.keys.completed, self.keys.failed):
            entries: Any = await redis.xrange(stream)
            for _, fields in entries:
                result = _result_decoder.decode(fields[b"data"])
                answers[result.request_id].append(result)
                r.results += 1
        wanted = set(request_ids)
        r.lost = len(wanted - answers.keys())
        r.duplicated = sum(1 for rid in wanted if len(answers.get(rid, ())) > 1)
        received, refused = await self.exchange_counts(redis)
        r.sent_twice = sum(1 for n in received.values() if n > 1) + refused
        for rid in request_ids:
            for result in answers.get(rid, ())[:1]:
                key = str(result.status) + (f":{result.reason_code}" if result.reason_code
                                            else "")
                r.outcomes[key] = r.outcomes.get(key, 0) + 1
                if result.reason_code in ("duplicate", "poison"):
                    continue  # the first request for that client id speaks for the order
                if result.status is ResultStatus.SUBMITTED:
                    r.unknown += 1  # claims nothing about the exchange: it may or may not
                    continue
                reached = result.broker_order_id is not None
                if reached != (result.client_order_id in received):
                    r.inconsistent += 1
                    if len(r.examples) < 5:
                        r.examples.append(f"{rid} {result.client_order_id} {key} "
                                          f"broker_order_id={result.broker_order_id}")
        for rid in sorted(wanted - answers.keys())[:5]:
            r.examples.append(f"lost {rid}")
        pending: Any = await redis.xpending(self.keys.pending, GROUP)
        r.pending = int(pending["pending"])
