"""The local Alpaca's trailing_stop and the local OANDA's MARKET_IF_TOUCHED, as their
documents describe them, without a server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from devtools.alpaca_exchange.engine import AlpacaError, Engine
from devtools.oanda_exchange.venue import Venue

D = Decimal


def trailing(engine: Engine, side: str = "sell", **trail: str) -> dict[str, Any]:
    return engine.place({"symbol": "AAPL", "side": side, "type": "trailing_stop", "qty": "3",
                         "time_in_force": "gtc", **trail})


def test_alpacas_trailing_sell_keeps_its_hwm_and_fires_below_the_trail() -> None:
    engine = Engine()
    order = trailing(engine, trail_percent="1")
    assert (order["status"], order["hwm"], order["stop_price"]) == ("new", "190", "188.1")
    for price in ("200", "199", "198.01"):  # up to 200 (stop 198), then above the stop
        engine.set_price("AAPL", D(price))
    now = engine.get(order["id"])
    assert (now["status"], now["hwm"], now["stop_price"]) == ("new", "200", "198")
    engine.set_price("AAPL", D("198"))
    done = engine.get(order["id"])
    assert (done["status"], done["filled_qty"], done["filled_avg_price"]) == (
        "filled", "3", "198")


def test_alpacas_trailing_buy_mirrors_it() -> None:
    engine = Engine()
    order = trailing(engine, "buy", trail_price="1.5")
    assert (order["hwm"], order["stop_price"]) == ("190", "191.5")
    engine.set_price("AAPL", D("185"))
    engine.set_price("AAPL", D("186.49"))
    assert engine.get(order["id"])["status"] == "new"
    engine.set_price("AAPL", D("186.5"))
    assert engine.get(order["id"])["status"] == "filled"


@pytest.mark.parametrize("body", [
    {},  # neither trail field
    {"trail_price": "1", "trail_percent": "1"},  # both
    {"trail_price": "1", "time_in_force": "ioc"},
])
def test_alpaca_refuses_a_malformed_trailing_stop(body: dict[str, str]) -> None:
    with pytest.raises(AlpacaError) as caught:
        Engine().place({"symbol": "AAPL", "side": "sell", "type": "trailing_stop",
                        "qty": "1", "time_in_force": "gtc", **body})
    assert caught.value.status == 422


def mit(venue: Venue, units: str, price: str, trigger: str | None = None) -> dict[str, Any]:
    request = {"type": "MARKET_IF_TOUCHED", "instrument": "EUR_USD", "units": units,
               "price": price, "timeInForce": "GTC"}
    if trigger is not None:
        request["triggerCondition"] = trigger
    reply = venue.create(request)
    return venue.orders[reply["orderCreateTransaction"]["id"]]


def test_oandas_market_if_touched_goes_the_way_the_market_was_at_creation() -> None:
    venue = Venue("101-004-1-001")  # EUR_USD bid 1.10000, ask 1.10010
    dip = mit(venue, "100", "1.09", "MID")  # from above: fills on a fall
    rise = mit(venue, "100", "1.11", "MID")  # from below: fills on a rise (a stop)
    assert (dip["initialMarketPrice"], rise["initialMarketPrice"]) == ("1.10005", "1.10005")
    venue.set_price("EUR_USD", "1.09000", "1.09010")  # mid 1.09005
    assert (dip["state"], rise["state"]) == ("PENDING", "PENDING")
    venue.set_price("EUR_USD", "1.08995", "1.09005")  # mid 1.09: touched
    assert dip["state"] == "FILLED"
    fill = venue.transactions[dip["fillingTransactionID"]]
    assert fill["price"] == "1.09005"  # at the ask: fills are at the order's own side
    venue.set_price("EUR_USD", "1.10995", "1.11005")  # mid 1.11
    assert rise["state"] == "FILLED"


def test_oandas_default_trigger_is_the_ask_for_a_buy() -> None:
    venue = Venue("101-004-1-001")
    order = mit(venue, "100", "1.09")
    assert order["initialMarketPrice"] == "1.10010"
    venue.set_price("EUR_USD", "1.08990", "1.09000")
    assert order["state"] == "FILLED"
