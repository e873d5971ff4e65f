"""Speculative writes (pipeline/steps/risk.py ``speculate``, infra/lua/unchanged.lua): a
batch of new orders of an account this worker wrote last is decided on the state that
write left and written in one round trip, without the batch's first read; a guard in the
write stands in for every read skipped, and when it finds the state moved, a breaker not
closed or a client id known, nothing is written and the batch goes the usual way with the
outcome it would have had. Real redis-server, real worker, the paper exchange."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.background.projector import Projector
from executor.brokers.paper import PaperAccount
from executor.config import Settings
from executor.pipeline.job import Job
from executor.safety.risk.book import Reservation, day_id
from executor.safety.risk.limits import AccountLimits, RiskSettings
from executor.safety.risk.state import (
    RiskState,
    Snapshot,
    Write,
    decode_reservation,
    open_key,
    version_key,
)
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import (
    Event,
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    ReasonCode,
    Request,
    Result,
    ResultStatus,
    Side,
    WireDecimal,
    encode,
    parse_decimal,
)
from producer.keys import Keys

from .conftest import replace, running

K = Keys()
RESTING = {"price": "45000"}  # a buy limit far below the paper price 50000: it rests


class Watched:
    """What the worker's batches did: the speculative writes' answers, those made that did
    not apply, and the batch first reads made (the usual way)."""

    def __init__(self, worker: Worker) -> None:
        self.speculated: list[bool] = []  # per speculative write: were all its jobs decided
        self.missed = self.first_reads = 0
        self.read_accounts: list[set[str]] = []  # per first read, its orders' accounts
        speculate, prefetch = worker.risk.speculate, worker.prefetch
        missed = worker.risk.state.missed

        def watched_missed(account: str) -> None:
            self.missed += 1
            missed(account)

        async def watched_speculate(jobs: Any) -> list[Job]:
            decided = await speculate(jobs)
            self.speculated.append(len(decided) == len(jobs) > 0)
            return decided

        async def watched_prefetch(jobs: Any) -> None:
            self.first_reads += 1
            self.read_accounts.append({j.spec.account for j in jobs})
            await prefetch(jobs)
        worker.risk.speculate = watched_speculate  # type: ignore[method-assign]
        worker.risk.state.missed = watched_missed  # type: ignore[method-assign]
        worker.prefetch = watched_prefetch  # type: ignore[assignment]


async def place(client: OrderClient, *args: Any, **kw: Any) -> Result:
    sub = await client.place("BTCUSDT", *args, **kw)
    return await client.wait_result(sub.request_id, 10)


def speculative_writes(worker: Worker, account: str = "default") -> dict[str, int]:
    return {outcome: int(worker.metrics.registry.get_sample_value(
        "orderstream_speculative_writes_total",
        {"account": account, "outcome": outcome}) or 0) for outcome in ("applied", "missed")}


async def received(r: aioredis.Redis) -> list[bytes]:
    return [f[b"client_order_id"] for _, f in await r.xrange(K.paper("default", "received"))]


async def test_an_order_after_this_worker_s_write_is_written_without_a_first_read(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings(batch_size=1)) as worker:
        first = await place(client, "buy", "limit", "0.01", client_order_id="a", **RESTING)
        watched = Watched(worker)
        second = await place(client, "buy", "limit", "0.02", client_order_id="b", **RESTING)
        third = await place(client, "buy", "limit", "0.03", client_order_id="c", **RESTING)
        fresh = await RiskState(redis_client, K).snapshot(
            "default", worker.risk._day(), ["a", "b", "c"])
        counted = speculative_writes(worker)
    assert [r.status for r in (first, second, third)] == [ResultStatus.ACCEPTED] * 3
    assert (watched.speculated, watched.missed, watched.first_reads) == ([True, True], 0, 0)
    assert counted == {"applied": 2, "missed": 0}
    # Reserved and counted as the usual way would: three open orders, the quantities.
    assert fresh.open_orders == 3 and fresh.day_orders == 3
    assert {cid: r.quantity for cid, r in fresh.reservations.items()} == {
        "a": Decimal("0.01"), "b": Decimal("0.02"), "c": Decimal("0.03")}
    assert fresh.reservations["b"].request_id == second.request_id
    assert await received(redis_client) == [b"a", b"b", b"c"]


THREE = ("default", "a1", "a2")


async def in_one_batch(r: aioredis.Redis, client: OrderClient,
                       orders: list[tuple[str, str]]) -> list[Result]:
    """Publish these (account, client id) resting buys in one MULTI, so the worker reads
    them in one batch, and wait for their results."""
    pipe = r.pipeline(transaction=True)
    for account, cid in orders:
        pipe.xadd(K.pending, {"data": encode(Request(
            client_order_id=cid, account=account, symbol="BTCUSDT", side=Side.BUY,
            type=OrderType.LIMIT, quantity=parse_decimal("0.01"),
            price=parse_decimal(RESTING["price"])))})
    ids = await pipe.execute()
    return [await client.wait_result(rid.decode(), 10) for rid in ids]


async def test_a_batch_of_several_accounts_is_written_in_one_round_trip(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    settings = replace(make_settings(batch_size=50),
                       accounts={account: PaperAccount() for account in THREE})
    async with running(settings) as worker:
        # A first write of each account, so that this worker knows them: the usual way,
        # whose checks write the three accounts side by side too, in one round trip.
        first = await in_one_batch(redis_client, client, [(a, f"{a}-1") for a in THREE])
        assert worker.store.coalescer.round_trips == 1
        watched = Watched(worker)
        trips = worker.store.coalescer.round_trips
        second = await in_one_batch(redis_client, client,
                                    [(a, f"{a}-{n}") for n in (2, 3) for a in THREE])
        trips = worker.store.coalescer.round_trips - trips
        counted = {a: speculative_writes(worker, a) for a in THREE}
        fresh = {a: await RiskState(redis_client, K).snapshot(a, worker.risk._day(), [])
                 for a in THREE}
    assert {r.status for r in first + second} == {ResultStatus.ACCEPTED}
    # The three accounts' writes in one round trip, no first read.
    assert (watched.speculated, watched.first_reads, trips) == ([True], 0, 1)
    assert counted == {account: {"applied": 1, "missed": 0} for account in THREE}
    for account in THREE:
        assert fresh[account].open_orders == 3
        assert [f[b"client_order_id"] for _, f in await redis_client.xrange(
            K.paper(account, "received"))] == [f"{account}-{n}".encode() for n in (1, 2, 3)]


async def test_an_account_whose_write_misses_goes_the_usual_way_alone(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    settings = replace(make_settings(batch_size=50),
                       accounts={account: PaperAccount() for account in THREE},
                       risk=RiskSettings(defaults=AccountLimits(max_daily_loss=Decimal("500"))))
    async with running(settings) as worker:
        await in_one_batch(redis_client, client, [(a, f"{a}-1") for a in THREE])
        watched = Watched(worker)
        # Another process moved a1's state: a loss beyond its limit.
        day = worker.risk._day()
        await redis_client.hset(K.risk("a1", f"day:{day}"), "pnl", "-1000")
        await redis_client.incr(version_key(K, "a1"))
        second = await in_one_batch(redis_client, client, [(a, f"{a}-2") for a in THREE])
        counted = {a: speculative_writes(worker, a) for a in THREE}
    assert [(r.status, r.reason_code) for r in second] == [
        (ResultStatus.ACCEPTED, None), (ResultStatus.DENIED, "risk_denied:daily_loss"),
        (ResultStatus.ACCEPTED, None)]
    # default and a2 decided by the speculative write; a1's orders alone read first.
    assert (watched.speculated, watched.missed, watched.read_accounts) == (
        [False], 1, [{"a1"}])
    assert counted == {"default": {"applied": 1, "missed": 0},
                       "a1": {"applied": 0, "missed": 1},
                       "a2": {"applied": 1, "missed": 0}}
    assert not await redis_client.exists(K.order("a1-2"))


def _loss(day: str) -> Callable[[aioredis.Redis], Any]:
    async def move(r: aioredis.Redis) -> None:
        # As the projector writes a fill's PnL: the account's version moves, not the
        # checks' version, which the reservations' compare-and-set alone would compare.
        await r.hset(K.risk("default", f"day:{day}"), "pnl", "-1000")
        await r.incr(version_key(K, "default"))
    return move


async def _open_breaker(r: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await r.hset(K.breaker("default"), mapping={"state": "open", "opened_at": now_ms})


async def _halt(r: aioredis.Redis) -> None:
    await r.hset(K.trading, "default", "halted")


async def _orphan(r: aioredis.Redis) -> None:
    # Another request's reservation under the client id, with no record (it crashed
    # between its checks and its record); written alone, version and all unmoved.
    held = Reservation(request_id="9-9", symbol="BTCUSDT", side=Side.BUY,
                       quantity=WireDecimal("0.01"), price=WireDecimal("45000"), at=1)
    await r.hset(open_key(K, "default"), "b", encode(held))


@pytest.mark.parametrize("case", ["loss", "breaker", "halt", "orphan", "reserved"])
async def test_a_guard_that_fails_writes_nothing_and_the_usual_way_decides(
    case: str, make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    settings = make_settings(batch_size=1)
    settings = replace(settings, risk=RiskSettings(
        defaults=AccountLimits(max_daily_loss=Decimal("500"))))
    async with running(settings) as worker:
        first = await place(client, "buy", "limit", "0.01", client_order_id="a", **RESTING)
        watched = Watched(worker)
        if case == "loss":
            await _loss(worker.risk._day())(redis_client)
        elif case == "breaker":
            await _open_breaker(redis_client)
        elif case == "halt":
            await _halt(redis_client)
        elif case == "orphan":
            await _orphan(redis_client)
        # "reserved": the client id of this worker's own last order, another request's.
        cid = "a" if case == "reserved" else "b"
        second = await place(client, "buy", "limit", "0.01", client_order_id=cid, **RESTING)
        held = await redis_client.hgetall(open_key(K, "default"))
        counted = speculative_writes(worker)
    assert first.status is ResultStatus.ACCEPTED
    assert counted == {"applied": 0, "missed": 1}
    # The write was made, its guard (or the reservations' compare-and-set, for the trading
    # state) found the state moved, and the batch went the usual way.
    assert (watched.speculated, watched.missed, watched.first_reads) == ([False], 1, 1)
    expected = {"loss": ("risk_denied:daily_loss", ResultStatus.DENIED),
                "breaker": (ReasonCode.CIRCUIT_OPEN, ResultStatus.FAILED),
                "halt": ("halted", ResultStatus.DENIED),
                "orphan": (ReasonCode.DUPLICATE, ResultStatus.FAILED),
                "reserved": (ReasonCode.DUPLICATE, ResultStatus.FAILED)}[case]
    assert (second.reason_code, second.status) == expected
    # Nothing of the second request was written: no reservation of it, no order.
    assert {decode_reservation(v).request_id for v in held.values()} == (
        {first.request_id, "9-9"} if case == "orphan" else {first.request_id})
    assert await received(redis_client) == [b"a"]
    if case != "reserved":
        assert not await redis_client.exists(K.order("b"))


async def test_the_client_id_of_an_order_that_ended_is_found_by_the_guard(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """An order that filled holds no reservation any more, but its record is there: a
    request under its client id is answered ``duplicate``, with nothing written."""
    async with running(make_settings(batch_size=1)) as worker:
        filled = await place(client, "buy", "market", "0.01", client_order_id="x")
        deadline = time.monotonic() + 10
        while await redis_client.hexists(open_key(K, "default"), "x"):
            assert time.monotonic() < deadline, "the projector never released the fill"
            await asyncio.sleep(0.01)
            await worker.projector.once()
        resting = await place(client, "buy", "limit", "0.01", **RESTING)
        watched = Watched(worker)
        again = await place(client, "buy", "market", "0.01", client_order_id="x")
        held = await redis_client.hgetall(open_key(K, "default"))
    assert (filled.status, resting.status) == (ResultStatus.FILLED, ResultStatus.ACCEPTED)
    assert (again.status, again.reason_code) == (ResultStatus.FAILED, ReasonCode.DUPLICATE)
    assert (watched.speculated, watched.missed, watched.first_reads) == ([False], 1, 1)
    assert [decode_reservation(v).request_id for v in held.values()] == [resting.request_id]
    assert await received(redis_client) == [b"x", resting.client_order_id.encode()]


async def test_a_page_of_this_worker_s_projector_is_carried_over_not_read(
    make_settings: Callable[..., Settings], client: OrderClient, redis_client: aioredis.Redis,
) -> None:
    """A fill folded into the positions moves the account's state (and version): the
    worker knows what the page wrote, so the next batch is still written without a read;
    while the page is being written, no batch speculates (it could miss the page)."""
    async with running(make_settings(batch_size=1)) as worker:
        day = worker.risk._day()
        state = worker.risk.state
        write = worker.projector._write
        during: list[bool] = []  # per page written: could a batch speculate meanwhile?

        async def watched_write(**call: Any) -> Any:
            during.append(state.speculative("default", day) is not None)
            return await write(**call)
        worker.projector._write = watched_write
        filled = await place(client, "buy", "market", "0.01")
        deadline = time.monotonic() + 10
        while not await redis_client.hexists(K.positions, "default:BTCUSDT"):
            assert time.monotonic() < deadline, "the projector never folded the fill"
            await asyncio.sleep(0.01)
        watched = Watched(worker)
        after = await place(client, "buy", "limit", "0.01", **RESTING)
        fresh = await RiskState(redis_client, K).snapshot("default", day)
    assert (filled.status, after.status) == (ResultStatus.FILLED, ResultStatus.ACCEPTED)
    assert (watched.speculated, watched.missed, watched.first_reads) == ([True], 0, 0)
    assert during and not any(during)
    assert [p.quantity for p in fresh.positions] == [Decimal("0.01")]


def _normal(snap: Snapshot) -> Snapshot:
    """A snapshot as compared: its positions in one order, this process's counts aside."""
    return dataclasses.replace(
        snap, positions=sorted(snap.positions, key=lambda p: (p.account, p.symbol)),
        reservations={}, raw={}, moves=0)


