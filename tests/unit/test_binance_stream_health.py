"""A lost user data stream is logged once, then once every repeat_s while it stays lost,
and once when it is back; every failed attempt is counted, and the gauge says up or not."""

from __future__ import annotations

import logging

import pytest

from executor.brokers.binance.stream import QuietConnectLog, log
from executor.brokers.stream_health import StreamHealth
from executor.infra.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, name: str, account: str = "bn") -> float | None:
    return metrics.registry.get_sample_value(name, {"account": account, "feed": "orders"})


def test_a_lost_stream_is_told_once_then_once_a_minute_and_counted_every_time(
        caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = Clock(), Metrics()
    health = StreamHealth("bn", metrics, repeat_s=60, clock=clock, logger=log,
                          what="binance bn: user data stream")
    health.up()
    assert value(metrics, "orderstream_broker_stream_up") == 1
    with caplog.at_level(logging.DEBUG, logger="executor.brokers.binance.stream"):
        for _ in range(150):  # a reconnect attempt every second for 150 s
            health.lost("cannot subscribe (HTTP 404)")
            clock.now += 1
        health.up()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in lines] == [
        "binance bn: user data stream lost",
        "binance bn: user data stream still lost after 60 s",
        "binance bn: user data stream still lost after 120 s"]
    assert "HTTP 404" in lines[0].getMessage()
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert back == ["binance bn: user data stream back after 150 s (150 failed attempts)"]
    assert value(metrics, "orderstream_broker_stream_failures_total") == 150
    assert value(metrics, "orderstream_broker_stream_up") == 1


def test_losing_it_again_after_it_came_back_is_told_again(
        caplog: pytest.LogCaptureFixture) -> None:
    health = StreamHealth("bn", None, clock=Clock(), logger=log, what="binance bn: user data")
    with caplog.at_level(logging.WARNING):
        health.lost("a")
        health.lost("b")
        health.up()
        health.lost("c")
    assert len(caplog.records) == 2 and "(c)" in caplog.records[1].getMessage()


def test_python_binance_connection_errors_become_debug_and_others_stay(
        caplog: pytest.LogCaptureFixture) -> None:
    quiet = QuietConnectLog(logging.getLogger("binance.ws.reconnecting_websocket"))
    with caplog.at_level(logging.DEBUG, logger="binance.ws.reconnecting_websocket"):
        quiet.error("Failed to connect to websocket: server rejected WebSocket connection: "
                    "HTTP 404")
        quiet.error("Error ensuring WebSocket connection: HTTP 404")
        quiet.error("Unknown exception: KeyError (x)")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG, logging.ERROR]
