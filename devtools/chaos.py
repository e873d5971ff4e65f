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

On a Redis Cluster with partitions (``ChaosConfig.partitions``), every worker process
serves every partition (executor/host.py), each partition has its own paper account, and
the orders alternate between them; all the counts above are made per partition.

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
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.connect import redis_client
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
from producer.partitions import partition_prefix
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
    # What the orders trade: quantities 0.001 and 0.002 around a reference price of 50000.
    symbol: str = "BTCUSDT"
    # The Redis url names a node of a Redis Cluster.
    cluster: bool = False
    # Partitions of the deployment (0: none): partition n holds paper account "p<n>".
    partitions: int = 0
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


def chaos_request(i: int, rng: random.Random, stride: int = 1,
                  symbol: str = "BTCUSDT") -> Request:
    """A mix of what traders send: market orders, IOC and resting limits, producer
    retries of an earlier client id, and orders whose id the worker generates. With
    ``stride`` n, request i goes to account i mod n, and a retry repeats a request of the
    same account (a retry never changes the account its order was for)."""
    side = Side.BUY if i % 2 else Side.SELL
    cid: str | None = f"chaos-{i}"
    roll = rng.random()
    if roll < 0.05 and i >= stride:
        # A producer retry: must come back "duplicate".
        cid = f"chaos-{rng.randrange(i // stride) * stride + i % stride}"
    elif roll < 0.15:
        cid = None
    kind = rng.random()
    if kind < 0.6:
        return Request(client_order_id=cid, symbol=symbol, side=side,
                       type=OrderType.MARKET, quantity=parse_decimal("0.001"))
    price = "49000" if side is Side.BUY else "51000"  # rests: away from the 50000 reference
    tif = TimeInForce.IOC if kind < 0.8 else TimeInForce.GTC
    return Request(client_order_id=cid, symbol=symbol, side=side, type=OrderType.LIMIT,
                   quantity=parse_decimal("0.002"), price=parse_decimal(price),
                   time_in_force=tif)


# A request: its partition's prefix and its entry id there.
RequestId = tuple[str, str]


def judge(firsts: Sequence[tuple[RequestId, Result]], received: Container[str],
          ) -> tuple[int, list[tuple[RequestId, Result]]]:
    """Whether the results agree with what the exchange received, per client id: of the
    results that speak for an order (not ``duplicate`` or ``poison``, which name another
    request's order), exactly one says the order reached the exchange when it received the
    client id, and none when it did not. A denied, expired or invalid request made no
    order, so a later request may use its client id (a producer's retry after a denial is
    placed), and its "did not reach" is true of itself, not of the client id. A client id
    with a ``submitted`` result (sent, outcome unknown) is not judged: it may or may not
    have reached. Returns the unknown results and those that disagree. Pure."""
    said: dict[str | None, list[tuple[RequestId, Result]]] = collections.defaultdict(list)
    for rid, result in firsts:
        if result.reason_code not in ("duplicate", "poison"):
            said[result.client_order_id].append((rid, result))
    unknown = 0
    offending: list[tuple[RequestId, Result]] = []
    for cid, results in said.items():
        submitted = sum(1 for _, res in results if res.status is ResultStatus.SUBMITTED)
        unknown += submitted
        if submitted:
            continue
        claims = [(rid, res) for rid, res in results if res.broker_order_id is not None]
        if cid in received:
            offending += claims[1:] if claims else results
        else:
            offending += claims
    return unknown, offending


def _outcome(result: Result) -> str:
    return str(result.status) + (f":{result.reason_code}" if result.reason_code else "")

# What the exchange saw: orders created per client id, and submits it refused because the
# client id was on an order already (a correct worker sends neither twice).
ExchangeCounts = Callable[[aioredis.Redis], Awaitable[tuple[Mapping[str, int], int]]]