async def test_a_state_carried_over_the_fold_s_pages_is_the_read_after_them(
        redis_client: aioredis.Redis) -> None:
    """Whatever a page of the positions fold writes (fills that shrink a reservation or end
    it, cancels, buys and sells of several symbols and of another account, realized PnL of
    the day), the state this process carries over it is the one a read after it takes,
    field by field; and where another process wrote between, it is not at the version
    stored, so no guard would pass it."""
    r = redis_client
    rng = random.Random(17)
    at = 1_700_006_400_000
    day = day_id(at, 0)
    state, other = RiskState(r, K), RiskState(r, K)
    projector = Projector(r, K, "p", quote_asset=lambda a, s: "USDT", watcher=state)
    open_orders: dict[tuple[str, str], tuple[Reservation, Decimal, int]] = {}
    carried = 0
    for n in range(60):
        # The checks of this process reserve for new orders, and their events appear.
        for account in ("default", "other"):
            new = {f"{account[0]}{n}-{i}": Reservation(
                request_id=f"{n}-{i}", symbol=rng.choice(["BTCUSDT", "ETHUSDT"]),
                side=rng.choice([Side.BUY, Side.SELL]),
                quantity=WireDecimal(f"0.{rng.randint(1, 9)}"),
                price=WireDecimal(f"{rng.randint(100, 999)}.{rng.randint(0, 9)}"), at=1)
                for i in range(rng.randint(0, 2))}
            snap = await state.snapshot(account, day)
            assert await state.commit(account, day, snap, Write(
                put=[(cid, res, True) for cid, res in new.items()]))
            for cid, res in new.items():
                open_orders[(account, cid)] = (res, res.quantity, 1)
                await r.xadd(K.events, {"data": encode(Event(
                    client_order_id=cid, seq=1, state=OrderState.CREATED, at=at,
                    account=account, symbol=res.symbol, order=OrderSpec(
                        account=account, symbol=res.symbol, side=res.side,
                        type=OrderType.LIMIT, quantity=res.quantity, price=res.price)))})
        # Some fill in part or whole, some are cancelled.
        for (account, cid), (res, left, seq) in list(open_orders.items()):
            roll = rng.random()
            if roll < 0.3:
                quantity = left if rng.random() < 0.5 else left / 2
                left -= quantity
                done = left == 0
                await r.xadd(K.events, {"data": encode(Event(
                    client_order_id=cid, seq=seq + 1, at=at, account=account,
                    symbol=res.symbol,
                    state=OrderState.FILLED if done else OrderState.PARTIALLY_FILLED,
                    fill=Fill(fill_id=f"f{n}{cid}", price=WireDecimal(
                        f"{rng.randint(100, 999)}"), quantity=WireDecimal(quantity),
                        commission=WireDecimal("0.1"), commission_asset="USDT", at=at)))})
            elif roll < 0.4:
                done = True
                await r.xadd(K.events, {"data": encode(Event(
                    client_order_id=cid, seq=seq + 1, at=at, account=account,
                    symbol=res.symbol, state=OrderState.CANCELLED))})
            else:
                continue
            if done:
                del open_orders[(account, cid)]
            else:
                open_orders[(account, cid)] = (res, left, seq + 1)
        if rng.random() < 0.15:
            # Another process writes the account between: nothing is carried over that.
            snap = await other.snapshot("default", day)
            assert await other.commit("default", day, snap, Write())
            interfered = True
        else:
            interfered = False
        await projector.once()
        for account in ("default", "other"):
            known = state.speculative(account, day)
            fresh = await other.snapshot(account, day)
            # What the guard relies on: a state known at the version stored is the state
            # stored. Over another process's write, it is not at that version.
            if known is not None and known.full == fresh.full:
                carried += 1
                assert _normal(known) == _normal(fresh), (n, account)
            else:
                assert account == "default" and interfered, (n, account)
    assert carried > 100  # every round but those another process wrote in
