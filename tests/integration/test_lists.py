"""Contingent lists (an entry with take_profit / stop_loss) through real workers on the
paper exchange: the exits are placed once, for what the entry filled, as a reduce_only
oco (bracket) or a single limit / stop (OTO); they close the position at a level and
never more than it; cancelling the entry cancels the list, before or after its fill; a
worker SIGKILLed while the entry fills leaves the list to the next one."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from devtools.binance_exchange import BinanceExchangeServer
from devtools.chaos import WorkerProcess
from executor.background.lists import SCRIPT
from executor.config import Settings, load_settings
from executor.model.exits import closable
from executor.model.lists import exit_id
from executor.model.positions import decode_position, position_key
from producer.client import OrderClient
from producer.contract import (
    OrderState,
    OrderStatus,
    OrderType,
    ReasonCode,
    ResultStatus,
    Side,
    decode_result,
)
from producer.keys import Keys
from tests.fakes.alpaca import alpaca
from tests.fakes.binance import exchange

from .conftest import running, settings_for, until
from .test_alpaca_conditional import alpaca_settings
from .test_binance_worker import binance_settings

__all__ = ["alpaca", "exchange"]  # fixtures

K = Keys()
D = Decimal


def fast(redis_url: str, consumer: str = "w1") -> Settings:
    return settings_for(redis_url, consumer, emulator_interval_ms=100,
                        emulator_lease_ms=1000)


async def set_price(r: aioredis.Redis, price: str) -> None:
    await r.hset(K.paper("default", "prices"), "BTCUSDT", price)
    await asyncio.sleep(0.3)  # the exchange reads it every match pass (200 ms)


async def position(r: aioredis.Redis) -> Decimal:
    raw = await r.hget(K.positions, position_key("default", "BTCUSDT"))
    return D(0) if raw is None else decode_position(raw).quantity


async def order_in(client: OrderClient, cid: str, *states: OrderState,
                   timeout: float = 10) -> OrderStatus:
    async def there() -> bool:
        status = await client.order(cid)
        return status is not None and status.state in states
    await until(there, timeout)
    status = await client.order(cid)
    assert status is not None
    return status


async def flat(r: aioredis.Redis) -> None:
    async def there() -> bool:
        return await position(r) == 0
    await until(there, 10)


async def list_over(r: aioredis.Redis, cid: str) -> None:
    async def over() -> bool:
        return not await r.hexists(K.lists("default"), cid)
    await until(over, 10)


async def test_a_bracket_places_one_oco_exit_for_the_fill_and_closes_at_the_take_profit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)) as worker:
        sub = await client.place("BTCUSDT", "buy", "market", "0.5", client_order_id="E1",
                                 take_profit="50500", stop_loss="49500",
                                 strategy_id="s1")
        result = await client.wait_result(sub)
        assert result.status is ResultStatus.FILLED
        exit_ = await order_in(client, "E1-x1", OrderState.ACCEPTED)
        assert exit_.spec.type is OrderType.OCO and exit_.spec.side is Side.SELL
        assert exit_.spec.reduce_only and exit_.spec.quantity == D("0.5")
        assert (exit_.spec.price, exit_.spec.stop_price) == (D("50500"), D("49500"))
        assert exit_.spec.strategy_id == "s1"
        assert exit_.spec.metadata == {"list_id": "E1", "exit": 1}
        await asyncio.sleep(0.5)  # later passes place nothing more
        assert await client.order("E1-x2") is None
        assert worker.metrics.registry.get_sample_value(
            "orderstream_list_exits_total", {"account": "default"}) == 1
        assert worker.metrics.registry.get_sample_value(
            "orderstream_contingent_lists", {"account": "default"}) == 1
        await set_price(r, "50500")
        filled = await order_in(client, "E1-x1", OrderState.FILLED)
        assert filled.filled_quantity == D("0.5") and filled.average_price == D("50500")
        await flat(r)
        await list_over(r, "E1")
    assert not await r.hexists(K.lists_cancel, "E1")


async def test_a_stop_loss_only_entry_gets_a_stop_exit_after_a_limit_entry_fills(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49900",
                                 client_order_id="E2", stop_loss="49000")
        assert (await client.wait_result(sub)).status is ResultStatus.ACCEPTED
        await asyncio.sleep(0.5)
        assert await client.order("E2-x1") is None  # nothing filled: no exit
        await set_price(r, "49900")
        await order_in(client, "E2", OrderState.FILLED)
        exit_ = await order_in(client, "E2-x1", OrderState.ACCEPTED)
        assert exit_.spec.type is OrderType.STOP and exit_.spec.stop_price == D("49000")
        assert exit_.spec.quantity == D("0.2") and exit_.spec.reduce_only
        await set_price(r, "48990")
        await order_in(client, "E2-x1", OrderState.FILLED)
        await list_over(r, "E2")
        await flat(r)


async def test_cancelling_an_unfilled_entry_ends_its_list_without_an_exit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49000",
                                 client_order_id="E3", take_profit="51000",
                                 stop_loss="48000")
        await client.wait_result(sub)
        cancel = await client.wait_result(await client.cancel("E3"))
        assert cancel.status is ResultStatus.CANCELLED
        await list_over(r, "E3")
        await asyncio.sleep(0.3)
        assert await client.order("E3-x1") is None


async def test_cancelling_a_filled_entry_cancels_its_open_exit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.1", client_order_id="E4",
                                 take_profit="51000", stop_loss="49000")
        await client.wait_result(sub)
        await order_in(client, "E4-x1", OrderState.ACCEPTED)
        answer = await client.wait_result(await client.cancel("E4"))
        assert answer.reason_code == ReasonCode.NOT_CANCELLABLE
        assert "its contingent list is cancelled" in (answer.reason or "")
        await order_in(client, "E4-x1", OrderState.CANCELLED)
        await list_over(r, "E4")
    assert "list of E4 cancelled: exits E4-x1 cancelled" in caplog.text
    assert await position(r) == D("0.1")  # the position stays, now without exits


async def test_a_refused_exit_is_placed_again_once_it_can_be(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Trading halted when the entry fills: its exit is refused (no order is made); once
    trading resumes, the exit goes again, RETRY_MS later, under a new id: the position is
    never left without one."""
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49900",
                                 client_order_id="R1", take_profit="51000",
                                 stop_loss="49000")
        await client.wait_result(sub)
        await r.hset(K.trading, "default", "halted")
        await set_price(r, "49900")
        await order_in(client, "R1", OrderState.FILLED)

        async def refused() -> bool:
            return any(b'"client_order_id":"R1-x1"' in f[b"data"] and b"halted" in f[b"data"]
                       for _, f in await r.xrange(K.failed))
        await until(refused, 10)
        assert await client.order("R1-x1") is None
        await r.hdel(K.trading, "default")
        exit_ = await order_in(client, "R1-x2", OrderState.ACCEPTED, timeout=15)
        assert exit_.spec.quantity == D("0.2") and exit_.spec.type is OrderType.OCO
        await asyncio.sleep(0.5)
        assert await client.order("R1-x3") is None


