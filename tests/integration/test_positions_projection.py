"""Positions follow the fills of orders:events: after real orders through a worker they
equal an independent computation from the results; two projectors racing count each fill
once; a projector starting mid-way takes the side from the order's record."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from executor.background.projector import Projector
from executor.config import Settings
from executor.infra.streams import positions_caught_up
from executor.infra.tasks import Slices
from executor.model.positions import Position, decode_position
from producer.client import OrderClient
from producer.keys import Keys

from .conftest import other_task_turns, running

K = Keys()


def quote(_account: str, _symbol: str) -> str | None:
    return "USDT"


async def stored_positions(r: aioredis.Redis) -> dict[str, Position]:
    return {k.decode(): decode_position(v) for k, v in (await r.hgetall(K.positions)).items()}


async def caught_up(r: aioredis.Redis) -> bool:
    last = await r.xrevrange(K.events, count=1)
    cursor = await r.get(K.positions_cursor)
    return bool(last) and cursor == last[0][0]


async def wait_caught_up(r: aioredis.Redis, timeout_s: float = 10) -> None:
    assert await positions_caught_up(r, K, timeout_s, poll_s=0.05)


async def fold_all(projector: Projector) -> None:
    while await projector.once():
        pass


async def bought_six_times_unprojected(make_settings: Callable[..., Settings],
                                       client: OrderClient) -> None:
    """Six fills of 0.1 ETHUSDT by a worker that leaves their positions to the test, each
    order in two writes (created, then its fill: the paper exchange not taking it in the
    write that records it), so that a page can end between an order's two entries."""
    async with running(make_settings(project_positions="false",
                                     accounts_default_take_with_record="false")):
        subs = [await client.place("ETHUSDT", "buy", "market", "0.1") for _ in range(6)]
        await client.wait_results([s.request_id for s in subs], 10)


async def assert_all_folded(r: aioredis.Redis, key: str, quantity: str) -> None:
    assert await caught_up(r)
    assert (await stored_positions(r))[key].quantity == Decimal(quantity)


