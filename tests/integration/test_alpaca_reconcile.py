"""Reconciliation of Alpaca's open orders against our records: an order open at Alpaca
with no record of ours (an orphan) is reported once per process and counted, ours are
not, and the periodic pass runs from the start."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers.alpaca import reconcile
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.infra.metrics import Metrics
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys
from tests.fakes.alpaca import alpaca, alpaca_account

from .conftest import replace, running, settings_for, until
from .test_alpaca_stream import alpaca_settings

__all__ = ["alpaca"]  # fixture

K = Keys()


def by_hand(server: AlpacaExchangeServer, cid: str) -> str:
    """An order placed on the account by someone else (no record of ours)."""
    return str(server.engine.place({"symbol": "AAPL", "side": "buy", "type": "limit",
                                    "time_in_force": "gtc", "qty": "1",
                                    "limit_price": "100", "client_order_id": cid})["id"])


async def test_an_orphan_is_reported_once_and_ours_are_not(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient, caplog: pytest.LogCaptureFixture) -> None:
    settings = alpaca_settings(redis_url, alpaca)
    metrics = Metrics()
    async with running(settings):
        sub = await client.place("AAPL", "buy", "limit", "1", price="150")
        assert (await client.wait_result(sub.request_id, 10)).status is ResultStatus.ACCEPTED
    alpaca_id = by_hand(alpaca, "by-hand-1")
    b = AlpacaBroker("default", alpaca_account(alpaca, reconcile_interval_ms=0),
                     redis_client, K, metrics)
    await b.start()
    assert b.store is not None
    try:
        with caplog.at_level(logging.INFO, logger="executor.brokers.alpaca.broker"):
            first = await b.reconcile(b.store)
            second = await b.reconcile(b.store)
    finally:
        await b.close()
    assert [o["client_order_id"] for o in first] == ["by-hand-1"]
    assert [o["client_order_id"] for o in second] == ["by-hand-1"]
    told = [r.getMessage() for r in caplog.records if "orphan order" in r.getMessage()]
    assert len(told) == 1 and alpaca_id in told[0] and "buy limit AAPL qty 1" in told[0]
    assert metrics.registry.get_sample_value(
        "orderstream_broker_orphans_total", {"account": "default", "action": "report"}) == 1


async def test_the_worker_reconciles_from_the_start_and_periodically(
        redis_url: str, alpaca: AlpacaExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = replace(settings_for(redis_url), accounts={
        "default": alpaca_account(alpaca, reconcile_interval_ms=200)})
    with caplog.at_level(logging.WARNING, logger="executor.brokers.alpaca.broker"):
        async with running(settings):
            async def told(cid: str) -> bool:
                return any(cid in r.getMessage() for r in caplog.records)
            by_hand(alpaca, "by-hand-2")  # after the start: a later pass finds it
            await until(lambda: told("by-hand-2"), 5)


def test_orphans_are_the_open_orders_without_a_record() -> None:
    remote = [{"id": "a", "client_order_id": "ours"}, {"id": "b", "client_order_id": "x"}]
    assert reconcile.orphans(remote, {"ours": object(), "x": None}) == [remote[1]]  # type: ignore[dict-item]
    assert "notional 5" in reconcile.describe({"notional": "5"})
