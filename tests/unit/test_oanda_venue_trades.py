"""The local OANDA venue's trades (devtools/oanda_exchange/venue.py): a fill reduces the
other side's trades oldest first and opens one with the rest; an entry's on-fill orders are
made on that trade (a trailing stop-loss too), refused at create or at fill as v20's reasons
say, and closing the trade cancels the others."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.oanda_exchange.venue import Rejected, Venue


def market(units: str, cid: str, **on_fill: Any) -> dict[str, Any]:
    return {"type": "MARKET", "instrument": "EUR_USD", "units": units,
            "clientExtensions": {"id": cid}, "tradeClientExtensions": {"id": cid}, **on_fill}


def test_a_fill_reduces_the_oldest_trade_then_opens_one_with_the_rest() -> None:
    v = Venue("A")
    v.create(market("100", "L1"))
    v.create(market("50", "L2"))
    reply = v.create(market("-120", "S1"))
    fill = reply["orderFillTransaction"]
    assert [c["units"] for c in fill["tradesClosed"]] == ["-100"]
    assert fill["tradeReduced"]["units"] == "-20" and "tradeOpened" not in fill
    assert [(t["state"], t["currentUnits"]) for t in v.trades.values()] == [
        ("CLOSED", "0"), ("OPEN", "30")]
    assert v.create(market("-40", "S2"))["orderFillTransaction"]["tradeOpened"]["units"] \
        == "-10"


def test_a_trailing_stop_loss_on_fill_follows_the_best_price_and_closes_the_trade() -> None:
    v = Venue("A")
    v.create(market("1000", "T1", trailingStopLossOnFill={
        "distance": "0.00100", "clientExtensions": {"id": "T1-ts"}}))
    ts = v.find("@T1-ts")
    assert ts is not None and (ts["type"], ts["trailingStopValue"]) == (
        "TRAILING_STOP_LOSS", "1.09910")  # the fill (the ask, 1.10010) less the distance
    v.set_price("EUR_USD", "1.10500", "1.10510")
    assert ts["trailingStopValue"] == "1.10400" and ts["state"] == "PENDING"
    v.set_price("EUR_USD", "1.10400", "1.10410")
    assert ts["state"] == "FILLED" and v.positions() == []


def test_on_fill_refusals_at_create_and_at_fill() -> None:
    v = Venue("A")
    with pytest.raises(Rejected) as caught:
        v.create(market("1000", "D1", takeProfitOnFill={
            "price": "1.2", "clientExtensions": {"id": "D1"}}))
    assert caught.value.body["errorCode"] == "ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS"
    with pytest.raises(Rejected) as caught:
        v.create(market("1000", "D2", stopLossOnFill={"price": "1.0", "timeInForce": "FOK"}))
    assert caught.value.body["errorCode"] == "STOP_LOSS_ON_FILL_TIME_IN_FORCE_INVALID"
    v.create(market("1", "taken"))
    reply = v.create(market("1000", "D3", takeProfitOnFill={
        "price": "1.2", "clientExtensions": {"id": "taken"}}))
    assert reply["orderCancelTransaction"]["reason"] == \
        "TAKE_PROFIT_ON_FILL_CLIENT_ORDER_ID_ALREADY_EXISTS"
    assert "orderFillTransaction" not in reply