async def test_positions_equal_the_cash_flows_of_the_fills_results_report(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    orders = [("buy", "0.010"), ("buy", "0.020"), ("sell", "0.005"), ("sell", "0.040"),
              ("buy", "0.001")]
    async with running(make_settings()):
        subs = [await client.place("BTCUSDT", side, "market", qty) for side, qty in orders]
        results = await client.wait_results([s.request_id for s in subs], 10)
        await wait_caught_up(redis_client)
    position = (await stored_positions(redis_client))["default:BTCUSDT"]
    # Independently: net quantity, cash flow and commission from the results alone.
    quantity = cash = commission = Decimal(0)
    for (side, _), sub in zip(orders, subs, strict=True):
        result = results[sub.request_id]
        sign = 1 if side == "buy" else -1
        for fill in result.fills:
            quantity += sign * fill.quantity
            cash -= sign * fill.quantity * fill.price
            commission += fill.commission
    assert position.quantity == quantity == Decimal("-0.014")
    assert position.commission == commission > 0
    # realized + unrealized at any price P equals cash flow + quantity * P.
    for p in (Decimal("40000"), Decimal("50000.5")):
        unrealized = position.quantity * p - position.cost_basis
        assert position.realized_pnl + unrealized == cash + quantity * p


async def test_two_projectors_count_each_fill_once_and_a_late_one_reads_sides_from_records(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    await bought_six_times_unprojected(make_settings, client)
    a = Projector(redis_client, K, "a", quote_asset=quote, page=7)
    b = Projector(redis_client, K, "b", quote_asset=quote, page=7)
    # "a" folds the first page and holds the lease; "b" cannot fold meanwhile.
    assert await a.once() == 7
    assert await b.once() == 0
    await a.release()
    # "b" starts mid-way: the created events of the first orders are behind the cursor,
    # so their sides come from the records.
    await fold_all(b)
    await assert_all_folded(redis_client, "default:ETHUSDT", "0.6")


async def test_a_worker_told_not_to_project_leaves_positions_to_others(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    async with running(make_settings(project_positions="false", track_interval_ms=50)):
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        await client.wait_result(sub.request_id, 10)
        await asyncio.sleep(0.5)  # over two projector intervals
        assert await redis_client.get(K.positions_cursor) is None
    async with running(make_settings()):
        await wait_caught_up(redis_client)
    position = (await stored_positions(redis_client))["default:BTCUSDT"]
    assert position.quantity == Decimal("0.010")


async def test_a_projector_that_lost_its_lease_unseen_folds_nothing_twice(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """A projector trusts its last renewal and the cursor it wrote, for a while; when the
    lease moved meanwhile, its write is refused and it reads both again."""
    await bought_six_times_unprojected(make_settings, client)
    # Six orders, two entries each (created, then the fill): three pages of four.
    a = Projector(redis_client, K, "a", quote_asset=quote, page=4)
    b = Projector(redis_client, K, "b", quote_asset=quote, page=4)
    assert await a.once() == 4
    # "a" stalls past its lease, unaware; "b" takes over and folds the next page.
    await redis_client.delete(K.positions_lease)
    assert await b.once() == 4
    cursor_b = await redis_client.get(K.positions_cursor)
    # "a" still believes it holds the lease and knows the cursor: refused, nothing written.
    assert await a.once() == 0
    assert await redis_client.get(K.positions_cursor) == cursor_b
    await b.release()
    # Now "a" reads lease and cursor again and goes on from where "b" stopped.
    await fold_all(a)
    await assert_all_folded(redis_client, "default:ETHUSDT", "0.6")


async def test_a_symbol_s_assets_are_written_before_its_first_fill_and_again_when_they_change(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fold writes the assets it folded a position with to ``Keys.assets`` (replay folds
    with them), once per pair it meets: pages of fills of a known pair write nothing more,
    and a pair whose assets changed (the broker now knows its base asset) is written
    again, before the page that used them."""
    await bought_six_times_unprojected(make_settings, client)
    known: dict[tuple[str, str], str] = {}

    def base(account: str, symbol: str) -> str | None:
        return known.get((account, symbol))

    written: list[Any] = []
    hset = redis_client.hset

    async def noted_hset(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == K.assets:
            written.append(kwargs["mapping"])
        return await hset(name, *args, **kwargs)

    monkeypatch.setattr(redis_client, "hset", noted_hset)
    # Six orders, two entries each (created, then its fill): three pages of two fills.
    projector = Projector(redis_client, K, "p", quote_asset=quote, base_asset=base, page=4)
    assert await projector.once() == 4
    assert await projector.once() == 4
    assert await redis_client.hget(K.assets, "default:ETHUSDT") == b'[null,"USDT"]'
    known[("default", "ETHUSDT")] = "ETH"
    assert await projector.once() == 4
    assert await redis_client.hget(K.assets, "default:ETHUSDT") == b'["ETH","USDT"]'
    assert written == [{"default:ETHUSDT": b'[null,"USDT"]'},
                       {"default:ETHUSDT": b'["ETH","USDT"]'}]
    await assert_all_folded(redis_client, "default:ETHUSDT", "0.6")


@pytest.mark.parametrize("budget_s", [0.0, 3600.0])
async def test_a_page_hands_the_event_loop_back_between_its_fills(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis, budget_s: float,
) -> None:
    """The request lanes share the projector's event loop: once a page has run its time
    slice, another task runs before its next fill is folded (so a request waits for a
    slice of a page, not all of it); within a slice, none does."""
    await bought_six_times_unprojected(make_settings, client)
    seen: list[int] = []  # the other task's turns when each fill was folded
    async with other_task_turns() as turns:

        def noting_quote(account: str, symbol: str) -> str | None:
            seen.append(turns.count)
            return quote(account, symbol)

        projector = Projector(redis_client, K, "p", quote_asset=noting_quote,
                              slices=Slices(budget_s))
        await fold_all(projector)  # one page: the sides come from its created events
    await assert_all_folded(redis_client, "default:ETHUSDT", "0.6")
    assert len(seen) == 6
    if budget_s == 0:
        assert all(a < b for a, b in itertools.pairwise(seen))
    else:
        assert len(set(seen)) == 1


async def test_an_event_the_projector_cannot_read_stalls_positions_not_the_worker(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """A fill event that does not decode (a bug, a foreign writer) must not be skipped, since
    positions would be wrong for good, nor end the worker: the positions loop fails, is
    counted and restarted, orders are still served, and the fold goes on once it is gone."""
    poison = await redis_client.xadd(K.events, {
        "data": b'{"client_order_id":"x","seq":3,"state":"filled","at":1,"fill":{}}'})
    no_data = await redis_client.xadd(K.events, {"client_order_id": "y"})
    async with running(make_settings()) as worker:
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        result = await client.wait_result(sub.request_id, 10)
        assert result.status == "filled"

        def errors() -> float:
            return worker.metrics.registry.get_sample_value(
                "orderstream_background_errors_total", {"task": "positions"}) or 0.0

        for _ in range(100):
            if errors() >= 2:
                break
            await asyncio.sleep(0.05)
        assert errors() >= 2  # failed, restarted, failed again
        assert await redis_client.get(K.positions_cursor) is None  # nothing folded past it
        await redis_client.xdel(K.events, poison)
        failed = errors()
        for _ in range(200):  # the entry without data stops it next
            if errors() > failed:
                break
            await asyncio.sleep(0.05)
        assert errors() > failed
        assert await redis_client.get(K.positions_cursor) is None
        await redis_client.xdel(K.events, no_data)
        await wait_caught_up(redis_client)
    position = (await stored_positions(redis_client))["default:BTCUSDT"]
    assert position.quantity == Decimal("0.010")


async def test_a_created_event_whose_metadata_looks_like_a_fill_still_gives_the_side(
    make_settings: Callable[..., Settings], client: OrderClient,
    redis_client: aioredis.Redis,
) -> None:
    """Producers' metadata travels in the created event, where `"fill":` or a final state
    can appear unescaped: such an event is read in full, and its side is still kept (the
    record, the fallback, is gone here)."""
    async with running(make_settings(project_positions="false")):
        sub = await client.place("BTCUSDT", "sell", "market", "0.010",
                                 metadata={"fill": {"state": "filled"}, "order": 1})
        result = await client.wait_result(sub.request_id, 10)
    assert result.client_order_id
    await redis_client.delete(K.order(result.client_order_id))
    await fold_all(Projector(redis_client, K, "p", quote_asset=quote))
    await assert_all_folded(redis_client, "default:BTCUSDT", "-0.010")
