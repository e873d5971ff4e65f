"""Reconciliation of an OANDA account against our records: pending entry orders with no
record of ours (our client id unknown, or none at all) are orphans, reported once and
counted, or cancelled when the account says so; our own resting orders are known; a pass
runs at start and then every reconcile_interval_ms. Open positions: what OANDA holds beyond
ours at the first pass is taken as it is; a later change is warned of once and counted."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.oanda import orphans as oanda_orphans
from executor.brokers.oanda.broker import OandaBroker
from executor.brokers.wrapper import unwrap
from executor.infra.metrics import Metrics
from executor.model.positions import Position, decode_position, position_key
from producer.client import OrderClient
from producer.contract import ResultStatus, encode
from producer.keys import Keys
from tests.fakes.oanda import account_for, venue

from .conftest import running, until
from .test_oanda_broker import spec
from .test_oanda_worker import oanda_settings

__all__ = ["venue"]  # fixture


def place_elsewhere(server: OandaExchangeServer, cid: str | None, price: str = "1.05"
                    ) -> str:
    """A limit order placed at OANDA by someone else (another program, the web page)."""
    order: dict[str, Any] = {"type": "LIMIT", "instrument": "EUR_USD", "units": "100",
                             "price": price}
    if cid is not None:
        order["clientExtensions"] = {"id": cid}
    return str(server.venue.create(order)["orderCreateTransaction"]["id"])


def trade_elsewhere(server: OandaExchangeServer, instrument: str, units: str) -> None:
    """A market order filled at OANDA that orderstream never sent (nor recorded)."""
    server.venue.create({"type": "MARKET", "instrument": instrument, "units": units})


async def record_position(r: aioredis.Redis, symbol: str, quantity: str) -> None:
    """Our position as the positions fold records it."""
    held = Position(account="oa", symbol=symbol, quantity=Decimal(quantity))
    await r.hset(Keys().positions, position_key("oa", symbol), encode(held))


def drift_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "position drift" in r.getMessage()]


def position_drifts(metrics: Metrics, symbol: str) -> float | None:
    return metrics.registry.get_sample_value("orderstream_broker_position_drift_total",
                                             {"account": "oa", "symbol": symbol})


def orphans(metrics: Metrics, action: str) -> float | None:
    return metrics.registry.get_sample_value("orderstream_broker_orphans_total",
                                             {"account": "oa", "action": action})


async def test_orphans_at_start_are_reported_once_and_counted(
        redis_client: aioredis.Redis, venue: OandaExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    named = place_elsewhere(venue, "not-ours-1")
    anonymous = place_elsewhere(venue, None)
    metrics = Metrics()
    b = OandaBroker("oa", account_for(venue), redis_client, Keys(), metrics)
    with caplog.at_level(logging.WARNING):
        await b.start()
    try:
        drift = b.reconciler.drift
        assert drift is not None
        assert sorted(str(o["id"]) for o in drift.orphans) == sorted([named, anonymous])
        assert drift.known == [] and drift.missing == []
        assert orphans(metrics, "report") == 2
        told = [r.getMessage() for r in caplog.records if "orphan order" in r.getMessage()]
        assert len(told) == 2 and any("not-ours-1 (EUR_USD LIMIT 100 at 1.05" in m
                                      for m in told)
        assert all(venue.token not in m for m in told)
        assert b.store is not None
        await b.reconciler.run(b.store)  # still pending: not told or counted again
        assert orphans(metrics, "report") == 2
    finally:
        await b.close()
    assert all(o["state"] == "PENDING" for o in venue.venue.orders.values())


async def test_orphans_are_cancelled_when_the_account_says_so(
        redis_client: aioredis.Redis, venue: OandaExchangeServer) -> None:
    first = place_elsewhere(venue, "not-ours-2")
    second = place_elsewhere(venue, None)
    metrics = Metrics()
    b = OandaBroker("oa", account_for(venue, orphans="cancel"), redis_client, Keys(),
                    metrics)
    await b.start()
    await b.close()
    assert [venue.venue.orders[i]["state"] for i in (first, second)] == ["CANCELLED"] * 2
    assert orphans(metrics, "cancel") == 2


async def test_our_resting_order_is_known_and_a_later_orphan_found_periodically(
        redis_url: str, venue: OandaExchangeServer, client: OrderClient) -> None:
    settings = oanda_settings(redis_url, venue, reconcile_interval_ms=200)
    async with running(settings) as worker:
        sub = await client.place("EUR_USD", "buy", "limit", "1000", price="1.05")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
        adapter = unwrap(worker.brokers["default"])
        assert isinstance(adapter, OandaBroker)
        place_elsewhere(venue, "not-ours-3")
        drift = None
        for _ in range(100):
            drift = adapter.reconciler.drift
            if drift is not None and drift.orphans:
                break
            await asyncio.sleep(0.05)
    assert drift is not None
    assert [o["clientExtensions"]["id"] for o in drift.orphans] == ["not-ours-3"]
    assert drift.known == [sub.client_order_id]


async def test_positions_that_match_ours_are_no_drift_and_a_trade_behind_our_back_is(
        redis_client: aioredis.Redis, venue: OandaExchangeServer,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oanda_orphans, "RECHECK_S", 0.01)
    trade_elsewhere(venue, "USD_JPY", "-500")  # held from before orderstream, not ours
    metrics = Metrics()
    b = OandaBroker("oa", account_for(venue), redis_client, Keys(), metrics)
    with caplog.at_level(logging.INFO):
        await b.start()
    try:
        assert b.store is not None and b.reconciler.drift is not None
        assert b.reconciler.drift.positions == []
        assert b.reconciler.start == {"USD_JPY": Decimal(-500)}
        assert any("at start, OANDA holds beyond our positions: USD_JPY -500" in r.getMessage()
                   for r in caplog.records)
        # Our orders, filled and recorded: the positions match.
        assert (await b.submit("ours-1", spec(quantity="1000"))).status == "filled"
        assert (await b.submit("ours-2", spec(quantity="0.5", symbol="XAU_USD"))
                ).status == "filled"
        await record_position(redis_client, "EUR_USD", "1000")
        await record_position(redis_client, "XAU_USD", "0.50")
        drift = await b.reconciler.run(b.store)
        assert drift.positions == [] and drift_warnings(caplog) == []
        # A trade made at OANDA behind our back: told on the next pass, once.
        trade_elsewhere(venue, "EUR_USD", "-250")
        drift = await b.reconciler.run(b.store)
        [found] = drift.positions
        assert (found.instrument, found.held, found.recorded, found.start) == (
            "EUR_USD", Decimal(750), Decimal(1000), Decimal(0))
        assert drift_warnings(caplog) == [
            "oanda oa: position drift: EUR_USD: OANDA holds 750 units, our positions add up "
            "to 1000: -250 beyond them, 0 at this worker's start (-250): fills recorded that "
            "did not happen, or trades made outside orderstream; check before trading"]
        assert position_drifts(metrics, "EUR_USD") == 1
        drift = await b.reconciler.run(b.store)  # unchanged: not told or counted again
        assert len(drift.positions) == 1 and len(drift_warnings(caplog)) == 1
        assert position_drifts(metrics, "EUR_USD") == 1
        # A fill recorded that did not happen (XAU_USD): another drift, told once.
        await record_position(redis_client, "XAU_USD", "0.75")
        drift = await b.reconciler.run(b.store)
        assert [d.instrument for d in drift.positions] == ["EUR_USD", "XAU_USD"]
        assert len(drift_warnings(caplog)) == 2 and "XAU_USD: OANDA holds 0.5 units, our " \
            "positions add up to 0.75" in drift_warnings(caplog)[1]
        assert all(venue.token not in r.getMessage() for r in caplog.records)
    finally:
        await b.close()


async def test_a_drift_read_again_is_not_told_when_the_fold_has_caught_up(
        redis_client: aioredis.Redis, venue: OandaExchangeServer,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """OANDA can show a fill before the positions fold has recorded it: a drift is read
    again before it is told."""
    monkeypatch.setattr(oanda_orphans, "RECHECK_S", 0.01)
    b = OandaBroker("oa", account_for(venue), redis_client, Keys(), Metrics())
    await b.start()
    try:
        assert b.store is not None
        await b.submit("ours-3", spec(quantity="1000"))  # filled, not recorded yet

        async def folded(store: Any, what: str) -> None:  # the fold records it meanwhile
            await record_position(redis_client, "EUR_USD", "1000")
        monkeypatch.setattr(oanda_orphans.recorded, "folded", folded)
        drift = await b.reconciler.run(b.store)
        assert drift.positions == [] and drift_warnings(caplog) == []
    finally:
        await b.close()


async def test_a_worker_finds_no_drift_in_its_own_fills_and_a_trade_made_elsewhere(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oanda_orphans, "RECHECK_S", 0.05)
    settings = oanda_settings(redis_url, venue, reconcile_interval_ms=200)
    caplog.set_level(logging.WARNING)
    async with running(settings) as worker:
        sub = await client.place("EUR_USD", "sell", "market", "1000")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.FILLED

        async def folded() -> bool:
            raw = await redis_client.hget(Keys().positions, position_key("default", "EUR_USD"))
            return raw is not None and decode_position(raw).quantity == Decimal(-1000)
        await until(folded)
        adapter = unwrap(worker.brokers["default"])
        assert isinstance(adapter, OandaBroker)
        reads = sum(r.name == "positions" for r in venue.log)

        async def passed() -> bool:  # a pass that began after the fold
            return sum(r.name == "positions" for r in venue.log) >= reads + 3
        await until(passed)
        assert drift_warnings(caplog) == []
        assert adapter.reconciler.drift is not None
        assert adapter.reconciler.drift.positions == []
        trade_elsewhere(venue, "EUR_USD", "100")

        async def found() -> bool:
            drift = adapter.reconciler.drift
            return drift is not None and bool(drift.positions)
        await until(found)
    assert adapter.reconciler.drift is not None
    [d] = adapter.reconciler.drift.positions
    assert (d.held, d.recorded, d.start) == (Decimal(-900), Decimal(-1000), Decimal(0))
    assert sum("position drift: EUR_USD" in m for m in drift_warnings(caplog)) == 1
