"""The local Binance exchange's trailing stops against the scenarios of Binance's own
trailing stop FAQ (binance-spot-api-docs faqs/trailing-stop-faq.md), with its numbers, and
its refusals as errors.md and filters.md word them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devtools.binance_exchange.engine import ApiError, Exchange


def placed(ex: Exchange, **params: str) -> str:
    base = {"symbol": "BTCUSDT", "quantity": "0.01", "newClientOrderId": "t1",
            "newOrderRespType": "FULL"}
    reply = ex.place(base | params)
    return str(reply["status"])


def status(ex: Exchange) -> str:
    return str(ex.find({"symbol": "BTCUSDT", "origClientOrderId": "t1"}).view()["status"])


def walk(ex: Exchange, *prices: str) -> None:
    for price in prices:
        ex.set_price("BTCUSDT", Decimal(price))


def refusal(ex: Exchange, **params: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        placed(ex, **params)
    return caught.value


def test_scenario_e_a_sell_without_stop_price_tracks_from_placement() -> None:
    ex = Exchange()
    walk(ex, "40000")
    assert placed(ex, side="SELL", type="STOP_LOSS", trailingDelta="700") == "NEW"
    walk(ex, "42000", "39500", "45500", "42316")  # 42316 > 45500 * 0.93
    assert status(ex) == "NEW"
    order = ex.find({"symbol": "BTCUSDT", "origClientOrderId": "t1"})
    assert order.water == Decimal("45500") and not order.working
    assert order.view()["trailingDelta"] == 700 and order.view()["trailingTime"] > 0
    walk(ex, "42315")  # = 45500 * 0.93: triggers, then a market sell
    assert status(ex) == "FILLED"
    assert [t["price"] for t in ex.trades] == ["42315.00000000"]


def test_scenario_d_a_take_profit_sell_activates_at_its_stop_price() -> None:
    ex = Exchange()
    walk(ex, "40000")
    placed(ex, side="SELL", type="TAKE_PROFIT", stopPrice="42000", trailingDelta="750")
    walk(ex, "41500", "39000")  # not tracking yet: a fall does nothing
    order = ex.find({"symbol": "BTCUSDT", "origClientOrderId": "t1"})
    assert order.water is None and order.view()["trailingTime"] == -1
    walk(ex, "42000", "45000", "44000", "46500", "43013")
    assert status(ex) == "NEW" and order.water == Decimal("46500")
    walk(ex, "43012.5")  # = 46500 * 0.925
    assert status(ex) == "FILLED"


def test_a_take_profit_buy_trails_the_low_after_its_stop_price() -> None:
    ex = Exchange()
    walk(ex, "40000")
    placed(ex, side="BUY", type="TAKE_PROFIT", stopPrice="38000", trailingDelta="850")
    walk(ex, "42000", "38000", "37000", "39000", "38000", "40144")
    assert status(ex) == "NEW"
    walk(ex, "40145")  # = 37000 * 1.085 (scenario C)
    assert status(ex) == "FILLED"


def test_a_stop_price_met_at_placement_starts_tracking_at_once() -> None:
    ex = Exchange()
    walk(ex, "50000")
    placed(ex, side="SELL", type="TAKE_PROFIT", stopPrice="49000", trailingDelta="100")
    order = ex.find({"symbol": "BTCUSDT", "origClientOrderId": "t1"})
    assert order.water == Decimal("50000")
    walk(ex, "49500")
    assert status(ex) == "FILLED"


def test_the_filter_and_the_errors_as_binance_words_them() -> None:
    ex = Exchange()  # BTCUSDT: TRAILING_DELTA 10 to 2000 either way
    err = refusal(ex, side="SELL", type="STOP_LOSS", trailingDelta="2001")
    assert (err.code, err.msg) == (-1013, "Filter failure: TRAILING_DELTA")
    assert refusal(ex, side="BUY", type="TAKE_PROFIT", trailingDelta="9").msg == (
        "Filter failure: TRAILING_DELTA")
    assert refusal(ex, side="BUY", type="MARKET", trailingDelta="100").code == -1106
    assert refusal(ex, side="SELL", type="STOP_LOSS", trailingDelta="1.5").code == -1100
    ex.listings["BTCUSDT"].allow_trailing = False
    err = refusal(ex, side="SELL", type="STOP_LOSS", trailingDelta="100")
    assert (err.code, err.msg) == (-2010, "Trailing stop orders are not supported for this "
                                          "symbol.")
    assert ex.exchange_info({})["symbols"][0]["allowTrailingStop"] is False


def test_a_stop_without_a_trailing_delta_still_needs_its_stop_price() -> None:
    ex = Exchange()
    assert refusal(ex, side="SELL", type="STOP_LOSS").code == -1102
    err = refusal(ex, side="BUY", type="TAKE_PROFIT", stopPrice="51000")
    assert err.msg == "Order would trigger immediately."


def test_an_execution_report_carries_the_trailing_fields() -> None:
    ex = Exchange()
    events: list[dict[str, object]] = []
    ex.listeners.append(events.append)
    placed(ex, side="SELL", type="STOP_LOSS", trailingDelta="100")
    report = next(e for e in events if e["e"] == "executionReport")
    assert report["d"] == 100 and report["o"] == "STOP_LOSS" and report["X"] == "NEW"
