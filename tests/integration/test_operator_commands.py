"""The operator commands on a real redis-server, after a real worker ran real orders: replay
finds no difference in what the worker wrote and exactly the difference in each tampering;
the views print the expected rows and valid JSON. The commands run as the real entry point
(``python -m executor``), in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import redis.asyncio as aioredis

from executor.config import Settings
from executor.infra.store import decode_order
from executor.model.positions import Position, apply_fill, unrealized
from producer.client import OrderClient
from producer.contract import Result, ResultStatus, WireDecimal, decimal_text, encode
from producer.keys import Keys

from .conftest import running

K = Keys()


async def cli(redis_url: str, command: str, *args: str) -> tuple[int, str]:
    # Only what the test gives: none of the developer's ORDERSTREAM_* or REDIS_URL.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDERSTREAM_") and k != "REDIS_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "executor", command, "--redis-url", redis_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert proc.returncode in (0, 1), err.decode()
    return proc.returncode, out.decode()


async def cli_json(redis_url: str, command: str, *args: str) -> tuple[int, Any]:
    code, out = await cli(redis_url, command, "--json", *args)
    return code, json.loads(out)


class Traded(msgspec.Struct):
    buy: Result  # BTCUSDT market, filled
    sell: Result  # BTCUSDT market, filled (reduces the long)
    eth: Result  # ETHUSDT market, filled
    resting: Result  # ETHUSDT limit sell far above the price, accepted and left open
    cancelled: Result  # BTCUSDT limit buy far below, then cancelled


async def trade(client: OrderClient) -> Traded:
    """One order at a time, so the results come in the events' order."""
    async def done(symbol: str, side: str, type_: str, qty: str,
                   price: str | None = None) -> Result:
        sub = await client.place(symbol, side, type_, qty, price=price)
        return await client.wait_result(sub.request_id, 10)

    buy = await done("BTCUSDT", "buy", "market", "0.010")
    sell = await done("BTCUSDT", "sell", "market", "0.004")
    eth = await done("ETHUSDT", "buy", "market", "0.5")
    resting = await done("ETHUSDT", "sell", "limit", "1", "3500")
    rest = await done("BTCUSDT", "buy", "limit", "0.020", "45000")
    assert rest.client_order_id is not None
    cancelled = await client.wait_result((await client.cancel(rest.client_order_id)).request_id,
                                         10)
    assert [r.status for r in (buy, sell, eth, resting, cancelled)] == [
        ResultStatus.FILLED, ResultStatus.FILLED, ResultStatus.FILLED, ResultStatus.ACCEPTED,
        ResultStatus.CANCELLED]
    return Traded(buy, sell, eth, resting, cancelled)


def positions_of(results: list[Result]) -> dict[str, Position]:
    """What the projector stores, computed apart from replay: from the results' fills (their
    fees are in the quote asset, USDT)."""
    book: dict[str, Position] = {}
    for r in results:
        assert r.account and r.symbol and r.side
        key = f"{r.account}:{r.symbol}"
        for f in r.fills:
            assert f.commission_asset == "USDT"
            held = book.get(key) or Position(account=r.account, symbol=r.symbol)
            book[key] = apply_fill(held, r.side, f.quantity, f.price, f.commission)
    return book


async def project(r: aioredis.Redis, book: dict[str, Position]) -> str:
    """Store ``book`` as the positions up to the last events entry; returns that entry.
    Whatever the worker's own projector stored before is replaced, not merged into."""
    (last, _), = await r.xrevrange(K.events, count=1)
    cursor: str = last.decode()
    await r.delete(K.positions)
    await r.hset(K.positions, mapping={k: encode(p) for k, p in book.items()})
    await r.set(K.positions_cursor, cursor)
    return cursor


