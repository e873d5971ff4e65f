"""Conditional orders through a real worker on the paper exchange: a trailing sell stop
follows the price (an operator's override, as ``HSET orders:paper:<account>:prices``), sits
through a small dip, fires on a dip past its offset, and its trail, kept in Redis, survives
a worker restart between two price moves; an if-touched order fires at its stop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal

import redis.asyncio as aioredis

from executor.brokers.paper.records import PaperOrder, decode_order
from executor.config import Settings
from executor.model.triggers import TrailState
from producer.client import OrderClient
from producer.contract import OrderState, ResultStatus
from producer.keys import Keys

from .conftest import events_in, running, until

K = Keys()
D = Decimal


async def set_price(r: aioredis.Redis, price: str) -> None:
    await r.hset(K.paper("default", "prices"), "BTCUSDT", price)  # the operator override


async def paper_record(r: aioredis.Redis, client_order_id: str) -> PaperOrder:
    data = await r.hget(K.paper("default", "orders"), client_order_id)
    assert data is not None
    return decode_order(data)


async def pushed(r: aioredis.Redis, client_order_id: str) -> int:
    """Entries of the paper exchange's executions stream (its push feed) about an order."""
    entries = await r.xrange(K.paper("default", "executions"))
    return sum(1 for _, fields in entries if client_order_id.encode() in fields[b"data"])


async def fill_events(r: aioredis.Redis, client_order_id: str) -> int:
    events = await events_in(r)
    return sum(1 for e in events if e.client_order_id == client_order_id and e.fill is not None)


