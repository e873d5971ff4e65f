"""Reconciliation of an OANDA account against our records: pending entry orders with no
record of ours (our client id unknown, or none at all) are orphans, reported once and
counted, or cancelled when the account says so; our own resting orders are known; a pass
runs at start and then every reconcile_interval_ms."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.oanda.broker import OandaBroker
from executor.brokers.wrapper import unwrap
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys
from tests.fakes.oanda import account_for, venue

from .conftest import running
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
