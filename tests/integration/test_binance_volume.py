"""The Binance adapter's traded volume (base.VolumeSource, for an algorithm's participation
cap), through the real python-binance client against the local exchange's klines: exact
Decimal volume over closed one-second buckets only, the bucket still filling counted once
closed and never twice, a long stretch read 1000 buckets per call, None (never an error)
for an unknown symbol or a failed call, and its weight of 2 taken by the shared limiter.

The exchange's clock is held still by the test, and the adapter's estimate of it is the same
clock with no offset (as after a perfect sync), so that which bucket is open is known."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from devtools.binance_exchange import BinanceExchangeServer
from executor.brokers import emulating
from executor.brokers.base import RateLimited, Volume
from executor.brokers.binance import broker as broker_module
from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.limited import limited
from executor.safety.limits import Limiter, Plan, Window
from producer.keys import Keys
from tests.fakes.binance import KEY, KEY_ENV, SECRET, SECRET_ENV, account_for

T0 = 1_800_000_000_000  # a whole second
KLINES = "/api/v3/klines"


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def exchange(monkeypatch: pytest.MonkeyPatch, clock: Clock
                   ) -> AsyncIterator[BinanceExchangeServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = BinanceExchangeServer(KEY, SECRET, clock=clock)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def broker(exchange: BinanceExchangeServer, clock: Clock,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BinanceBroker]:
    b = BinanceBroker("bn", account_for(exchange))
    await b.start()  # unsigned calls only (no record store): the still clock is no bother
    monkeypatch.setattr(broker_module, "_now_ms", clock)
    assert b.client is not None
    b.client.timestamp_offset = 0
    yield b
    await b.close()


def trade(exchange: BinanceExchangeServer, quantity: str) -> None:
    """An order of someone on the account (signed calls need a clock that runs): the
    exchange executes it now, and its klines count it."""
    exchange.exchange.place({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                             "quantity": quantity})


def asked(exchange: BinanceExchangeServer) -> list[dict[str, str]]:
    return [r.params for r in exchange.log if r.path == KLINES]


async def test_exact_volume_of_the_closed_buckets_ours_included(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    exchange.set_volume("BTCUSDT", "0.12345", since=T0)
    clock.now = T0 + 1_500
    trade(exchange, "0.01")  # in the bucket T0 + 1 s
    clock.now = T0 + 5_250
    got = await broker.traded_volume("BTCUSDT", T0)
    assert got == Volume(Decimal("0.12345") * 5 + Decimal("0.01"), T0 + 5_000)
    assert isinstance(got.quantity, Decimal)
    assert asked(exchange) == [{"symbol": "BTCUSDT", "interval": "1s", "startTime": str(T0),
                                "limit": "1000"}]


async def test_the_open_bucket_is_counted_by_a_later_call_once_closed(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    exchange.set_volume("BTCUSDT", "0.5", since=T0)
    clock.now = T0 + 2_999  # the bucket T0 + 2 s still filling: 0.4995 of it so far
    first = await broker.traded_volume("BTCUSDT", T0)
    assert first == Volume(Decimal("1.0"), T0 + 2_000)
    assert (await broker.traded_volume("BTCUSDT", first.until)) == Volume(Decimal(0), T0 + 2_000)
    clock.now = T0 + 3_000  # it closed this very ms
    assert (await broker.traded_volume("BTCUSDT", first.until)) == Volume(Decimal("0.5"),
                                                                          T0 + 3_000)


async def test_a_later_buckets_presence_closes_the_earlier_ones_whatever_our_estimate(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    """Our estimate of the exchange's time lags far behind (a stale offset): the buckets
    before the last one returned are closed all the same."""
    assert broker.client is not None
    exchange.set_volume("BTCUSDT", "0.2", since=T0)
    clock.now = T0 + 4_100
    broker.client.timestamp_offset = -10_000
    assert (await broker.traded_volume("BTCUSDT", T0)) == Volume(Decimal("0.8"), T0 + 4_000)


async def test_a_call_from_until_counts_nothing_twice(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    exchange.set_volume("BTCUSDT", "0.03", since=T0)
    exchange.set_volume("BTCUSDT", "0.07", since=T0 + 3_400)
    clock.now = T0 + 2_700
    trade(exchange, "0.002")
    clock.now = T0 + 4_600
    first = await broker.traded_volume("BTCUSDT", T0 + 300)  # mid-second: from T0 + 1 s
    assert asked(exchange)[-1]["startTime"] == str(T0 + 1_000)
    clock.now = T0 + 6_200
    trade(exchange, "0.003")  # in the bucket open at the first call
    clock.now = T0 + 9_000
    second = await broker.traded_volume("BTCUSDT", first.until)
    whole = await broker.traded_volume("BTCUSDT", T0 + 300)
    assert first is not None and second is not None and whole is not None
    assert first.until == T0 + 4_000 and second.until == whole.until == T0 + 9_000
    assert first.quantity + second.quantity == whole.quantity
    # 1 to 3.4 s at 0.03, 3.4 to 9 s at 0.07, and our two orders.
    assert whole.quantity == (Decimal("0.03") * Decimal("2.4") + Decimal("0.07") * Decimal("5.6")
                              + Decimal("0.005"))


async def test_more_than_1000_buckets_behind_is_read_1000_per_call(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    exchange.set_volume("BTCUSDT", "0.001", since=T0)
    clock.now = T0 + 1_500_500
    first = await broker.traded_volume("BTCUSDT", T0)
    assert first == Volume(Decimal("1.000"), T0 + 1_000_000)
    second = await broker.traded_volume("BTCUSDT", first.until)
    assert second == Volume(Decimal("0.500"), T0 + 1_500_000)  # the open one left out
    assert (await broker.traded_volume("BTCUSDT", second.until)) == Volume(Decimal(0),
                                                                          T0 + 1_500_000)
    assert [p["startTime"] for p in asked(exchange)] == [
        str(T0), str(T0 + 1_000_000), str(T0 + 1_500_000)]


async def test_an_unknown_symbol_is_unknown_volume_and_asks_nothing(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock) -> None:
    clock.now = T0 + 5_000
    assert await broker.traded_volume("NOPEUSDT", T0) is None
    assert asked(exchange) == []


async def test_a_failed_call_is_unknown_volume_logged_never_raised(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    exchange.set_volume("BTCUSDT", "0.5", since=T0)
    clock.now = T0 + 5_000
    exchange.inject("GET", KLINES, 500)
    exchange.inject("GET", KLINES, 429, code=-1003, msg="Too much request weight used.",
                    retry_after=1)
    with caplog.at_level(logging.INFO, logger=broker_module.__name__):
        assert await broker.traded_volume("BTCUSDT", T0) is None
        # A 429 is its guard's to share with every worker (then None: the next test).
        with pytest.raises(RateLimited):
            await broker.traded_volume("BTCUSDT", T0)
        # Listed when exchangeInfo was read, delisted since: Binance's -1121.
        del exchange.exchange.listings["ETHUSDT"]
        assert await broker.traded_volume("ETHUSDT", T0) is None
    lines = [r.getMessage() for r in caplog.records if "traded volume" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in caplog.records
                                   if "traded volume" in r.getMessage())
    assert "-1121" in lines[1]
    assert KEY not in caplog.text and SECRET not in caplog.text
    assert len(asked(exchange)) == 3
    # And the failures left nothing behind: the next call counts as before.
    assert (await broker.traded_volume("BTCUSDT", T0)) == Volume(Decimal("2.5"), T0 + 5_000)


async def test_each_call_takes_weight_2_from_the_shared_limits(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock,
        redis_client: aioredis.Redis) -> None:
    """Room for 4 weight (a day's window, so it does not roll over during the test): two
    calls, and the third is held back by our limiter, unknown for now, never sent."""
    exchange.set_volume("BTCUSDT", "0.5", since=T0)
    clock.now = T0 + 3_000
    plan = Plan((Window("test_weight", 86_400_000, 4, True),), max_wait_ms=50)
    guarded = limited(broker, Limiter(redis_client, Keys(), "bn", plan))
    assert emulating.reports_volume(guarded)
    assert await emulating.traded_volume(guarded, "BTCUSDT", T0) == Volume(Decimal("1.5"),
                                                                            T0 + 3_000)
    assert await emulating.traded_volume(guarded, "BTCUSDT", T0 + 3_000) == Volume(
        Decimal(0), T0 + 3_000)
    assert await emulating.traded_volume(guarded, "BTCUSDT", T0 + 3_000) is None
    assert len(asked(exchange)) == 2


async def test_a_429_pauses_the_account_for_every_worker_and_is_unknown_volume(
        broker: BinanceBroker, exchange: BinanceExchangeServer, clock: Clock,
        redis_client: aioredis.Redis) -> None:
    exchange.set_volume("BTCUSDT", "0.5", since=T0)
    clock.now = T0 + 3_000
    plan = Plan((Window("test_weight", 86_400_000, 1_000, True),), max_wait_ms=50)
    guarded = limited(broker, Limiter(redis_client, Keys(), "bn", plan))
    exchange.inject("GET", KLINES, 429, code=-1003, msg="Too much request weight used.",
                    retry_after=60)
    assert await emulating.traded_volume(guarded, "BTCUSDT", T0) is None
    # The pause is shared (in Redis): another worker's guard sends nothing either.
    other = limited(broker, Limiter(redis_client, Keys(), "bn", plan))
    assert await emulating.traded_volume(other, "BTCUSDT", T0) is None
    assert len(asked(exchange)) == 1


async def test_the_exchange_answers_klines_as_binance_does(
        exchange: BinanceExchangeServer, clock: Clock) -> None:
    """The local exchange's endpoint over HTTP, through python-binance: weight 2 in the
    usage header, Binance's refusals with their HTTP status."""
    cls = type("Local", (AsyncClient,), {"API_URL": exchange.url + "/api"})
    client: AsyncClient = await cls.create(KEY, SECRET)
    try:
        before = int(client.response.headers["X-MBX-USED-WEIGHT-1M"])
        rows = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=3)
        assert int(client.response.headers["X-MBX-USED-WEIGHT-1M"]) == before + 2
        assert [r[0] for r in rows] == [T0 - 120_000, T0 - 60_000, T0]
        for params, status, code in [
                ({"symbol": "BTCUSDT", "interval": "7s"}, 400, -1120),
                ({"symbol": "NOPEUSDT", "interval": "1s"}, 400, -1121),
                ({"symbol": "BTCUSDT", "interval": "1s", "limit": 1001}, 400, -1130)]:
            with pytest.raises(BinanceAPIException) as caught:
                await client.get_klines(**params)
            assert (caught.value.status_code, caught.value.code) == (status, code)
    finally:
        await client.close_connection()


async def test_with_the_real_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No clock held: the adapter's own estimate of Binance's time (its offset) against the
    exchange's running clock. The buckets counted are whole, closed, and end by now."""
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = BinanceExchangeServer(KEY, SECRET)
    await server.start()
    b = BinanceBroker("bn", account_for(server))
    try:
        await b.start()
        since = time.time_ns() // 1_000_000 // 1_000 * 1_000 - 3_000
        server.set_volume("BTCUSDT", "0.25", since=since)
        got = await b.traded_volume("BTCUSDT", since)
        assert got is not None
        assert since + 3_000 <= got.until <= server.exchange.now()
        assert got.until % 1_000 == 0
        assert got.quantity == Decimal("0.25") * (got.until - since) / 1_000
    finally:
        await b.close()
        await server.close()