async def test_speculative_writes_that_miss_in_a_row_wait_longer_each_time(
        redis_client: aioredis.Redis) -> None:
    state = RiskState(redis_client, K)
    day = "20261203"
    assert state.speculative("default", day) is None  # no write of this process yet
    snap = await state.snapshot("default", day)
    assert await state.commit("default", day, snap, Write())
    assert state.speculative("default", "20261204") is None  # another day
    assert state.speculative("default", day) is not None

    def tries(batches: int) -> list[bool]:
        return [state.speculative("default", day) is not None for _ in range(batches)]
    state.missed("default")
    assert tries(3) == [False, False, True]
    state.missed("default")
    assert tries(5) == [False] * 4 + [True]
    for _ in range(10):
        state.missed("default")
    assert tries(65) == [False] * 64 + [True]
    state.applied("default")
    assert tries(2) == [True, True]
    # A page of this process's fold being written, then over but not written: no
    # speculation meanwhile, nor after, until a write decided on a read made after it.
    state.moving(["default"])
    assert tries(1) == [False]
    state.paged({"default": None})
    assert tries(1) == [False]
    assert await state.commit("default", day, await state.snapshot("default", day), Write())
    assert tries(1) == [True]
    # A page told of after the read a write was decided on may have landed after the
    # write: that write does not make the account one to speculate on again.
    snap = await state.snapshot("default", day)
    state.moving(["default", "other"])
    state.paged({"default": None, "other": None})
    assert await state.commit("default", day, snap, Write())
    assert tries(1) == [False]
    assert await state.commit("default", day, await state.snapshot("default", day), Write())
    assert tries(1) == [True]
