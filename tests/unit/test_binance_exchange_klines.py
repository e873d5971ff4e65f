"""The local Binance exchange's klines (devtools/binance_exchange/klines.py): Binance's row
format, each bucket's volume (others' flow plus the exchange's own trades), the bucket still
filling returned open, which buckets startTime, endTime and limit select, and Binance's
refusals (errors.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devtools.binance_exchange.engine import ApiError, Exchange

T0 = 1_800_000_000_000  # a whole second (and minute)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def at(now: int) -> tuple[Exchange, Clock]:
    clock = Clock(now)
    return Exchange(clock), clock


def klines(ex: Exchange, **params: str) -> list[list[object]]:
    return ex.klines({"symbol": "BTCUSDT", "interval": "1s", **params})


def refusal(ex: Exchange, **params: str) -> tuple[int, int, str]:
    with pytest.raises(ApiError) as caught:
        ex.klines(params)
    return caught.value.status, caught.value.code, caught.value.msg


def test_rows_in_binance_format_with_the_flow_and_the_open_bucket_so_far() -> None:
    ex, _ = at(T0 + 2_250)
    ex.set_volume("BTCUSDT", Decimal("0.4"), since=T0)
    rows = klines(ex, startTime=str(T0))
    assert rows[0] == [T0, "50000.00000000", "50000.00000000", "50000.00000000",
                       "50000.00000000", "0.40000000", T0 + 999, "20000.00000000", 0,
                       "0.20000000", "10000.00000000", "0"]
    assert [(r[0], r[5], r[6]) for r in rows] == [
        (T0, "0.40000000", T0 + 999), (T0 + 1_000, "0.40000000", T0 + 1_999),
        (T0 + 2_000, "0.10000000", T0 + 2_999)]  # open: 250 ms of it so far


def test_the_exchanges_own_trades_count_in_their_bucket() -> None:
    ex, clock = at(T0 + 1_300)
    ex.set_volume("BTCUSDT", Decimal("0.4"), since=T0)
    ex.place({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"})
    clock.now = T0 + 3_000
    ex.set_price("BTCUSDT", Decimal("51000"))
    rows = klines(ex, startTime=str(T0), endTime=str(T0 + 2_000))
    assert [r[5] for r in rows] == ["0.40000000", "0.41000000", "0.40000000"]
    busy = rows[1]
    assert busy[1:5] == ["50000.00000000", "51000.00000000", "50000.00000000",
                         "50000.00000000"]  # our trade at 50000; the flow at the price now
    assert (busy[8], busy[9]) == (1, "0.21000000")  # our taker buy counted as one


def test_a_minute_bucket_adds_up_its_seconds() -> None:
    ex, _ = at(T0 + 150_000)
    ex.set_volume("BTCUSDT", Decimal("0.001"), since=T0)
    ex.set_volume("BTCUSDT", Decimal("0.002"), since=T0 + 30_000)
    rows = ex.klines({"symbol": "BTCUSDT", "interval": "1m", "startTime": str(T0)})
    assert [(r[0], r[5], r[6]) for r in rows] == [
        (T0, "0.09000000", T0 + 59_999), (T0 + 60_000, "0.12000000", T0 + 119_999),
        (T0 + 120_000, "0.06000000", T0 + 179_999)]


def test_start_end_and_limit_select_as_binance_does() -> None:
    ex, _ = at(T0 + 10_500)
    opens = [r[0] for r in klines(ex)]
    assert len(opens) == 500 and opens[-1] == T0 + 10_000  # default: the latest 500
    # startTime is inclusive on the open time; a mid-bucket start begins at the next one.
    assert [r[0] for r in klines(ex, startTime=str(T0 + 1), limit="2")] == [
        T0 + 1_000, T0 + 2_000]
    assert [r[0] for r in klines(ex, endTime=str(T0 + 3_999), limit="2")] == [
        T0 + 2_000, T0 + 3_000]
    assert len(klines(ex, startTime=str(T0 - 2_000_000), limit="1000")) == 1000
    assert klines(ex, startTime=str(T0 + 11_000)) == []  # not yet begun


def test_refusals_with_binances_codes() -> None:
    ex, _ = at(T0)
    assert refusal(ex, symbol="NOPE", interval="1s") == (400, -1121, "Invalid symbol.")
    assert refusal(ex, symbol="BTCUSDT", interval="2s") == (400, -1120, "Invalid interval.")
    assert refusal(ex, symbol="BTCUSDT")[1] == -1102
    assert refusal(ex, symbol="BTCUSDT", interval="1s", limit="1001") == (
        400, -1130, "Data sent for parameter 'limit' is not valid.")
    assert refusal(ex, symbol="BTCUSDT", interval="1s", limit="0")[1] == -1130
    assert refusal(ex, symbol="BTCUSDT", interval="1s", startTime="-5")[1] == -1100