async def test_an_amended_entry_keeps_its_levels_and_its_fill_gets_the_exit(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Amend is a cancel-replace: the new order is the list's entry now (same levels),
    the old one, cancelled unfilled, ends its list without an exit; a new price beyond a
    level is refused, naming it, and changes nothing."""
    r = redis_client
    await set_price(r, "50000")
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49000",
                                 client_order_id="A1", take_profit="51000",
                                 stop_loss="48000")
        await client.wait_result(sub)
        bad = await client.wait_result(await client.amend("A1", price="47900"))
        assert bad.reason_code == ReasonCode.INVALID and "stop_loss" in (bad.reason or "")
        amended = await client.wait_result(await client.amend("A1", price="49900"))
        assert amended.status is ResultStatus.ACCEPTED and amended.cancelled == ["A1"]
        new = amended.client_order_id
        assert new is not None and await r.hexists(K.lists("default"), new)
        await list_over(r, "A1")
        await set_price(r, "49900")
        exit_ = await order_in(client, exit_id(new, 1), OrderState.ACCEPTED)
        assert exit_.spec.quantity == D("0.2") and exit_.spec.price == D("51000")
    assert await client.order("A1-x1") is None


@pytest.mark.timeout(120)
async def test_the_list_of_an_entry_filled_while_its_worker_dies_goes_on_elsewhere(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        client: OrderClient) -> None:
    """The worker holding the account's lease is SIGKILLed with the entry working; the
    list is in Redis, so the next worker takes the lease over and, when the entry fills,
    places its exit, once."""
    r = redis_client
    await set_price(r, "50000")
    first = WorkerProcess(redis_url, "first", tmp_path / "first.log",
                          ORDERSTREAM_EMULATOR_INTERVAL_MS="100",
                          ORDERSTREAM_EMULATOR_LEASE_MS="1000")
    try:
        await until(lambda: r.exists(K.worker("first")), 30)
        sub = await client.place("BTCUSDT", "buy", "limit", "0.3", price="49900",
                                 client_order_id="E5", take_profit="51000",
                                 stop_loss="49000")
        assert (await client.wait_result(sub, timeout=20)).status is ResultStatus.ACCEPTED

        async def leased() -> bool:
            return await r.get(K.emulator_lease("default")) == b"first:emulator"
        await until(leased, 10)
        first.kill()
        async with running(settings_for(redis_url, "heir", emulator_interval_ms=100,
                                        emulator_lease_ms=1000, track_interval_ms=200)):
            await set_price(r, "49900")  # fills as the leases move over
            # The fill reaches the record once the dead worker's orders are the heir's
            # (its heartbeat expired) at the heir's next reconcile of them.
            await order_in(client, "E5", OrderState.FILLED, timeout=40)
            exit_ = await order_in(client, "E5-x1", OrderState.ACCEPTED, timeout=20)
            assert exit_.spec.quantity == D("0.3")
            await asyncio.sleep(0.5)
            assert await client.order("E5-x2") is None
            assert await r.get(K.emulator_lease("default")) == b"heir:emulator"
    finally:
        first.kill()


def shallow(tmp_path: Path, redis_url: str, min_quantity: str = "0.00001") -> Settings:
    """The paper account with 0.1 BTC per book level: a resting 0.3 fills in three passes."""
    config = tmp_path / "orderstream.toml"
    config.write_text(
        '[accounts.default]\nbroker = "paper"\n'
        '[accounts.default.symbols.BTCUSDT]\nprice = "50000"\ntick_size = "0.01"\n'
        f'step_size = "0.00001"\nmin_quantity = "{min_quantity}"\nmax_quantity = "1000"\n'
        'depth_quantity = "0.1"\nbase_asset = "BTC"\nquote_asset = "USDT"\n')
    return load_settings(str(config), {
        "REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
        "ORDERSTREAM_METRICS_PORT": "0", "ORDERSTREAM_METRICS_HOST": "127.0.0.1",
        "ORDERSTREAM_EMULATOR_INTERVAL_MS": "50", "ORDERSTREAM_EMULATOR_LEASE_MS": "1000"})


async def exits_of(client: OrderClient, cid: str) -> list[OrderStatus]:
    """The exits of ``cid`` that became orders (a refused one has no record: its part
    goes again under the next id)."""
    out = []
    for n in range(1, 10):
        status = await client.order(f"{cid}-x{n}")
        if status is not None:
            out.append(status)
    return out


@pytest.mark.parametrize("trigger", ["full", "partial"])
async def test_a_bracket_filled_in_parts_is_covered_exactly_and_never_over_closed(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        trigger: str) -> None:
    """A 0.3 entry fills 0.1 per match pass: ``full`` places one exit of 0.3 once it has
    filled; ``partial`` an exit per part the fold has shown (0.1 each, or more when two
    parts came between passes). Either way the exits add up to exactly the fill, and the
    take-profit, itself filling 0.1 per pass, closes the position without ever going
    short."""
    r = redis_client
    await set_price(r, "50000")
    async with running(shallow(tmp_path, redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.3", price="49900",
                                 client_order_id="P1", take_profit="50500",
                                 stop_loss="49000", oto_trigger=trigger)
        await client.wait_result(sub)
        await set_price(r, "49900")
        await order_in(client, "P1", OrderState.FILLED)

        async def covered() -> bool:
            exits = await exits_of(client, "P1")
            return sum((e.spec.quantity or D(0) for e in exits), D(0)) == D("0.3")
        try:
            await until(covered, 20)  # a refused exit goes again 5 s later
        finally:  # shown if it fails: why exits were refused
            print([decode_result(f[b"data"]).reason for _, f in await r.xrange(K.failed)])
        exits = await exits_of(client, "P1")
        if trigger == "full":
            assert [e.spec.quantity for e in exits] == [D("0.3")]
        else:
            assert len(exits) >= 2  # one per part, but never one for all at the end alone
        assert all(e.spec.type is OrderType.OCO and e.spec.reduce_only for e in exits)
        lowest = D("0.3")
        await r.hset(K.paper("default", "prices"), "BTCUSDT", "50500")
        for _ in range(100):
            lowest = min(lowest, await position(r))
            if lowest == 0:
                break
            await asyncio.sleep(0.05)
        await flat(r)
        await list_over(r, "P1")
        assert lowest >= 0
        ends = await exits_of(client, "P1")
    assert sum((e.filled_quantity for e in ends), D(0)) == D("0.3")
    assert all(e.state is OrderState.FILLED for e in ends)


async def test_an_exit_below_the_brokers_minimum_waits_unplaced_until_the_position_allows(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, client: OrderClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """A short 0.2 turned long 0.1 by a bracket's 0.3 entry: its exit would be 0.1, below
    the symbol's minimum of 0.15, so it is not placed (no request, no failed result every
    RETRY_MS): an error names the rule, and the blocked gauge shows it. Once the position
    has grown to 0.25, the exit goes, for all of it."""
    r = redis_client
    await set_price(r, "50000")
    async with running(shallow(tmp_path, redis_url, min_quantity="0.15")) as worker:
        short = await client.place("BTCUSDT", "sell", "market", "0.2")
        assert (await client.wait_result(short)).status is ResultStatus.FILLED
        sub = await client.place("BTCUSDT", "buy", "market", "0.3", client_order_id="M1",
                                 take_profit="51000", stop_loss="49000")
        assert (await client.wait_result(sub)).status is ResultStatus.FILLED
        blocked = {"account": "default", "kind": "list"}

        async def shown() -> bool:
            return worker.metrics.registry.get_sample_value(
                "orderstream_exits_blocked", blocked) == 1
        await until(shown, 10)
        await asyncio.sleep(0.5)  # passes go on, placing nothing
        assert await client.order("M1-x1") is None
        assert not [f for _, f in await r.xrange(K.failed) if b"M1-x" in f[b"data"]]
        assert await position(r) == D("0.1")
        more = await client.place("BTCUSDT", "buy", "market", "0.15")
        assert (await client.wait_result(more)).status is ResultStatus.FILLED
        exit_ = await order_in(client, "M1-x1", OrderState.ACCEPTED)
        assert exit_.spec.quantity == D("0.25") and exit_.spec.type is OrderType.OCO
        assert worker.metrics.registry.get_sample_value(
            "orderstream_exits_blocked", blocked) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("list of M1: its exit of 0.1 BTCUSDT is not placed" in m and "quantity" in m
               and "0.15" in m and "not protected" in m for m in errors), errors


async def test_a_list_in_the_shared_hash_of_older_workers_moves_to_its_account(
        redis_url: str, redis_client: aioredis.Redis, client: OrderClient) -> None:
    """Workers before per-account lists kept every list in one hash: a list found there
    (as an older worker would have written it during a rolling upgrade) is moved to its
    account's hash and watched as any other; a cancel marks a list in either."""
    r = redis_client
    await set_price(r, "50000")
    mark = r.register_script(SCRIPT)
    await r.hset(K.legacy_lists, "gone", '{"account":"default"}')
    assert await mark(keys=[K.lists("default"), K.lists_cancel, K.legacy_lists],
                      args=["mark", "gone", "c-1"]) == 1
    assert await mark(keys=[K.lists("default"), K.lists_cancel, K.legacy_lists],
                      args=["mark", "never", "c-2"]) == 0
    await r.delete(K.legacy_lists, K.lists_cancel)
    async with running(fast(redis_url)):
        sub = await client.place("BTCUSDT", "buy", "limit", "0.2", price="49900",
                                 client_order_id="O1", take_profit="51000")
        await client.wait_result(sub)
        async with r.pipeline(transaction=True) as pipe:
            data = await r.hget(K.lists("default"), "O1")
            assert data is not None
            pipe.hdel(K.lists("default"), "O1").hset(K.legacy_lists, "O1", data)
            await pipe.execute()

        async def moved() -> bool:
            return (not await r.exists(K.legacy_lists)
                    and await r.hexists(K.lists("default"), "O1"))
        await until(moved, 10)
        await set_price(r, "49900")
        exit_ = await order_in(client, "O1-x1", OrderState.ACCEPTED)
        assert exit_.spec.type is OrderType.LIMIT and exit_.spec.quantity == D("0.2")


