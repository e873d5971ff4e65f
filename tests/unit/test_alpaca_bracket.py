"""Which entries go to Alpaca as a bracket / oto and how (alpaca/bracket.py), what becomes
of a native exit when the workers' exit arrives (native_lists.adoption), and the adopted
exit's report from its legs. Pure: no server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from executor.brokers.alpaca import bracket, reconcile
from executor.brokers.base import BrokerStatus
from executor.brokers.native_lists import Adoption, adoption, entry_of, first_exit_id
from executor.model.lists import exit_request
from executor.model.order import spec_from_request
from producer.contract import (
    OrderSpec,
    OrderType,
    OtoTrigger,
    Side,
    TimeInForce,
    WireDecimal,
)

D = WireDecimal


def entry(quantity: str = "5", price: str | None = "189", *, tp: str | None = "195",
          sl: str | None = "185", side: Side = Side.BUY, **kw: Any) -> OrderSpec:
    fields: dict[str, Any] = {"type": OrderType.LIMIT, "oto_trigger": OtoTrigger.FULL,
                              "time_in_force": TimeInForce.GTC, **kw}
    return OrderSpec(account="ap", symbol=fields.pop("symbol", "AAPL"), side=side,
                     quantity=D(quantity), price=None if price is None else D(price),
                     take_profit=None if tp is None else D(tp),
                     stop_loss=None if sl is None else D(sl), **fields)


def test_a_bracket_entry_goes_native_with_the_workers_exit() -> None:
    exit_ = bracket.native_exit("E1", entry())
    assert exit_ is not None
    expected = spec_from_request(exit_request("E1", entry(), Decimal(5), 1), "ap")
    assert exit_ == expected and exit_.type is OrderType.OCO and exit_.side is Side.SELL
    for kind in (OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT):
        spec = entry(type=kind, price=None if kind is not OrderType.STOP_LIMIT else "189",
                     stop_price=None if kind is OrderType.MARKET else D("188"))
        assert bracket.native_exit("E1", spec) is not None, kind


@pytest.mark.parametrize(("spec", "why"), [
    (entry(oto_trigger=OtoTrigger.PARTIAL), "legs wait for the complete fill"),
    (entry(oto_trigger=None, tp=None, sl=None), "no list"),
    (entry(time_in_force=TimeInForce.DAY), "day legs expire at the close"),
    (entry(time_in_force=TimeInForce.IOC), "day or gtc only"),
    (entry(reduce_only=True), "an entry, not an exit"),
    (entry(symbol="BTC/USD", quantity="1", price="59000", tp="61000", sl="58000"),
     "crypto: simple only"),
    (entry(quantity="2.5"), "whole shares only"),
    (entry(type=OrderType.TRAILING_STOP, price=None, trailing_offset=D("1")),
     "no trailing entry"),
    (entry(price="185.005"), "the stop a cent below the entry's limit"),
    (entry(side=Side.SELL, price="190", tp="185", sl="190.005"),
     "a sell's stop a cent above"),
    (entry(tp="185.005", sl="185"), "the exit oco's legs a cent apart"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_what_alpaca_cannot_hold_stays_with_the_workers(spec: OrderSpec, why: str) -> None:
    assert bracket.native_exit("E1", spec) is None, why


def test_the_market_price_is_a_base_price_and_extended_hours_keep_limits_plain() -> None:
    assert bracket.native_exit("E1", entry(), reference=Decimal("185.01")) is not None
    assert bracket.native_exit("E1", entry(), reference=Decimal("185.009")) is None
    assert bracket.native_exit("E1", entry(sl=None), reference=Decimal("100")) is not None
    assert bracket.native_exit("E1", entry(), extended_hours=True) is None
    market = entry(type=OrderType.MARKET, price=None)
    assert bracket.native_exit("E1", market, extended_hours=True) is not None


def test_the_request_of_a_bracket_and_of_an_oto() -> None:
    assert bracket.body("E1", entry()) == {
        "symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "gtc",
        "client_order_id": "E1", "qty": "5", "limit_price": "189", "order_class": "bracket",
        "take_profit": {"limit_price": "195"}, "stop_loss": {"stop_price": "185"}}
    market = bracket.body("E2", entry(type=OrderType.MARKET, price=None, tp=None))
    assert market == {"symbol": "AAPL", "side": "buy", "type": "market",
                      "time_in_force": "gtc", "client_order_id": "E2", "qty": "5",
                      "order_class": "oto", "stop_loss": {"stop_price": "185"}}
    assert bracket.body("E3", entry(sl=None))["take_profit"] == {"limit_price": "195"}


def leg(kind: str, qty: str = "5", filled: str = "0", status: str = "new",
        **kw: Any) -> dict[str, Any]:
    return {"id": f"id-{kind}", "client_order_id": f"alpaca-{kind}", "order_class": "bracket",
            "type": kind, "side": "sell", "qty": qty, "filled_qty": filled,
            "filled_avg_price": kw.pop("avg", None), "status": status, "symbol": "AAPL",
            "updated_at": "2026-12-04T15:00:00Z", **kw}


def test_the_legs_of_a_nested_entry_take_profit_first() -> None:
    parent = {"id": "P", "client_order_id": "E1", "order_class": "bracket",
              "legs": [leg("stop", status="held"), leg("limit")]}
    found = bracket.legs_of(parent)
    assert found is not None and [x["type"] for x in found] == ["limit", "stop"]
    assert bracket.legs_of({**parent, "legs": None}) is None
    assert bracket.legs_of({**parent, "order_class": "simple"}) is None
    assert reconcile.entries_of_legs([parent, {"id": "Q", "order_class": "simple"}]) == {
        "id-stop": "E1", "id-limit": "E1"}
    oco = spec_from_request(exit_request("E1", entry(), Decimal(5), 1), "ap")
    limit = spec_from_request(exit_request("E1", entry(sl=None), Decimal(5), 1), "ap")
    stop = spec_from_request(exit_request("E1", entry(tp=None), Decimal(5), 1), "ap")
    assert bracket.fits(found, oco) and not bracket.fits(found, limit)
    assert bracket.fits(found[:1], limit) and not bracket.fits(found[:1], stop)
    assert bracket.fits(found[1:], stop) and not bracket.fits(found[1:], oco)


def test_the_adopted_exit_is_told_from_its_legs() -> None:
    tp = leg("limit", filled="2", status="partially_filled", avg="195.1")
    stop = leg("stop", qty="3", status="held")
    assert bracket.held([tp, stop]) == 5 and bracket.traded([tp, stop])
    assert not bracket.traded([leg("limit"), stop])
    found = bracket.exit_report("E1-x1", {"id": "P"}, [tp, stop])
    assert (found.client_order_id, found.broker_order_id, found.status, found.quantity,
            found.filled_quantity) == ("E1-x1", "legs-of:P", BrokerStatus.PARTIALLY_FILLED,
                                       5, 2)
    assert [(f.fill_id, f.quantity, f.price) for f in found.fills] == [
        ("id-limit:2", 2, Decimal("195.1"))]
    done = bracket.exit_report("E1-x1", {"id": "P"}, [
        leg("limit", filled="5", status="filled", avg="195"), leg("stop", status="canceled")])
    assert (done.status, done.filled_quantity) == (BrokerStatus.FILLED, 5)
    one = bracket.exit_report("E1-x1", {"id": "P"}, [leg("stop", status="held")])
    assert (one.status, one.quantity, one.broker_order_id) == (BrokerStatus.NEW, 5,
                                                               "legs-of:P")
    assert bracket.adopted_entry("legs-of:P") == "P"
    assert bracket.adopted_entry("8f3c-uuid") is None and bracket.adopted_entry(None) is None


@pytest.mark.parametrize(("cid", "quantity", "held", "traded", "ended", "verdict"), [
    ("E1-x1", "5", "5", False, False, Adoption.ADOPT),
    ("E1-x1", "3", "5", True, False, Adoption.ADOPT),  # traded: never cancelled into two
    ("E1-x1", "3", "5", True, True, Adoption.ADOPT),
    ("E1-x1", "3", "5", False, False, Adoption.REPLACE),  # capped by the position
    ("E1-x2", "5", "5", False, False, Adoption.REPLACE),  # a later exit
    ("E1-x2", "5", "5", True, False, Adoption.REFUSE),
    ("E1-x1", "5", "5", False, True, Adoption.PLACE),  # cancelled with its entry
    ("E1-x2", "5", "5", False, True, Adoption.PLACE),
])
def test_what_becomes_of_a_native_exit(cid: str, quantity: str, held: str, traded: bool,
                                       ended: bool, verdict: Adoption) -> None:
    assert adoption(cid, "E1", Decimal(quantity), held=Decimal(held), traded=traded,
                    ended=ended) is verdict


def test_an_exit_of_a_list_names_its_entry() -> None:
    spec = entry()
    assert entry_of(spec_from_request(exit_request("E1", spec, Decimal(5), 2), "ap")) == "E1"
    assert entry_of(spec) is None
    assert first_exit_id("E1") == "E1-x1"
