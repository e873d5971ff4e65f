"""The trade_updates stream's messages (executor/brokers/alpaca/stream.py) and where the
stream is."""

from __future__ import annotations

import json

from executor.brokers.alpaca import stream
from executor.brokers.alpaca.config import AlpacaAccount


def test_auth_and_listen_messages() -> None:
    assert json.loads(stream.auth_message("k", "s")) == {
        "action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}}
    assert json.loads(stream.LISTEN) == {"action": "listen",
                                         "data": {"streams": ["trade_updates"]}}


def test_answers_are_read() -> None:
    ok = stream.parse(b'{"stream":"authorization","data":{"action":"authenticate",'
                      b'"status":"authorized"}}')
    assert stream.authorized(*ok)
    no = stream.parse('{"stream":"authorization","data":{"status":"unauthorized",'
                      '"message":"access key verification failed"}}')
    assert not stream.authorized(*no)
    assert stream.refusal(*no) == "unauthorized access key verification failed"
    assert stream.refusal("", {}) == "answered something unreadable instead of authorization"
    assert stream.listening(*stream.parse(
        '{"stream":"listening","data":{"streams":["trade_updates"]}}'))
    assert not stream.listening(*stream.parse('{"stream":"listening","data":{"streams":[]}}'))
    assert stream.parse("not json") == ("", {})
    assert stream.parse("[1]") == ("", {})


def test_an_update_gives_its_order() -> None:
    order = {"id": "x", "client_order_id": "c", "filled_qty": "1"}
    assert stream.update_order("trade_updates", {"event": "fill", "order": order}) == order
    assert stream.update_order("trade_updates", {"event": "fill"}) is None
    assert stream.update_order("trade_updates", {"order": {"id": "x"}}) is None
    assert stream.update_order("listening", {"order": order}) is None


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [stream.backoff_s(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert stream.backoff_s(10_000) == 30


def test_stream_url() -> None:
    base = dict(key_id_env="K", secret_env="S")
    assert AlpacaAccount(**base).stream_ws_url() == "wss://paper-api.alpaca.markets/stream"
    assert AlpacaAccount(**base, paper=False).stream_ws_url() == (
        "wss://api.alpaca.markets/stream")
    assert AlpacaAccount(**base, base_url="http://127.0.0.1:8091/").stream_ws_url() == (
        "ws://127.0.0.1:8091/stream")
    assert AlpacaAccount(**base, base_url="https://x", stream_url="wss://y/s"
                         ).stream_ws_url() == "wss://y/s"