async def test_replay_finds_no_difference_then_exactly_each_tampering(
        make_settings: Callable[..., Settings], client: OrderClient, redis_url: str,
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    async with running(make_settings()):
        t = await trade(client)
    book = positions_of([t.buy, t.sell, t.eth])
    await project(r, book)

    code, out = await cli(redis_url, "replay")
    assert code == 0, out
    assert "no difference" in out
    code, report = await cli_json(redis_url, "replay")
    assert code == 0 and report["ok"] is True and report["differences"] == []
    assert (report["orders"], report["stored_orders"], report["open_orders"],
            report["positions"]) == (5, 5, 1, 2)

    buy_cid, rest_cid = t.buy.client_order_id, t.resting.client_order_id
    cancelled_cid = t.cancelled.client_order_id
    assert buy_cid and rest_cid and cancelled_cid

    async def record(cid: str) -> bytes:
        data: bytes = await r.hget(K.order(cid), "record")
        return data

    async def rewrite(cid: str, **changes: Any) -> None:
        order = decode_order(await record(cid))
        await r.hset(K.order(cid), "record", encode(msgspec.structs.replace(order, **changes)))

    originals = {cid: await record(cid) for cid in (buy_cid, rest_cid, cancelled_cid)}
    btc = book["default:BTCUSDT"]

    async def restore() -> None:
        for cid, data in originals.items():
            await r.hset(K.order(cid), "record", data)
        await r.sadd(K.open, rest_cid)
        await r.hset(K.positions, "default:BTCUSDT", encode(btc))

    tamperings: list[tuple[Any, dict[str, Any]]] = [
        (rewrite(buy_cid, filled_quantity=WireDecimal("0.011")),
         {"subject": "order", "key": buy_cid, "field": "filled_quantity",
          "replayed": "0.010", "stored": "0.011"}),
        (rewrite(cancelled_cid, state="accepted"),
         {"subject": "order", "key": cancelled_cid, "field": "state",
          "replayed": "cancelled", "stored": "accepted"}),
        (r.srem(K.open, rest_cid),
         {"subject": "open", "key": rest_cid, "field": "member", "replayed": "yes",
          "stored": "no"}),
        (r.hset(K.positions, "default:BTCUSDT", encode(msgspec.structs.replace(
            btc, quantity=WireDecimal(btc.quantity + Decimal("0.001"))))),
         {"subject": "position", "key": "default:BTCUSDT", "field": "quantity",
          "replayed": str(btc.quantity), "stored": str(btc.quantity + Decimal("0.001"))}),
    ]
    for tamper, expected in tamperings:
        await tamper
        code, report = await cli_json(redis_url, "replay")
        assert code == 1 and report["ok"] is False
        assert report["differences"] == [expected]
        await restore()

    # The summary names the difference too; a record gone before its TTL is one.
    await r.delete(K.order(cancelled_cid))
    code, out = await cli(redis_url, "replay")
    assert code == 1
    assert "1 difference:" in out
    row = next(line.split() for line in out.splitlines() if cancelled_cid in line)
    assert row == ["order", cancelled_cid, "record", "cancelled", "-", "-"]  # no log entry


async def test_positions_are_compared_up_to_the_cursor_only(
        make_settings: Callable[..., Settings], client: OrderClient, redis_url: str,
        redis_client: aioredis.Redis) -> None:
    """The projector may be behind the log: fills after its cursor are not a difference."""
    async with running(make_settings()):
        t = await trade(client)
    # Positions as a projector stores them that has folded up to the BTC sell's last
    # event and not yet the ETH fill after it.
    await project(redis_client, positions_of([t.buy, t.sell]))
    events = await redis_client.xrange(K.events)
    sell_last = max(i for i, (_, f) in enumerate(events)
                    if f[b"client_order_id"].decode() == t.sell.client_order_id)
    cursor = events[sell_last][0].decode()
    await redis_client.set(K.positions_cursor, cursor)
    code, report = await cli_json(redis_url, "replay")
    assert code == 0, report["differences"]
    assert report["positions"] == 1 and report["positions_cursor"] == cursor


async def test_views_print_the_rows_and_valid_json(
        make_settings: Callable[..., Settings], client: OrderClient, redis_url: str,
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    async with running(make_settings()):
        t = await trade(client)
        book = positions_of([t.buy, t.sell, t.eth])
        await project(r, book)
        await r.hset(K.paper("default", "prices"), "ETHUSDT", "3100")  # operator override

        # orders: the open one by default, every one with --all, filters.
        code, out = await cli(redis_url, "orders")
        lines = out.splitlines()
        assert code == 0 and lines[-1] == "1 orders"
        assert lines[1].split()[:9] == [t.resting.client_order_id, "default", "ETHUSDT",
                                        "sell", "limit", "1", "0", "-", "accepted"]
        _, view = await cli_json(redis_url, "orders", "--all")
        assert sorted(o["client_order_id"] for o in view["orders"]) == sorted(
            x.client_order_id for x in (t.buy, t.sell, t.eth, t.resting, t.cancelled))
        _, view = await cli_json(redis_url, "orders", "--all", "--symbol", "BTCUSDT",
                                 "--state", "filled")
        assert [(o["client_order_id"], o["filled_quantity"], o["average_price"])
                for o in view["orders"]] == [
            (x.client_order_id, str(x.filled_quantity), str(x.average_price))
            for x in (t.buy, t.sell)]
        _, view = await cli_json(redis_url, "orders", "--account", "nobody")
        assert view["orders"] == []

        # positions: valued at the override for ETHUSDT, the configured price for BTCUSDT.
        code, out = await cli(redis_url, "positions")
        btc, eth = book["default:BTCUSDT"], book["default:ETHUSDT"]
        rows = {line.split()[1]: line.split() for line in out.splitlines()[1:3]}
        assert rows["ETHUSDT"][-2:] == ["3100", decimal_text(unrealized(eth, Decimal("3100")))]
        assert rows["BTCUSDT"][2] == decimal_text(btc.quantity)
        _, view = await cli_json(redis_url, "positions")
        got = {(p["symbol"], p["reference_price"], p["unrealized_pnl"])
               for p in view["positions"]}
        assert got == {("BTCUSDT", "50000", decimal_text(unrealized(btc, Decimal("50000")))),
                       ("ETHUSDT", "3100", decimal_text(unrealized(eth, Decimal("3100"))))}
        _, view = await cli_json(redis_url, "positions", "--account", "nobody")
        assert view["positions"] == []

        # info: streams, the group, the live worker.
        code, out = await cli(redis_url, "info")
        assert code == 0 and "group executors: lag 0, pending 0" in out
        consumer = next(line.split() for line in out.splitlines() if line.startswith("w1"))
        assert consumer[:2] == ["w1", "0"] and consumer[-1] == "yes"
        _, info = await cli_json(redis_url, "info")
        events = await r.xlen(K.events)
        # Answered requests leave the requests stream.
        assert info["streams"] == {K.pending: 0, K.completed: 6, K.failed: 0, K.events: events}
        assert info["group"]["consumers"] == [
            {"name": "w1", "pending": 0, "idle_ms": info["group"]["consumers"][0]["idle_ms"],
             "alive": True}]
        (worker,) = info["workers"]
        assert (worker["consumer"], worker["pid"]) == ("w1", os.getpid())
        assert info["positions_cursor"] == info["last_event_id"]
        assert info["events_after_cursor"] == 0
    # The worker stopped: its heartbeat is gone.
    _, info = await cli_json(redis_url, "info")
    assert info["workers"] == []


async def test_replay_while_a_worker_writes_reports_no_false_difference(
        make_settings: Callable[..., Settings], client: OrderClient, redis_url: str) -> None:
    """Orders written while replay reads are left out (in flight), never reported as
    differences: a record read then can only be behind its events."""
    async with running(make_settings()):
        stop = asyncio.Event()

        async def flow() -> list[str]:
            ids: list[str] = []
            while not stop.is_set():
                side = "buy" if len(ids) % 2 else "sell"
                ids.append((await client.place("BTCUSDT", side, "market", "0.001")).request_id)
                await asyncio.sleep(0.002)
            return ids

        task = asyncio.create_task(flow())
        await asyncio.sleep(0.3)
        reports = [await cli_json(redis_url, "replay") for _ in range(3)]
        stop.set()
        await client.wait_results(await task, 30)
    for code, report in reports:
        assert code == 0, report["differences"]
        assert report["orders"] > 0
    code, report = await cli_json(redis_url, "replay")
    assert code == 0 and report["in_flight"] == [] and report["orders"] == len(
        await client.redis.keys(K.order("*")))
