"""The transactions stream's pure logic: lines, which transactions change our orders, the
cursor that tells each transaction once and sees gaps, and the reconnect backoff."""

from __future__ import annotations

from executor.brokers.oanda.stream import Cursor, client_change, parse_line
from executor.brokers.stream_health import Backoff


def test_lines_are_objects_and_bad_ones_are_skipped() -> None:
    assert parse_line(b'{"type":"HEARTBEAT","lastTransactionID":"7"}\n') == {
        "type": "HEARTBEAT", "lastTransactionID": "7"}
    assert parse_line(b"\n") is None
    assert parse_line(b"{not json") is None
    assert parse_line(b"[1, 2]") is None


def test_only_fills_and_cancels_with_a_client_id_change_our_orders() -> None:
    assert client_change({"type": "ORDER_FILL", "clientOrderID": "c-1"}) == "c-1"
    assert client_change({"type": "ORDER_CANCEL", "clientOrderID": "c-2"}) == "c-2"
    assert client_change({"type": "ORDER_FILL"}) is None  # not placed by a client id
    assert client_change({"type": "LIMIT_ORDER", "clientOrderID": "c-3"}) is None
    assert client_change({"type": "DAILY_FINANCING"}) is None


def test_the_cursor_tells_each_transaction_once_and_sees_gaps() -> None:
    cursor = Cursor()
    cursor.start("10")
    cursor.start("99")  # only the first start counts
    assert cursor.last == 10
    assert not cursor.fresh({"id": "10"})
    assert cursor.fresh({"id": "11"})
    assert not cursor.fresh({"id": "11"})  # told by the stream and by sinceid: once
    assert not cursor.fresh({"id": "x"})
    assert not cursor.behind({"type": "HEARTBEAT", "lastTransactionID": "11"})
    assert cursor.behind({"type": "HEARTBEAT", "lastTransactionID": "13"})
    assert cursor.last == 11  # a heartbeat does not move it: the gap is healed first


def test_a_cursor_without_a_start_takes_the_first_heartbeat() -> None:
    cursor = Cursor()
    assert not cursor.behind({"lastTransactionID": "5"})
    assert cursor.last == 5


def test_reconnects_back_off_doubling_to_a_cap_and_reset_when_up() -> None:
    backoff = Backoff(first_s=0.5, cap_s=4)
    delays = []
    for _ in range(6):
        delays.append(backoff.delay())
        backoff.failed()
    assert delays == [0, 0.5, 1, 2, 4, 4]
    backoff.reset()
    assert backoff.delay() == 0


def test_jitter_draws_a_share_of_each_delay_at_random_within_the_cap() -> None:
    draws = iter([0.0, 1.0, 0.5, 1.0])
    backoff = Backoff(first_s=1, cap_s=2, jitter=0.5, rng=lambda: next(draws))
    assert backoff.delay() == 0  # the first attempt never waits
    delays = []
    for _ in range(4):
        backoff.failed()
        delays.append(backoff.delay())
    assert delays == [1, 1, 1.5, 1]  # 1, 2, 2, 2 less 0-50 %