async def paper_counts(redis: aioredis.Redis, layout: Sequence[tuple[str, str]] = (
        (Keys().prefix, "default"),)) -> tuple[Mapping[str, int], int]:
    """What the paper exchanges of ``layout`` (prefix, account) saw; a client id is only
    ever used in one partition (its account's), so the counts add up."""
    received: collections.Counter[str] = collections.Counter()
    refused = 0
    for prefix, account in layout:
        keys = Keys(prefix)
        sent: Any = await redis.xrange(keys.paper(account, "received"))
        received.update(text(f[b"client_order_id"]) for _, f in sent)
        refused += int(await redis.xlen(keys.paper(account, "duplicates")))
    return received, refused


def partitions_toml(accounts: Sequence[str], prefix: str = "orders") -> str:
    """The workers' TOML of a partitioned deployment: partition n holds paper account
    ``accounts[n]``."""
    lines = ["[redis]", f'prefix = "{prefix}"']
    for account in accounts:
        lines += [f"[accounts.{account}]", 'broker = "paper"']
    lines += ["[partitions]", f"count = {len(accounts)}", "[partitions.accounts]"]
    lines += [f"{account} = {n}" for n, account in enumerate(accounts)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Partition:
    keys: Keys
    account: str


class Chaos:
    def __init__(self, redis_url: str, cfg: ChaosConfig, logdir: Path,
                 say: Any = lambda _msg: None,
                 exchange_counts: ExchangeCounts = paper_counts) -> None:
        self.url = redis_url
        self.exchange_counts = exchange_counts
        self.cfg = cfg
        self.logdir = logdir
        self.say = say
        self.parts = ([Partition(Keys(partition_prefix("orders", n)), f"p{n}")
                       for n in range(cfg.partitions)] if cfg.partitions
                      else [Partition(Keys(), "default")])
        if cfg.partitions and exchange_counts is paper_counts:
            layout = [(part.keys.prefix, part.account) for part in self.parts]
            self.exchange_counts = lambda redis: paper_counts(redis, layout)
        self.config_file = cfg.config_file or (self._partitions_config() if cfg.partitions
                                               else None)
        self.rng = random.Random(cfg.seed)
        self.report = ChaosReport()
        self.slots: list[WorkerProcess] = []
        self._generation = 0
        self._armed: set[str] = set()

    def _partitions_config(self) -> str:
        path = self.logdir / "partitions.toml"
        path.write_text(partitions_toml([part.account for part in self.parts]))
        return str(path)

    def _spawn(self, slot: int, failpoint: str | None = None) -> WorkerProcess:
        self._generation += 1
        name = f"chaos-{slot}-{self._generation}"
        env = dict(self.cfg.worker_env)
        for part in self.parts:
            account = part.account.upper()
            env.update({f"ORDERSTREAM_ACCOUNTS_{account}_FAILURE_RATE": str(self.cfg.failure_rate),
                        f"ORDERSTREAM_ACCOUNTS_{account}_TIMEOUT_RATE": str(self.cfg.timeout_rate),
                        f"ORDERSTREAM_ACCOUNTS_{account}_SEED": str(self._generation)})
        if self.config_file:
            env["ORDERSTREAM_CONFIG"] = self.config_file
        if self.cfg.cluster:
            env["ORDERSTREAM_REDIS_CLUSTER"] = "true"
        if failpoint:
            env["ORDERSTREAM_FAILPOINT"] = failpoint
            self._armed.add(name)
        return WorkerProcess(self.url, name, self.logdir / f"{name}.log", **env)

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        self.slots = [self._spawn(i) for i in range(self.cfg.workers)]
        redis = redis_client(self.url, cluster=self.cfg.cluster)
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

    async def _publish(self, redis: aioredis.Redis) -> list[RequestId]:
        """Publish the orders, alternating over the partitions; a request's id is its
        partition's prefix and its entry id (entry ids are unique per stream only)."""
        cfg = self.cfg
        rng = random.Random(cfg.seed + 1)
        chunk = 50
        pause = cfg.publish_s / max(cfg.orders / chunk, 1)
        ids: list[RequestId] = []
        for start in range(0, cfg.orders, chunk):
            sent: list[str] = []
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + chunk, cfg.orders)):
                    part = self.parts[i % len(self.parts)]
                    request = chaos_request(i, rng, len(self.parts), cfg.symbol)
                    if cfg.partitions:
                        request = msgspec.structs.replace(request, account=part.account)
                    pipe.xadd(part.keys.pending, {"data": encode(request)})
                    sent.append(part.keys.prefix)
                ids += [(prefix, text(entry_id))
                        for prefix, entry_id in zip(sent, await pipe.execute(), strict=True)]
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

    async def _unacked(self, redis: aioredis.Redis) -> int:
        total = 0
        for part in self.parts:
            pending: Any = await redis.xpending(part.keys.pending, GROUP)
            total += int(pending["pending"])
        return total

    async def _settle(self, redis: aioredis.Redis, request_ids: list[RequestId]) -> None:
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        want = len(request_ids)
        while time.monotonic() < deadline:
            done = 0
            for part in self.parts:
                done += int(await redis.xlen(part.keys.completed))
                done += int(await redis.xlen(part.keys.failed))
            if done >= want and await self._unacked(redis) == 0:
                return
            self._restart_dead()
            await asyncio.sleep(0.2)
        self.say("settle timeout: not every request was answered")

    async def _replay(self) -> None:
        """Rebuild orders and positions from each partition's event log and compare with
        what is stored there."""
        differences = 0
        for part in self.parts:
            args = ["--prefix", part.keys.prefix]
            if self.cfg.cluster:
                args.append("--cluster")
            if self.config_file:
                args += ["--config", self.config_file]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "executor", "replay", "--json", *args,
                env=dict(os.environ, REDIS_URL=self.url), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            out, err = await proc.communicate()
            try:
                report = json.loads(out)
            except ValueError:
                self.say(f"replay of {part.keys.prefix} failed ({proc.returncode}): "
                         f"{err.decode(errors='replace')}")
                return
            # On a partitioned deployment the operator commands wrap each partition's view.
            report = report.get("view", report)
            differences += len(report["differences"])
            for difference in report["differences"][:5]:
                self.report.examples.append(f"replay {part.keys.prefix}: {difference}")
        self.report.replay_differences = differences

    async def _count(self, redis: aioredis.Redis, request_ids: list[RequestId]) -> None:
        r = self.report
        r.requests = len(request_ids)
        answers: dict[RequestId, list[Result]] = collections.defaultdict(list)
        for part in self.parts:
            for stream in (part.keys.completed, part.keys.failed):
                entries: Any = await redis.xrange(stream)
                for _, fields in entries:
                    result = _result_decoder.decode(fields[b"data"])
                    answers[(part.keys.prefix, result.request_id)].append(result)
                    r.results += 1
        wanted = set(request_ids)
        r.lost = len(wanted - answers.keys())
        r.duplicated = sum(1 for rid in wanted if len(answers.get(rid, ())) > 1)
        received, refused = await self.exchange_counts(redis)
        r.sent_twice = sum(1 for n in received.values() if n > 1) + refused
        firsts = [(rid, answers[rid][0]) for rid in request_ids if answers.get(rid)]
        for _, result in firsts:
            outcome = _outcome(result)
            r.outcomes[outcome] = r.outcomes.get(outcome, 0) + 1
        r.unknown, offending = judge(firsts, received)
        r.inconsistent = len(offending)
        r.examples += [f"{rid} {result.client_order_id} {_outcome(result)} "
                       f"broker_order_id={result.broker_order_id}"
                       for rid, result in offending[:5]]
        for rid in sorted(wanted - answers.keys())[:5]:
            r.examples.append(f"lost {rid}")
        r.pending = await self._unacked(redis)
