"""Alpaca's market data stream messages (executor/brokers/alpaca/quotes.py) and where the
streams are."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from executor.brokers.alpaca import quotes
from executor.brokers.alpaca.config import AlpacaAccount

D = Decimal


def test_auth_and_subscribe_messages() -> None:
    assert json.loads(quotes.auth_message("k", "s")) == {"action": "auth", "key": "k",
                                                         "secret": "s"}
    assert json.loads(quotes.subscribe_message({"MSFT", "AAPL"})) == {
        "action": "subscribe", "quotes": ["AAPL", "MSFT"]}


def test_a_quote_is_its_exact_mid_and_one_side_when_the_other_is_zero() -> None:
    [q] = quotes.parse(b'[{"T":"q","S":"AAPL","bx":"V","bp":123.4467,"bs":1,'
                       b'"ax":"V","ap":123.4667,"as":2,"t":"2026-12-04T15:00:00.1Z"}]')
    assert quotes.quote_of(q) == ("AAPL", D("123.4567"))
    [bid_only] = quotes.parse('[{"T":"q","S":"BTC/USD","bp":60000.5,"ap":0}]')
    assert quotes.quote_of(bid_only) == ("BTC/USD", D("60000.5"))
    [none] = quotes.parse('[{"T":"q","S":"GME","bp":0,"ap":0}]')
    assert quotes.quote_of(none) == ("GME", None)
    assert quotes.quote_of({"T": "t", "S": "AAPL", "p": 1}) is None


def test_control_messages_are_read() -> None:
    [ack] = quotes.parse('[{"T":"subscription","trades":[],"quotes":["AAPL","MSFT"],'
                         '"bars":[]}]')
    assert quotes.acknowledged(ack) == frozenset({"AAPL", "MSFT"})
    [error] = quotes.parse('[{"T":"error","code":402,"msg":"auth failed"}]')
    assert quotes.acknowledged(error) is None
    assert quotes.said(error) == "402 auth failed"
    assert quotes.parse(b"\x81\xa1T") == [] and quotes.parse("{}") == [{}]


@pytest.mark.parametrize(("changes", "stocks", "crypto"), [
    ({}, "wss://stream.data.alpaca.markets/v2/iex",
     "wss://stream.data.alpaca.markets/v1beta3/crypto/us"),
    ({"paper": False, "feed": "sip"}, "wss://stream.data.alpaca.markets/v2/sip",
     "wss://stream.data.alpaca.markets/v1beta3/crypto/us"),
    ({"base_url": "http://127.0.0.1:8091"}, "ws://127.0.0.1:8091/v2/iex",
     "ws://127.0.0.1:8091/v1beta3/crypto/us"),
    ({"base_url": "https://x.test", "data_stream_url": "wss://y.test/"},
     "wss://y.test/v2/iex", "wss://y.test/v1beta3/crypto/us"),
])
def test_where_the_streams_are(changes: dict[str, object], stocks: str, crypto: str) -> None:
    account = AlpacaAccount(key_id_env="K", secret_env="S", **changes)  # type: ignore[arg-type]
    assert account.quote_stream_urls() == (stocks, crypto)


def test_a_stream_url_must_be_a_websocket_one() -> None:
    with pytest.raises(ValueError, match="data_stream_url"):
        AlpacaAccount(key_id_env="K", secret_env="S", data_stream_url="https://x.test")
    with pytest.raises(ValueError, match="price_stream_timeout_ms"):
        AlpacaAccount(key_id_env="K", secret_env="S", price_stream_timeout_ms=0)
