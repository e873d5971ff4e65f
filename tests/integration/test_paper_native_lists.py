"""Native contingent lists at the paper exchange (``native_lists``) against a real
redis-server: the entry's exit stored in the very script call that stores its full fill
(at submission, or in a match pass), never for an entry that ends otherwise, never twice;
the workers' exit taken as it, replaced, refused or placed (native_lists.adoption), never
preempted by the duplicate-client-id refusal."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from executor.brokers.base import BrokerStatus, PermanentError
from executor.brokers.paper import PaperAccount, PaperBroker
from executor.brokers.paper.records import PaperOrder, decode_order, encode_order
from executor.brokers.paper.store import Change
from executor.config import Settings, load_settings
from executor.model.lists import exit_request
from executor.model.order import spec_from_request
from executor.model.positions import decode_position, position_key
from producer.client import OrderClient
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    ResultStatus,
    wire,
)
from producer.keys import Keys
from tests.unit.test_paper_lists import entry

from .conftest import running, until
from .native_heir import killed_before_adoption
from .test_lists import order_in
from .test_paper_exchange import Clock, MakeBroker, make_broker

D = Decimal
T = OrderType
K = Keys()
__all__ = ["make_broker"]  # a fixture


@pytest.fixture
def paper(make_broker: MakeBroker) -> MakeBroker:
    """An exchange with native lists (or ``config``), its matcher driven by the test."""
    async def make(config: PaperAccount | None = None) -> PaperBroker:
        return await make_broker(config or PaperAccount(native_lists=True), clock=Clock())
    return make


def exit_of(cid: str, spec: OrderSpec, quantity: str, n: int = 1) -> OrderSpec:
    """The exit the workers publish (background/lists.py)."""
    return spec_from_request(exit_request(cid, spec, D(quantity), n), "default")


async def price(broker: PaperBroker, value: str) -> None:
    await broker.set_price("BTCUSDT", D(value))
    await broker.match_once()


async def stored(broker: PaperBroker, cid: str) -> PaperOrder | None:
    return await broker.store.get(cid)


async def received(broker: PaperBroker, cid: str) -> int:
    entries: Any = await broker.store.redis.xrange(broker.store.received)
    return sum(1 for _, f in entries if f[b"client_order_id"] == cid.encode())


async def duplicates(broker: PaperBroker) -> int:
    return int(await broker.store.redis.xlen(broker.store.duplicates))


# -- placed with the full fill ---------------------------------------------------------------

async def test_a_market_entry_is_stored_with_its_exit_in_one_call(
        paper: MakeBroker) -> None:
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    calls: list[int] = []
    insert = b.store.insert

    async def counted(items: Any, guards: Any = None) -> list[int]:
        calls.append(len(items))
        return await insert(items, guards)
    b.store.insert = counted  # type: ignore[method-assign]
    spec = entry()
    done = await b.submit("E1", spec)
    assert done.status is BrokerStatus.FILLED and done.native_exits
    assert calls == [1]  # one item, one script call: the entry and its exit
    exit_ = await stored(b, "E1-x1")
    assert exit_ is not None and exit_.exit_of == "E1" and exit_.status is BrokerStatus.NEW
    assert exit_.spec == exit_of("E1", spec, "0.5")
    assert exit_.spec.type is T.OCO and exit_.spec.quantity == D("0.5")
    assert [o.client_order_id for o in await b.open_orders()] == ["E1-x1"]
    assert await received(b, "E1-x1") == 1


async def test_a_replayed_or_duplicate_entry_never_places_a_second_exit(
        paper: MakeBroker) -> None:
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    spec = entry(tp="50500", sl=None)
    _, item, _ = b._prepare("E1", spec)
    assert item.placed is not None
    assert await b.store.insert([item]) == [1]
    assert await b.store.insert([item]) == [1]  # the same call replayed
    other = msgspec.structs.replace(spec, quantity=wire(D("0.4")))
    _, again, _ = b._prepare("E1", other)
    assert await b.store.insert([again]) == [0]  # a real duplicate
    assert await received(b, "E1") == await received(b, "E1-x1") == 1
    found = await stored(b, "E1-x1")
    assert found is not None and found.spec.quantity == D("0.5")


async def test_a_resting_entry_places_its_exit_in_the_pass_that_fills_it(
        paper: MakeBroker) -> None:
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    accepted = await b.submit("E2", entry(T.LIMIT, "0.2", "49900", tp=None, sl="49000"))
    assert accepted.status is BrokerStatus.NEW and accepted.native_exits
    assert await stored(b, "E2-x1") is None
    await price(b, "49900")
    filled = await stored(b, "E2")
    exit_ = await stored(b, "E2-x1")
    assert filled is not None and filled.status is BrokerStatus.FILLED
    assert exit_ is not None and exit_.spec.type is T.STOP and exit_.status is BrokerStatus.NEW
    await price(b, "48990")  # the exit rests and fires as any paper stop
    exit_ = await stored(b, "E2-x1")
    assert exit_ is not None and exit_.status is BrokerStatus.FILLED
    assert exit_.filled_quantity == D("0.2")


async def test_a_fill_whose_change_is_refused_places_no_exit_and_a_retry_places_one(
        paper: MakeBroker) -> None:
    """Two matchers computed the same fill: one change applies with its exit, the other
    (its version gone) applies nothing: one exit."""
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    await b.submit("E3", entry(T.LIMIT, "0.5", "49900"))
    await b.set_price("BTCUSDT", D("49900"))
    changes: list[list[Change]] = []
    update = b.store.update

    async def seen(batch: Any, now: int) -> list[bool]:
        changes.append(list(batch))
        return await update(batch, now)
    b.store.update = seen  # type: ignore[method-assign]
    await b.match_once()
    (change,) = changes[0]
    assert change.client_order_id == "E3" and change.placed is not None
    assert change.placed.client_order_id == "E3-x1"
    assert await update([change], 0) == [False]  # the second matcher's, too late
    assert await received(b, "E3-x1") == 1


@pytest.mark.parametrize("fill", ["0", "0.3"])
async def test_an_entry_cancelled_before_its_full_fill_places_nothing(
        paper: MakeBroker, fill: str) -> None:
    b = await paper(PaperAccount(native_lists=True, symbols={
        "BTCUSDT": msgspec.structs.replace(PaperAccount().symbols["BTCUSDT"],
                                           depth_quantity=D("0.3"))}))
    await b.set_price("BTCUSDT", D("50000"))
    await b.submit("E4", entry(T.LIMIT, "0.5", "49900"))
    if fill != "0":
        await price(b, "49900")
        await b.set_price("BTCUSDT", D("50000"))
    part = await stored(b, "E4")
    assert part is not None and part.filled_quantity == D(fill)
    cancelled = await b.cancel("E4", "BTCUSDT")
    assert cancelled.status is BrokerStatus.CANCELLED
    await price(b, "49900")
    assert await stored(b, "E4-x1") is None
    assert await b.end_native_exits("E4", "BTCUSDT", True)
    # The workers' exit for the part filled is placed as at any broker.
    if fill != "0":
        placed = await b.submit("E4-x1", exit_of("E4", entry(), fill))
        assert placed.status is BrokerStatus.NEW and placed.quantity == D(fill)


async def test_what_does_not_qualify_goes_the_workers_way(paper: MakeBroker) -> None:
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    partial = await b.submit("P1", entry(trigger=OtoTrigger.PARTIAL))
    reducing = await b.submit("P2", entry(reduce_only=True))
    assert not partial.native_exits and not reducing.native_exits
    assert await stored(b, "P1-x1") is None and await stored(b, "P2-x1") is None
    off = await paper(PaperAccount())
    assert not (await off.submit("P3", entry())).native_exits
    assert await stored(off, "P3-x1") is None


# -- the workers' exit arriving --------------------------------------------------------------

async def filled_natively(b: PaperBroker, cid: str, quantity: str = "0.5",
                          **levels: Any) -> OrderSpec:
    await b.set_price("BTCUSDT", D("50000"))
    spec = entry(quantity=quantity, **levels)
    assert (await b.submit(cid, spec)).native_exits
    return spec


async def test_the_workers_exit_is_the_exchanges_never_a_second_order(
        paper: MakeBroker) -> None:
    b = await paper()
    spec = await filled_natively(b, "A1")
    adopted = await b.submit("A1-x1", exit_of("A1", spec, "0.5"))
    assert adopted.client_order_id == "A1-x1" and adopted.status is BrokerStatus.NEW
    assert adopted.broker_order_id == b.broker_order_id("A1-x1")
    assert await received(b, "A1-x1") == 1 and await duplicates(b) == 0
    # Through the send token's door too: the token taken, nothing stored.
    await b.store.redis.hset(K.order("A1-x1"), "state", "pending_submit")
    (again,) = await b.submit_many_guarded([("A1-x1", exit_of("A1", spec, "0.5"))],
                                           {"A1-x1": "t1"})
    assert isinstance(again, type(adopted)) and again.client_order_id == "A1-x1"
    assert await b.store.redis.hget(K.order("A1-x1"), "sender") == b"t1"
    (refused,) = await b.submit_many_guarded([("A1-x1", exit_of("A1", spec, "0.5"))],
                                             {"A1-x1": "t2"})
    assert refused == 0  # another delivery holds the token
    assert await received(b, "A1-x1") == 1 and await duplicates(b) == 0


async def test_a_capped_exit_replaces_the_native_one_under_its_id(
        paper: MakeBroker) -> None:
    b = await paper()
    spec = await filled_natively(b, "R1")
    before = await stored(b, "R1-x1")
    assert before is not None
    placed = await b.submit("R1-x1", exit_of("R1", spec, "0.3"))
    assert placed.status is BrokerStatus.NEW and placed.quantity == D("0.3")
    now = await stored(b, "R1-x1")
    assert now is not None and now.exit_of is None and now.version > before.version
    assert [(o.client_order_id, o.quantity) for o in await b.open_orders()] == [
        ("R1-x1", D("0.3"))]
    assert await received(b, "R1-x1") == 2 and await duplicates(b) == 0
    await price(b, "50500")  # ours fills, for what it holds
    done = await stored(b, "R1-x1")
    assert done is not None and done.filled_quantity == D("0.3")


async def test_a_later_exit_cancels_the_native_one_first(paper: MakeBroker) -> None:
    b = await paper()
    spec = await filled_natively(b, "R2")
    placed = await b.submit("R2-x2", exit_of("R2", spec, "0.5", 2))
    assert placed.status is BrokerStatus.NEW
    native = await stored(b, "R2-x1")
    assert native is not None and native.status is BrokerStatus.CANCELLED
    assert [o.client_order_id for o in await b.open_orders()] == ["R2-x2"]


async def test_a_native_exit_that_traded_refuses_any_other_exit(
        paper: MakeBroker) -> None:
    b = await paper()
    spec = await filled_natively(b, "F1", quantity="6", sl=None)  # a 6 limit: 5 a pass
    await price(b, "50500")
    traded = await stored(b, "F1-x1")
    assert traded is not None and traded.filled_quantity == D("5") and traded.is_open
    with pytest.raises(PermanentError):
        await b.submit("F1-x2", exit_of("F1", spec, "1", 2))
    # The first exit, capped or not, is taken as it is: never cancelled into a second.
    adopted = await b.submit("F1-x1", exit_of("F1", spec, "1"))
    assert adopted.quantity == D("6") and adopted.filled_quantity == D("5")
    assert await received(b, "F1-x1") == 1
    assert [o.client_order_id for o in await b.open_orders()] == ["F1-x1"]


async def test_an_ended_native_exit_leaves_its_id_to_the_workers_exit(
        paper: MakeBroker) -> None:
    """The stop-loss is already passed at the fill: the exchange rejects the native stop
    as it would the workers'; their exit is then placed under that id, not refused as a
    duplicate."""
    b = await paper()
    spec = await filled_natively(b, "N1", tp=None, sl="50100")
    native = await stored(b, "N1-x1")
    assert native is not None and native.status is BrokerStatus.REJECTED
    await b.set_price("BTCUSDT", D("50200"))
    placed = await b.submit("N1-x1", exit_of("N1", spec, "0.5"))
    assert placed.status is BrokerStatus.NEW and await duplicates(b) == 0


async def test_end_native_exits_cancels_the_open_native_exit(paper: MakeBroker) -> None:
    b = await paper()
    await filled_natively(b, "C1")
    assert await b.end_native_exits("C1", "BTCUSDT", True)
    native = await stored(b, "C1-x1")
    assert native is not None and native.status is BrokerStatus.CANCELLED
    assert await b.open_orders() == []
    assert await b.end_native_exits("C1", "BTCUSDT", True)  # nothing left: at once
    assert await b.adopt_native_exit("C1-x9", exit_of("C1", entry(), "0.5", 9)) is None


# -- through workers -------------------------------------------------------------------------

ACCOUNTS = ("native", "emulated")


def config_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def two_accounts(tmp_path: Path) -> Path:
    """The same paper exchange twice: lists held by the exchange, or by the workers."""
    return config_file(tmp_path, "two.toml",
                       '[accounts.native]\nbroker = "paper"\nnative_lists = true\n'
                       '[accounts.emulated]\nbroker = "paper"\n')


def worker(config: Path, redis_url: str, interval_ms: int = 100) -> Settings:
    return load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
        "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": str(interval_ms),
        "ORDERSTREAM_EMULATOR_LEASE_MS": str(max(1000, 3 * interval_ms))})


async def move(r: aioredis.Redis, value: str, accounts: tuple[str, ...] = ACCOUNTS) -> None:
    for account in accounts:
        await r.hset(K.paper(account, "prices"), "BTCUSDT", value)  # the operator override
    await asyncio.sleep(0.6)  # a few match passes (200 ms) and watcher passes (100 ms)


async def held(r: aioredis.Redis, account: str) -> Decimal:
    raw = await r.hget(K.positions, position_key(account, "BTCUSDT"))
    return D(0) if raw is None else decode_position(raw).quantity


async def arrived(r: aioredis.Redis, account: str, cid: str) -> int:
    """How many orders under ``cid`` the paper exchange of ``account`` took."""
    entries: Any = await r.xrange(K.paper(account, "received"))
    return sum(1 for _, f in entries if f[b"client_order_id"] == cid.encode())


# Each: the entry's levels, the price path after its fill, the exit's fill price.
PATHS = [
    pytest.param({"take_profit": "50500", "stop_loss": "49500"}, ["50200", "50500"],
                 "50500", id="bracket-take-profit"),
    pytest.param({"take_profit": "50500", "stop_loss": "49500"}, ["49800", "49500"],
                 "49500", id="bracket-stop-loss"),
    pytest.param({"take_profit": "50500"}, ["49000", "50600"], "50500",
                 id="oto-take-profit"),
    pytest.param({"stop_loss": "49500"}, ["51000", "49400"], "49400", id="oto-stop-loss"),
]


@pytest.mark.parametrize(("levels", "path", "at"), PATHS)
async def test_a_native_list_closes_as_the_emulated_one_does(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        levels: dict[str, str], path: list[str], at: str) -> None:
    """The same entry on the same price path, its list held by the exchange on one account
    and by the workers on the other: the same exit fills, at the same price, for the
    same quantity, and both positions end flat, never over-closed."""
    r = redis_client
    await move(r, "50000")
    ids = {"native": "N1", "emulated": "M1"}
    async with running(worker(two_accounts(tmp_path), redis_url)):
        for account, cid in ids.items():
            sub = await client.place("BTCUSDT", "buy", "market", "0.5", account=account,
                                     client_order_id=cid, **levels)
            result = await client.wait_result(sub, timeout=10)
            assert result.status is ResultStatus.FILLED, result
            assert result.native_exits is (account == "native")
        exits = {a: await order_in(client, f"{cid}-x1", OrderState.ACCEPTED)
                 for a, cid in ids.items()}
        assert exits["native"].spec == msgspec.structs.replace(
            exits["emulated"].spec, account="native",
            metadata={"list_id": "N1", "exit": 1})
        for value in path:
            await move(r, value)
        done = {a: await order_in(client, f"{cid}-x1", OrderState.FILLED)
                for a, cid in ids.items()}
        for account, cid in ids.items():
            await list_over(r, cid, account)
            assert await held(r, account) == 0
            assert await arrived(r, account, f"{cid}-x1") == 1
            assert await client.order(f"{cid}-x2") is None
            # Adopted before the exchange's door: never refused there as a duplicate.
            assert await r.xlen(K.paper(account, "duplicates")) == 0
    native, emulated = done["native"], done["emulated"]
    assert native.filled_quantity == emulated.filled_quantity == D("0.5")
    assert native.average_price == emulated.average_price == D(at)
    assert [(f.price, f.quantity) for f in native.fills] == \
        [(f.price, f.quantity) for f in emulated.fills]


async def list_over(r: aioredis.Redis, cid: str, account: str = "default") -> None:
    async def over() -> bool:
        return not await r.hexists(K.lists(account), cid)
    await until(over, 10)


async def test_a_partial_trigger_entry_goes_the_workers_way(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    await move(redis_client, "50000", ("native",))
    async with running(worker(two_accounts(tmp_path), redis_url)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.5", account="native",
                                 client_order_id="Q1", take_profit="50500",
                                 stop_loss="49500", oto_trigger="partial")
        result = await client.wait_result(sub, timeout=10)
        assert result.status is ResultStatus.FILLED and not result.native_exits
        await order_in(client, "Q1-x1", OrderState.ACCEPTED)
        native = await redis_client.hget(K.paper("native", "orders"), "Q1-x1")
        assert native is not None and b"exit_of" not in native  # the workers' own order
        assert await arrived(redis_client, "native", "Q1-x1") == 1


async def test_a_list_that_ends_without_an_exit_of_ours_cancels_the_native_one(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    """The entry filled natively, then cancelled by its id before any watcher pass (which
    cancels its list): the watcher never publishes an exit, so the exchange's exit is
    cancelled before the list ends, never left there untracked."""
    config = two_accounts(tmp_path)
    await move(redis_client, "50000", ("native",))
    async with running(worker(config, redis_url, interval_ms=60_000)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.5", account="native",
                                 client_order_id="C1", take_profit="50500",
                                 stop_loss="49500")
        assert (await client.wait_result(sub, timeout=10)).native_exits
        cancel = await client.cancel("C1", account="native")
        assert (await client.wait_result(cancel, timeout=10)).status is ResultStatus.FAILED
    async with running(worker(config, redis_url)):
        await list_over(redis_client, "C1", "native")
    raw = await redis_client.hget(K.paper("native", "orders"), "C1-x1")
    assert raw is not None and decode_order(raw).status is BrokerStatus.CANCELLED
    assert await client.order("C1-x1") is None


async def test_a_worker_killed_between_the_fill_and_the_adoption_leaves_one_exit(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis) -> None:
    text = '[accounts.default]\nbroker = "paper"\nnative_lists = true\n'
    await redis_client.hset(K.paper("default", "prices"), "BTCUSDT", "50000")

    async def fill(client: OrderClient) -> None:
        sub = await client.place("BTCUSDT", "buy", "market", "0.5", client_order_id="K1",
                                 take_profit="50500", stop_loss="49500")
        result = await client.wait_result(sub, timeout=20)
        assert result.status is ResultStatus.FILLED and result.native_exits, result

    heir = worker(config_file(tmp_path, "heir.toml", text), redis_url)
    exit_ = await killed_before_adoption(redis_url, redis_client, tmp_path, text, fill, heir)
    assert exit_.spec.quantity == D("0.5") and exit_.spec.type is T.OCO
    assert not exit_.emulated
    assert await arrived(redis_client, "default", "K1") == 1
    assert await arrived(redis_client, "default", "K1-x1") == 1  # the exchange's, adopted
    assert await redis_client.xlen(K.paper("default", "duplicates")) == 0


async def test_an_exit_the_exchange_cannot_make_never_holds_up_the_fill(
        paper: MakeBroker) -> None:
    """A stored entry whose exit is unreadable as an order (no quantity): its fill is
    stored without one, and the workers' exit is then placed as at any broker."""
    b = await paper()
    await b.set_price("BTCUSDT", D("50000"))
    spec = entry(T.LIMIT, "0.5", "49900")
    await b.submit("B1", spec)
    found = await stored(b, "B1")
    assert found is not None and found.exit is not None
    broken = msgspec.structs.replace(found, exit=msgspec.structs.replace(found.exit,
                                                                         quantity=None))
    await b.store.redis.hset(b.store.orders, "B1", encode_order(broken))
    await price(b, "49900")
    filled = await stored(b, "B1")
    assert filled is not None and filled.status is BrokerStatus.FILLED
    assert await stored(b, "B1-x1") is None
    placed = await b.submit("B1-x1", exit_of("B1", spec, "0.5"))
    assert placed.status is BrokerStatus.NEW
