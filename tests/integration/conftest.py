"""Helpers to run real workers against the real redis-server of tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import redis.asyncio as aioredis

from devtools.chaos import WorkerProcess
from executor.config import Settings, load_settings
from executor.host import PartitionHost
from executor.infra.store import NewOrder, Store
from executor.model.order import Context, new_order
from executor.worker import Worker
from producer.client import OrderClient, Submitted
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    ResultStatus,
    Side,
    TimeInForce,
    WireDecimal,
    decode_events,
    decode_request,
    decode_result,
    encode,
)
from producer.keys import GROUP, Keys


def settings_for(redis_url: str, consumer: str = "w1", **worker: Any) -> Settings:
    env = {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": consumer,
           "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1"}
    for key, value in worker.items():
        env[f"ORDERSTREAM_{key.upper()}"] = str(value)
    return load_settings(None, env)


Served = TypeVar("Served", Worker, PartitionHost)


class Turns:
    """How many turns of the event loop another task has had so far."""

    count = 0


@contextlib.asynccontextmanager
async def other_task_turns() -> AsyncIterator[Turns]:
    """Another task in this event loop, as a worker's request lanes are beside its background
    passes, counting its turns until the block ends: a pass that hands the loop back lets
    it run; one that does not, does not."""
    turns = Turns()

    async def spin() -> None:
        while True:
            turns.count += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(spin())
    try:
        yield turns
    finally:
        task.cancel()


@contextlib.asynccontextmanager
async def serving(worker: Served) -> AsyncIterator[Served]:
    """A worker (or a process's partitions) serving in this event loop until the block
    ends, then stopped cleanly."""
    await worker.start()
    task = asyncio.create_task(worker.serve())
    try:
        yield worker
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            await worker.close()  # its connections, even when its loop ended in an error


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Worker]:
    async with serving(Worker(settings, **kwargs)) as worker:
        yield worker


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    def make(consumer: str = "w1", **worker: Any) -> Settings:
        return settings_for(redis_url, consumer, **worker)
    return make


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[OrderClient]:
    c = OrderClient.from_url(redis_url)
    yield c
    await c.aclose()


def replace(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


async def taken_by_a_dead_worker(r: aioredis.Redis, client: OrderClient,
                                 **order: Any) -> Submitted:
    """Publish one order (a market buy unless ``order`` says otherwise) and have consumer
    "dead" read it and never answer (no heartbeat)."""
    pending = Keys().pending
    await r.xgroup_create(pending, GROUP, id="0", mkstream=True)
    order = {"symbol": "BTCUSDT", "side": "buy", "type": "market", "quantity": "0.010",
             **order}
    sub = await client.place(**order)
    reply: Any = await r.xreadgroup(GROUP, "dead", {pending: ">"}, count=1)
    assert reply[0][1][0][0].decode() == sub.request_id
    return sub


async def persisted_by_the_dead_worker(r: aioredis.Redis, sub: Submitted) -> OrderSpec:
    """What the persist step of the dead worker wrote: the order in pending_submit."""
    k = Keys()
    request = decode_request((await r.xrange(k.pending, sub.request_id, sub.request_id))[0][1]
                             [b"data"])
    assert request.symbol and request.side and request.type and request.quantity
    spec = OrderSpec(account="default", symbol=request.symbol, side=request.side,
                     type=request.type, quantity=request.quantity, price=request.price,
                     time_in_force=request.time_in_force or TimeInForce.GTC)
    store = Store(r, k, results_maxlen=100, order_ttl_ms=60_000)
    assert sub.client_order_id is not None
    order, events = new_order(sub.client_order_id, sub.request_id, spec,
                              Context(now=1, worker="dead", request_id=sub.request_id))
    await store.begin([NewOrder(order, events)])
    return spec


async def died_after_pending_cancel(redis_url: str, log: Path) -> None:
    """Have a worker process take the cancel (or cancel_all, amend) just published and die
    with SIGKILL right after writing ``pending_cancel``, before it asks the broker."""
    doomed = WorkerProcess(redis_url, "doomed", log,
                           ORDERSTREAM_FAILPOINT="after_pending_cancel")
    code = await asyncio.to_thread(doomed.proc.wait, 60)
    assert code == -signal.SIGKILL, log.read_text()


async def hand_over(r: aioredis.Redis, request_id: str) -> None:
    """Make a dead worker's pending request look idle for a minute, so that the next
    worker's first reclaim pass takes it, long before its tracker would take the order
    back (two visibility timeouts after the order last changed)."""
    await r.xclaim(Keys().pending, GROUP, "doomed", 0, [request_id], idle=60_000)


async def events_in(r: Any, cid: str | None = None, keys: Keys | None = None,
                    count: int | None = None) -> list[Event]:
    """The events on the events stream in order (of order ``cid`` only, if given): an entry
    holds one event, or the several of one write (event v2). ``count``: the last entries
    only, that many."""
    stream = (keys or Keys()).events
    entries: Any = (await r.xrevrange(stream, count=count))[::-1] if count else \
        await r.xrange(stream)
    return [e for _, f in entries for e in decode_events(f[b"data"])
            if cid is None or e.client_order_id == cid]


async def filled(r: aioredis.Redis, cid: str, *, account: str = "default",
                 symbol: str = "BTCUSDT", quantity: str = "1", price: str = "50000") -> None:
    """A market buy's created and filled events, as a worker writes them (for the positions
    fold to read)."""
    spec = OrderSpec(account=account, symbol=symbol, side=Side.BUY, type=OrderType.MARKET,
                     quantity=WireDecimal(quantity))
    await r.xadd(Keys().events, {"data": encode(Event(
        client_order_id=cid, seq=1, state=OrderState.CREATED, at=1, account=account,
        symbol=symbol, order=spec))})
    await r.xadd(Keys().events, {"data": encode(Event(
        client_order_id=cid, seq=2, state=OrderState.FILLED, at=2, account=account,
        symbol=symbol, fill=Fill(
            fill_id=f"f-{cid}", price=WireDecimal(price), quantity=WireDecimal(quantity),
            commission=WireDecimal("0"), commission_asset="USDT", at=2)))})


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for ``check`` to hold, polling; fail the test if it does not in time."""
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    assert await check()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """``until`` for a check that needs no await."""
    async def holds() -> bool:
        return check()
    await until(holds, timeout)


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): its state in /proc is T."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


async def results_of(r: aioredis.Redis, request_id: str) -> list[ResultStatus]:
    """The statuses of every result written for one request, on either result stream."""
    keys = Keys()
    return [decode_result(f[b"data"]).status
            for stream in (keys.completed, keys.failed) for _, f in await r.xrange(stream)
            if f[b"request_id"].decode() == request_id]