async def test_a_trailing_sell_stop_follows_the_price_and_survives_a_restart(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(make_settings()):
        placed = await client.place("BTCUSDT", "sell", "trailing_stop", "0.5",
                                    trailing_offset="100")
        result = await client.wait_result(placed)
        assert result.ok and result.status is ResultStatus.ACCEPTED, result
        cid = placed.client_order_id
        record = await paper_record(r, cid)
        assert record.trail == TrailState(active=True, water=D("50000"), trigger=D("49900"))
        status = await client.order(cid)
        assert status is not None and status.spec.trailing_offset == D("100")

        await set_price(r, "50500")  # a rise: the trigger follows, to 50400

        async def followed() -> bool:
            trail = (await paper_record(r, cid)).trail
            return trail is not None and trail.trigger == D("50400")
        await until(followed)
        assert await pushed(r, cid) == 0  # the trail's moves are not pushed to the workers
        await set_price(r, "50450")  # a small dip, above the trigger
        version = (await paper_record(r, cid)).version
        await _passes(r)
        dipped = await paper_record(r, cid)
        assert dipped.version == version and dipped.is_open and not dipped.triggered
        status = await client.order(cid)
        assert status is not None and status.state is OrderState.ACCEPTED

    # No worker while the price falls to the trigger: the trail it reached is in Redis, so
    # the next worker fires it there (one that trailed afresh would start at 50400).
    await set_price(r, "50400")
    async with running(make_settings(consumer="w2")):
        async def filled() -> bool:
            s = await client.order(cid)
            return s is not None and s.state is OrderState.FILLED
        await until(filled)
        status = await client.order(cid)
        assert status is not None
        assert [(f.price, f.quantity) for f in status.fills] == [(D("50400"), D("0.5"))]
        assert status.filled_quantity == D("0.5") and status.average_price == D("50400")
        await _passes(r)
    assert await fill_events(r, cid) == 1  # fired once
    assert await pushed(r, cid) == 1
    fired = await paper_record(r, cid)
    assert fired.triggered and not fired.is_open
    assert fired.trail == TrailState(active=True, water=D("50500"), trigger=D("50400"))


async def test_if_touched_and_refused_orders_through_a_worker(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(make_settings()):
        dip = await client.place("BTCUSDT", "buy", "market_if_touched", "0.1",
                                 stop_price="49900")
        assert (await client.wait_result(dip)).status is ResultStatus.ACCEPTED
        now = await client.place("BTCUSDT", "buy", "market_if_touched", "0.1",
                                 stop_price="50000")
        rejected = await client.wait_result(now)
        assert rejected.status is ResultStatus.REJECTED
        assert rejected.reason is not None and "trigger immediately" in rejected.reason
        await set_price(r, "49900")

        async def filled() -> bool:
            s = await client.order(dip.client_order_id)
            return s is not None and s.state is OrderState.FILLED
        await until(filled)
        status = await client.order(dip.client_order_id)
        assert status is not None and status.fills[0].price == D("49900")

        # A trailing stop's quantity is not amended: it would trail afresh.
        trailing = await client.place("BTCUSDT", "sell", "trailing_stop", "0.1",
                                      trailing_offset="1", trailing_offset_type="percent")
        assert (await client.wait_result(trailing)).status is ResultStatus.ACCEPTED
        amend = await client.wait_result(await client.amend(trailing.client_order_id,
                                                            quantity="0.2"))
        assert amend.reason_code == "invalid" and amend.reason is not None
        assert "quantity" in amend.reason and "trail afresh" in amend.reason
        cancel = await client.wait_result(await client.cancel(trailing.client_order_id))
        assert cancel.status is ResultStatus.CANCELLED
        assert not (await paper_record(r, trailing.client_order_id)).is_open
        assert await r.zcard(K.paper("default", "watch:BTCUSDT:every")) == 0


async def _passes(r: aioredis.Redis) -> None:
    """Wait out a few match passes (200 ms apart by default)."""
    await asyncio.sleep(0.8)


async def test_the_producer_command_places_a_trailing_stop_limit(
        make_settings: Callable[..., Settings], client: OrderClient, redis_url: str,
        redis_client: aioredis.Redis) -> None:
    await set_price(redis_client, "50000")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDERSTREAM_") and k != "REDIS_URL"}
    async with running(make_settings()):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "executor", "submit", "--redis-url", redis_url, "--json",
            "--symbol", "BTCUSDT", "--side", "buy", "--type", "trailing_stop_limit",
            "--quantity", "0.2", "--trailing-offset", "50", "--trailing-offset-type", "bps",
            "--activation-price", "49500", "--limit-offset", "5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["status"] == "accepted" and result["type"] == "trailing_stop_limit"
        status = await client.order(result["client_order_id"])
        assert status is not None
        spec = status.spec
        assert (spec.trailing_offset, spec.trailing_offset_type, spec.activation_price,
                spec.limit_offset) == (D("50"), "bps", D("49500"), D("5"))
        record = await paper_record(redis_client, result["client_order_id"])
        assert record.trail == TrailState()  # waiting for 49500


async def test_an_iceberg_is_recorded_and_matches_as_the_plain_limit(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    await set_price(r, "50000")
    async with running(make_settings()):
        placed = await client.place("BTCUSDT", "sell", "limit", "0.5", price="51000",
                                    display_quantity="0.1")
        result = await client.wait_result(placed)
        assert result.ok and result.status is ResultStatus.ACCEPTED, result
        cid = placed.client_order_id
        record = await client.order(cid)
        assert record is not None and record.spec.display_quantity == D("0.1")
        assert (await paper_record(r, cid)).spec.display_quantity == D("0.1")
        created = await events_in(r)
        spec = next(e.order for e in created if e.client_order_id == cid and e.order)
        assert spec.display_quantity == D("0.1")

        await set_price(r, "51000")  # matching as without it: the whole quantity fills

        async def filled() -> bool:
            status = await client.order(cid)
            return status is not None and status.state is OrderState.FILLED
        await until(filled, 10)
        record = await client.order(cid)
        assert record is not None and record.filled_quantity == D("0.5")


async def test_an_amended_iceberg_keeps_its_display_quantity_unless_the_rest_fits_in_it(
        make_settings: Callable[..., Settings], client: OrderClient,
        redis_client: aioredis.Redis) -> None:
    await set_price(redis_client, "50000")
    async with running(make_settings()):
        placed = await client.place("BTCUSDT", "sell", "limit", "0.5", price="51000",
                                    display_quantity="0.1")
        assert (await client.wait_result(placed)).status is ResultStatus.ACCEPTED
        repriced = await client.amend(placed.client_order_id or "", price="51500")
        result = await client.wait_result(repriced.request_id, 10)
        assert result.ok and result.client_order_id, result
        record = await client.order(result.client_order_id)
        assert record is not None and record.spec.display_quantity == D("0.1")
        assert record.spec.price == D("51500")
        shrunk = await client.amend(result.client_order_id, quantity="0.1")
        result = await client.wait_result(shrunk.request_id, 10)
        assert result.ok and result.client_order_id, result
        record = await client.order(result.client_order_id)
        assert record is not None and record.spec.quantity == D("0.1")
        assert record.spec.display_quantity is None  # all of it shown: a plain limit
