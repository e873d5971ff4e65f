"""The Alpaca adapter's traded volume (base.VolumeSource, for an algorithm's participation
cap) against the local Alpaca's 1-minute bars, with one clock for the adapter and the
server: exact volumes of closed bars for a stock and a crypto pair, everyone's trades
(ours too); the open bar left for a later call; successive calls from ``until`` counting
every minute once; minutes without trades; the partial first minute left out; unknown
symbols and failures as None, never an exception."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from devtools.alpaca_exchange import AlpacaExchangeServer
from executor.brokers import emulating
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.alpaca.wire import BAR_FINAL_MS
from executor.brokers.base import Volume
from producer.contract import OrderSpec, OrderType, Side, WireDecimal
from tests.fakes.alpaca import KEY_ID, SECRET, alpaca, alpaca_account

__all__ = ["alpaca"]  # fixture

T0 = 1_796_137_200_000  # 2026-12-01T15:00:00Z
M = 60_000
F = BAR_FINAL_MS  # a bar counts this long after its end
STOCK_BARS = "/v2/stocks/{symbol}/bars"
CRYPTO_BARS = "/v1beta3/crypto/us/bars"


class Clock:
    """Epoch ms for the adapter, the same moment as a datetime for the server."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def moment(self) -> datetime.datetime:
        return (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
                + datetime.timedelta(milliseconds=self.ms))


@pytest.fixture
def clock(alpaca: AlpacaExchangeServer) -> Clock:
    found = Clock(T0)
    alpaca.engine.clock = found.moment
    return found


@pytest.fixture
async def broker(alpaca: AlpacaExchangeServer, clock: Clock) -> AsyncIterator[AlpacaBroker]:
    b = AlpacaBroker("ap", alpaca_account(alpaca), clock=clock)
    await b.start()
    yield b
    await b.close()


def buy(symbol: str, quantity: str) -> OrderSpec:
    return OrderSpec(account="ap", symbol=symbol, side=Side.BUY, type=OrderType.MARKET,
                     quantity=WireDecimal(quantity))


def asked(server: AlpacaExchangeServer, path: str) -> list[dict[str, str]]:
    return [r.query for r in server.log if r.path == path]


