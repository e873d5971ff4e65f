"""Binance's market stream without I/O: a trade message's price (exact, combined or raw,
nothing else taken for one), the combined stream's URL, the market stream host of each
kind of account, and the shared PriceStream's rules for a seeded price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.brokers.binance.config import BinanceAccount
from executor.brokers.binance.market import (
    MarketStream,
    is_shutdown,
    parse,
    streams_url,
    trade_price,
)
from executor.brokers.prices import PriceCache


def account(**changes: object) -> BinanceAccount:
    return BinanceAccount(api_key_env="K", api_secret_env="S",
                          **changes)  # type: ignore[arg-type]


TRADE = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":9,'
         b'"p":"50000.12345678","q":"0.001","T":1,"m":true,"M":true}}')


def test_a_trade_gives_its_symbol_and_exact_price() -> None:
    message = parse(TRADE)
    assert message is not None
    assert trade_price(message) == ("BTCUSDT", Decimal("50000.12345678"))
    assert trade_price(message["data"]) == ("BTCUSDT", Decimal("50000.12345678"))  # raw
    # An unquoted number stays exact (never a float on the way).
    unquoted = parse(b'{"e":"trade","s":"ETHUSDT","p":0.1}')
    assert unquoted is not None and trade_price(unquoted) == ("ETHUSDT", Decimal("0.1"))


@pytest.mark.parametrize("raw", [
    b'{"result":null,"id":1}',  # a SUBSCRIBE's answer
    b'{"e":"aggTrade","s":"BTCUSDT","p":"1"}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","a":"2"}}',
    b'{"e":"trade","s":"BTCUSDT","p":"0"}',
    b'{"e":"trade","s":"BTCUSDT","p":"-1"}',
    b'{"e":"trade","s":"BTCUSDT","p":"NaN"}',
    b'{"e":"trade","s":"BTCUSDT","p":"abc"}',
    b'{"e":"trade","p":"1"}',
])
def test_nothing_else_is_taken_for_a_price(raw: bytes) -> None:
    message = parse(raw)
    assert message is not None and trade_price(message) is None


def test_unreadable_messages_and_a_shutdown() -> None:
    assert parse(b"not json") is None and parse(b"[1]") is None
    shutdown = parse(b'{"e":"serverShutdown","E":1}')
    assert shutdown is not None and is_shutdown(shutdown)
    message = parse(TRADE)
    assert message is not None and not is_shutdown(message)


def test_the_combined_stream_url() -> None:
    assert streams_url("wss://stream.binance.com:9443", ["ETHUSDT", "BTCUSDT"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade")


def test_the_market_stream_host_of_each_account() -> None:
    assert account().market_url() == "wss://stream.testnet.binance.vision"
    assert account(testnet=False).market_url() == "wss://stream.binance.com:9443"
    assert account(base_url="http://127.0.0.1:8090/").market_url() == (
        "ws://127.0.0.1:8090")
    assert account(base_url="https://sim.example").market_url() == (
        "wss://sim.example")
    assert account(market_stream_url="wss://data-stream.example/").market_url() == (
        "wss://data-stream.example")
    # Binance's own API hosts stream from Binance's stream hosts, not from themselves.
    assert account(testnet=False, base_url="https://api1.binance.com").market_url() == (
        "wss://stream.binance.com:9443")
    assert account(base_url="https://testnet.binance.vision").market_url() == (
        "wss://stream.testnet.binance.vision")
    assert account().price_stream is True


@pytest.mark.parametrize("changes, message", [
    ({"market_stream_url": "https://stream.example"}, "ws:// or wss://"),
    ({"market_stream_url": "wss://stream.binance.com:9443"}, "live stream"),
    ({"market_stream_url": "wss://data-stream.binance.vision"}, "live stream"),
    ({"price_stream_timeout_ms": 0}, "price_stream_timeout_ms must be positive"),
])
def test_bad_market_stream_settings_are_refused(changes: dict[str, object],
                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        account(**changes)


def test_a_live_account_may_read_the_live_stream() -> None:
    live = account(testnet=False, market_stream_url="wss://stream.binance.com:443")
    assert live.market_url() == "wss://stream.binance.com:443"


async def test_a_poll_seeds_a_price_only_on_the_connection_it_followed() -> None:
    stream = MarketStream("bn", 1000, PriceCache("binance bn", 1000))
    stream.subscribed = frozenset({"BTCUSDT"})
    stream.seed("BTCUSDT", Decimal("1"), stream.connection())  # none up: nothing
    assert stream._prices == {}
    stream._opened()
    before = stream.connection()
    assert before is not None
    stream.seed("ETHUSDT", Decimal("2"), before)  # not subscribed
    stream.seed("BTCUSDT", Decimal("3"), before - 1)  # polled during an older connection
    assert stream._prices == {}
    stream._priced("BTCUSDT", Decimal("4"))  # a trade came first: the poll is older
    stream.seed("BTCUSDT", Decimal("5"), before)
    assert stream._prices == {"BTCUSDT": Decimal("4")}
    assert stream.cache.last("BTCUSDT") == Decimal("4")
