"""A 429 storm at the local Binance exchange: two workers share the broker's Retry-After
through the rate limiter (brokers/limited.py), so both slow down together, every order is
still filled once, and the exchange never has cause to ban (HTTP 418).

The exchange bans after ``ban_after`` (Binance-like 10) requests in a row that ignored its
429s; workers that kept sending while told to wait would be banned within the test. That
the wait is shared between workers is shown in test_limits.py; here it is the real
adapter, its error mapping and the exchange's ban rule end to end."""

from __future__ import annotations

import pytest

from devtools.binance_exchange import BinanceExchangeServer
from producer.client import OrderClient
from producer.contract import ResultStatus
from tests.fakes.binance import KEY, KEY_ENV, SECRET, SECRET_ENV, account_for

from .conftest import replace, running, settings_for


@pytest.fixture
async def strict_exchange(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    # A 2 s weight window (Binance's is a minute), so a Retry-After runs out in the test.
    server = BinanceExchangeServer(KEY, SECRET, ban_after=10, weight_window_ms=2_000)
    await server.start()
    yield server
    await server.close()


async def test_a_429_storm_slows_every_worker_and_never_gets_a_ban(
        redis_url: str, strict_exchange: BinanceExchangeServer, client: OrderClient) -> None:
    exchange = strict_exchange

    def settings(consumer: str):  # type: ignore[no-untyped-def]
        base = settings_for(redis_url, consumer, batch_size=4, concurrency=1,
                            track_interval_ms=60_000, submit_attempts=20)
        return replace(base, accounts={"default": account_for(exchange)})

    async with running(settings("w1")), running(settings("w2")):
        # Started (exchangeInfo, account, open orders cost weight); now a cap of 6 per
        # window, far below what the two workers would send at once.
        exchange.weight_limit = 6
        # Marketable limit orders: a market order's risk check needs the ticker, which the
        # storm may refuse (and then the order is denied, fail-safe), not the point here.
        subs = [await client.place("BTCUSDT", "buy", "limit", "0.001", price="51000",
                                   time_in_force="ioc") for _ in range(30)]
        results = await client.wait_results([s.request_id for s in subs], 60)
    assert {r.status for r in results.values()} == {ResultStatus.FILLED}, {
        (r.status, r.reason_code, r.reason) for r in results.values()}
    assert {r.worker for r in results.values()} == {"w1", "w2"}
    assert exchange.statuses[429] > 0  # the storm happened
    assert exchange.statuses[418] == 0  # and nobody was banned
    # Each worker's gate (Binance's default max_in_flight, 4) bounds what can still arrive
    # after a 429: never more refused calls in a row than both workers' slots.
    assert exchange.longest_429_run <= 2 * 4, exchange.longest_429_paths
    for sub in subs:
        assert exchange.orders_for(sub.client_order_id) == 1