async def test_a_stock_counts_its_closed_bars_exactly_ours_included(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("AAPL", "1500", since=T0)
    clock.ms = T0 + M + 30_000
    filled = await broker.submit("v-1", buy("AAPL", "2"))  # in the 15:01 bar
    assert filled.filled_quantity == 2
    clock.ms = T0 + 3 * M + F + 20_000  # 15:02 final (its late trades in), 15:03 open
    assert await broker.traded_volume("AAPL", T0) == Volume(Decimal("4502"), T0 + 3 * M)
    assert asked(alpaca, STOCK_BARS) == [{"timeframe": "1Min", "start": "2026-12-01T15:00:00Z",
                                          "limit": "1000", "feed": "iex"}]
    assert alpaca.log[-1].headers["APCA-API-KEY-ID"] == KEY_ID


async def test_a_crypto_pair_counts_fractional_volume_without_rounding(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("BTC/USD", "0.12345678", since=T0)
    clock.ms = T0 + 2 * M + 1
    await broker.submit("v-2", buy("BTC/USD", "0.001"))  # in the open 15:02 bar
    clock.ms = T0 + 3 * M + F
    assert await broker.traded_volume("BTC/USD", T0) == Volume(Decimal("0.37137034"),
                                                               T0 + 3 * M)
    assert asked(alpaca, CRYPTO_BARS) == [{"timeframe": "1Min", "symbols": "BTC/USD",
                                           "start": "2026-12-01T15:00:00Z", "limit": "1000"}]


async def test_the_open_bar_is_counted_once_closed_and_successive_calls_count_each_minute_once(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("AAPL", "100", since=T0)
    clock.ms = T0 + 2 * M + 30_000
    first = await broker.traded_volume("AAPL", T0)
    assert first == Volume(Decimal("200"), T0 + 2 * M)
    # The server answered the open 15:02 bar; it was not counted. It trades on.
    assert alpaca.engine.bars("AAPL", "1Min", None, None, None, None)[0][-1]["v"] == 100
    await broker.submit("v-3", buy("AAPL", "5"))
    again = await broker.traded_volume("AAPL", first.until)
    assert again == Volume(Decimal(0), first.until)  # still open: nothing, nothing twice
    clock.ms = T0 + 3 * M + 5_000
    # Closed, but not final: a trade reported late may still fall in it.
    assert await broker.traded_volume("AAPL", again.until) == Volume(Decimal(0), first.until)
    clock.ms = T0 + 3 * M + F + 5_000
    closed = await broker.traded_volume("AAPL", again.until)
    assert closed == Volume(Decimal("105"), T0 + 3 * M)  # the whole minute, ours too
    assert await broker.traded_volume("AAPL", closed.until) == Volume(Decimal(0), T0 + 3 * M)
    # Asked in pieces or at once: the same volume over the same minutes.
    assert await broker.traded_volume("AAPL", T0) == Volume(
        first.quantity + again.quantity + closed.quantity, closed.until)


async def test_minutes_without_trades_have_no_bar_and_are_passed_once_a_later_one_closes(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("MSFT", "10", since=T0)
    alpaca.set_flow("MSFT", "0", since=T0 + M)  # 15:01 and 15:02: no trades
    alpaca.set_flow("MSFT", "7", since=T0 + 3 * M)
    clock.ms = T0 + 3 * M + 10_000
    # 15:00 closed; nothing after it closed yet: until stays at the end of 15:00.
    assert await broker.traded_volume("MSFT", T0) == Volume(Decimal(10), T0 + M)
    # From 15:01 nothing is closed at all: until stays where it was asked from.
    assert await broker.traded_volume("MSFT", T0 + M) == Volume(Decimal(0), T0 + M)
    clock.ms = T0 + 4 * M + F
    assert await broker.traded_volume("MSFT", T0 + M) == Volume(Decimal(7), T0 + 4 * M)
    page = asked(alpaca, STOCK_BARS)[-1]
    assert page["start"] == "2026-12-01T15:01:00Z"


async def test_the_partial_first_minute_is_not_counted(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("AAPL", "30", since=T0)
    clock.ms = T0 + 3 * M + F
    since = T0 + 45_000  # in the 15:00 bar, which holds trades from before it
    assert await broker.traded_volume("AAPL", since) == Volume(Decimal(60), T0 + 3 * M)
    assert asked(alpaca, STOCK_BARS)[-1]["start"] == "2026-12-01T15:01:00Z"


async def test_one_page_per_call_the_rest_from_until(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("BTC/USD", "0.5", since=T0)
    clock.ms = T0 + 1500 * M + F  # 1,500 final bars, one open
    first = await broker.traded_volume("BTC/USD", T0)
    assert first == Volume(Decimal("500.0"), T0 + 1000 * M)
    assert await broker.traded_volume("BTC/USD", first.until) == Volume(
        Decimal("250.0"), T0 + 1500 * M)


async def test_a_symbol_the_account_does_not_trade_is_unknown_and_not_asked(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("TSLA", "5", since=T0)
    clock.ms = T0 + 5 * M
    assert await broker.traded_volume("TSLA", T0) is None
    assert await broker.traded_volume("ETH/USD", T0) is None
    assert asked(alpaca, STOCK_BARS) == asked(alpaca, CRYPTO_BARS) == []


@pytest.mark.parametrize(("path", "symbol", "status"), [
    (STOCK_BARS, "AAPL", 500), (STOCK_BARS, "AAPL", 429), (STOCK_BARS, "AAPL", 403),
    (CRYPTO_BARS, "BTC/USD", 503), (CRYPTO_BARS, "BTC/USD", 422)])
async def test_a_failure_of_the_market_data_api_is_unknown_never_an_exception(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock, path: str,
        symbol: str, status: int) -> None:
    alpaca.set_flow(symbol, "3", since=T0)
    clock.ms = T0 + 2 * M + F
    alpaca.inject("GET", path, status, code=None if status == 403 else 50010000)
    assert await broker.traded_volume(symbol, T0) is None
    assert alpaca.statuses[status] == 1
    assert await broker.traded_volume(symbol, T0) == Volume(Decimal(6), T0 + 2 * M)


async def test_a_dropped_connection_is_unknown(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("AAPL", "3", since=T0)
    clock.ms = T0 + 2 * M
    alpaca.drop("GET", STOCK_BARS, times=2)  # aiohttp sends a GET again once
    assert await broker.traded_volume("AAPL", T0) is None


async def test_the_adapter_reports_volume_to_the_emulator(
        alpaca: AlpacaExchangeServer, broker: AlpacaBroker, clock: Clock) -> None:
    alpaca.set_flow("AAPL", "2", since=T0)
    clock.ms = T0 + M + F
    assert emulating.reports_volume(broker)
    assert await emulating.traded_volume(broker, "AAPL", T0) == Volume(Decimal(2), T0 + M)


@pytest.mark.parametrize(("query", "message"), [
    ({"timeframe": "5Min"}, "invalid timeframe"), ({}, "invalid timeframe"),
    ({"timeframe": "1Min", "start": "noon"}, "invalid start"),
    ({"timeframe": "1Min", "limit": "0"}, "invalid limit")])
async def test_the_local_server_refuses_bad_bars_requests_as_alpaca_does(
        alpaca: AlpacaExchangeServer, query: dict[str, str], message: str) -> None:
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET}
    async with aiohttp.ClientSession(headers=headers) as session:
        for url, extra in [(f"{alpaca.url}/v2/stocks/AAPL/bars", {}),
                           (f"{alpaca.url}/v1beta3/crypto/us/bars", {"symbols": "BTC/USD"})]:
            async with session.get(url, params={**query, **extra}) as response:
                assert response.status == 422
                body = await response.json()
                assert body["code"] == 42210000 and body["message"].startswith(message)