def test_exit_ids_stay_within_every_broker_and_apart() -> None:
    assert exit_id("E1", 1) == "E1-x1"
    long_a, long_b = "A" * 35 + "1", "A" * 35 + "2"
    a, b = exit_id(long_a, 1), exit_id(long_b, 1)
    assert len(a) <= 36 and len(b) <= 36 and a != b and a.endswith("-x1")


async def test_at_binance_a_brackets_exit_is_a_native_oco_for_what_the_position_holds(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    """The entry fills at the local Binance; its exit goes out as one orderList/oco under
    the exit's id (limit-maker above, stop-loss below), for the position the fold shows:
    the fill less a commission taken in BTC, rounded down to the lot step; the
    take-profit then fills it."""
    async with running(binance_settings(redis_url, exchange)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.01", client_order_id="B1",
                                 take_profit="51000", stop_loss="49000")
        assert (await client.wait_result(sub, timeout=10)).status is ResultStatus.FILLED
        exit_ = await order_in(client, "B1-x1", OrderState.ACCEPTED)
        raw = await redis_client.hget(K.positions, position_key("default", "BTCUSDT"))
        held = decode_position(raw).quantity if raw else D(0)
        assert exit_.spec.quantity == closable(held, D("0.00001")) and 0 < held <= D("0.01")
        [params] = [dict(s.params) for s in exchange.log
                    if s.method == "POST" and s.path == "/api/v3/orderList/oco"]
        assert (params["listClientOrderId"], params["side"], params["aboveType"],
                D(params["abovePrice"]), params["belowType"], D(params["belowStopPrice"]),
                D(params["quantity"])) == ("B1-x1", "SELL", "LIMIT_MAKER", D("51000"),
                                           "STOP_LOSS", D("49000"), exit_.spec.quantity)
        exchange.set_price("BTCUSDT", "51000")
        await order_in(client, "B1-x1", OrderState.FILLED)
        await list_over(redis_client, "B1")


async def test_at_alpaca_a_brackets_exit_is_alpacas_own_oco_and_its_stop_leg_closes(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    """The exit (a reduce_only oco) goes to Alpaca as its oco order class, under the exit's
    id: the position is protected at Alpaca, not by the emulator. When the price falls to
    the stop-loss, Alpaca's stop leg fills and its take-profit is cancelled; the exit is
    filled for what the entry bought and the list is over."""
    async with running(alpaca_settings(redis_url, alpaca)):
        sub = await client.place("AAPL", "buy", "market", "5", client_order_id="AL1",
                                 take_profit="195", stop_loss="185")
        assert (await client.wait_result(sub, timeout=15)).status is ResultStatus.FILLED
        exit_ = await order_in(client, "AL1-x1", OrderState.ACCEPTED, timeout=15)
        assert not exit_.emulated and exit_.spec.quantity == D("5")
        assert [r.body.get("client_order_id") for r in alpaca.orders_sent()] == [
            "AL1", "AL1-x1"]
        [body] = [r.body for r in alpaca.orders_sent()
                  if r.body.get("client_order_id") == "AL1-x1"]
        assert body == {"symbol": "AAPL", "side": "sell", "type": "limit",
                        "time_in_force": "gtc", "client_order_id": "AL1-x1", "qty": "5",
                        "order_class": "oco", "take_profit": {"limit_price": "195"},
                        "stop_loss": {"stop_price": "185"}}
        alpaca.set_price("AAPL", "185")
        closed = await order_in(client, "AL1-x1", OrderState.FILLED, timeout=15)
        assert (closed.filled_quantity, closed.average_price) == (D("5"), D("185"))
        parent = alpaca.engine.get_by_client_id("AL1-x1")
        [leg] = alpaca.engine.get(parent["id"], nested=True)["legs"]
        assert (parent["status"], leg["status"]) == ("canceled", "filled")
        await list_over(redis_client, "AL1")
    assert alpaca.orders_for("AL1-x1") == 1
