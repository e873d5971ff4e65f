"""Which entries OANDA takes with on-fill exits, their fields (prices as strings at the
instrument's precision, the exit's ids), the exit's report from the trade's dependent
orders, the refusals that send the entry plain, and the reconciliation of the dependent
orders of ours (oanda/on_fill.py, wire.py, reconcile.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from executor.brokers.base import BrokerOrder, BrokerStatus, PermanentError
from executor.brokers.native_exits import entry_of
from executor.brokers.oanda import on_fill, reconcile, wire
from executor.brokers.oanda.instruments import Instrument
from executor.model.lists import exit_request
from executor.model.order import Order, spec_from_request
from producer.contract import (
    Fill,
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    Side,
    WireDecimal,
)

D = WireDecimal
EUR_USD = Instrument(name="EUR_USD", base="EUR", quote="USD", display_precision=5,
                     units_precision=0, minimum_units=Decimal(1), maximum_units=None)


def entry(price: str | None = "1.09", *, tp: str | None = "1.12", sl: str | None = "1.08",
          side: Side = Side.BUY, **kw: Any) -> OrderSpec:
    fields: dict[str, Any] = {"type": OrderType.LIMIT if price else OrderType.MARKET,
                              "price": D(price) if price else None,
                              "oto_trigger": OtoTrigger.FULL, **kw}
    return OrderSpec(account="oa", symbol="EUR_USD", side=side, quantity=D("1000"),
                     take_profit=D(tp) if tp else None, stop_loss=D(sl) if sl else None,
                     **fields)


@pytest.mark.parametrize(("spec", "kind"), [
    (entry(), OrderType.OCO),
    (entry(None, sl=None), OrderType.LIMIT),
    (entry(tp=None, oto_trigger=OtoTrigger.PARTIAL), OrderType.STOP),
    (entry("1.13", tp="1.08", sl="1.14", side=Side.SELL), OrderType.OCO),
])
def test_market_and_limit_entries_go_native_with_the_workers_exit(
        spec: OrderSpec, kind: OrderType) -> None:
    exit_ = on_fill.native_exit("E1", spec, EUR_USD)
    assert exit_ is not None and exit_.type is kind and exit_.quantity == Decimal(1000)
    assert exit_.reduce_only and exit_.side is not spec.side


@pytest.mark.parametrize("spec", [
    entry(tp=None, sl=None, oto_trigger=None),  # not a list's entry
    entry(tp="1.09"),  # a take-profit at a buy's limit: a loss at its fill
    entry(sl="1.09"),
    entry("1.13", tp="1.14", sl="1.15", side=Side.SELL),
    entry(reduce_only=True),  # REDUCE_ONLY opens no trade
    entry(type=OrderType.STOP, price=None, stop_price=D("1.2")),
    entry(tp="1.120001"),  # finer than displayPrecision: the workers' exit would be refused
    entry(display_quantity=D("100")),
])
def test_anything_else_keeps_the_workers_exits(spec: OrderSpec) -> None:
    assert on_fill.native_exit("E1", spec, EUR_USD) is None


def test_fields_are_price_strings_at_precision_under_the_exits_ids() -> None:
    assert on_fill.fields("E1", entry(), EUR_USD) == {
        "takeProfitOnFill": {"price": "1.12000", "timeInForce": "GTC",
                             "clientExtensions": {"id": "E1-x1-tp"}},
        "stopLossOnFill": {"price": "1.08000", "timeInForce": "GTC",
                           "clientExtensions": {"id": "E1-x1-sl"}}}
    assert on_fill.fields("E1", entry(sl=None), EUR_USD).keys() == {"takeProfitOnFill"}
    assert on_fill.fields("E1", entry(tp=None), EUR_USD).keys() == {"stopLossOnFill"}


def test_dependent_ids_fit_36_characters_and_differ_from_the_exit() -> None:
    long = "E" * 36
    first = on_fill.first_exit_id(long)
    tp, sl = on_fill.dependent_ids(first)
    assert len({first, tp, sl}) == 3 and all(len(i) <= 36 for i in (first, tp, sl))
    assert on_fill.dependent_ids("E1-x1") == ("E1-x1-tp", "E1-x1-sl")


def test_a_dependent_order_names_its_exit_by_its_trade() -> None:
    tp = {"type": "TAKE_PROFIT", "clientTradeID": "E1", "clientExtensions": {"id": "E1-x1-tp"}}
    assert on_fill.owner(tp) == "E1-x1"
    assert on_fill.owner({**tp, "clientExtensions": {"id": "other"}}) is None
    assert on_fill.owner({**tp, "type": "LIMIT"}) is None
    assert on_fill.owner({**tp, "clientTradeID": None}) is None


def test_exit_ids_and_list_exits() -> None:
    spec = entry()
    exit_ = spec_from_request(exit_request("E1", spec, Decimal(1000), 2), "oa")
    assert entry_of(exit_) == "E1" and entry_of(spec) is None
    assert on_fill.is_exit_id("E1-x1") and on_fill.is_exit_id("E1-x12")
    assert not on_fill.is_exit_id("E1") and not on_fill.is_exit_id("E1-x")
    assert not on_fill.is_exit_id("-x1")


def leg(cid: str, status: BrokerStatus, fill: str | None = None,
        reason: str | None = None) -> BrokerOrder:
    fills = [] if fill is None else [Fill(fill_id="9", price=D("1.12"), quantity=D(fill),
                                          commission=D("0"), at=5)]
    return BrokerOrder(client_order_id=cid, broker_order_id="7", symbol="EUR_USD",
                       status=status, quantity=D("0"), filled_quantity=D(fill or "0"),
                       fills=fills, reason=reason, updated_at=3)


def test_the_exits_report_from_its_dependent_orders() -> None:
    working = on_fill.combine("E1-x1", "5", "EUR_USD", Decimal(1000), [
        leg("E1-x1-tp", BrokerStatus.NEW), leg("E1-x1-sl", BrokerStatus.NEW)])
    assert (working.status, working.broker_order_id, working.quantity) == (
        BrokerStatus.NEW, "on-fill:5", Decimal(1000))
    filled = on_fill.combine("E1-x1", "5", "EUR_USD", Decimal(1000), [
        leg("E1-x1-tp", BrokerStatus.FILLED, "1000"),
        leg("E1-x1-sl", BrokerStatus.REJECTED, reason="oanda: LINKED_TRADE_CLOSED")])
    assert (filled.status, filled.filled_quantity, len(filled.fills)) == (
        BrokerStatus.FILLED, Decimal(1000), 1)
    ended = on_fill.combine("E1-x1", "5", "EUR_USD", Decimal(1000), [
        leg("E1-x1-tp", BrokerStatus.REJECTED, reason="oanda: LINKED_TRADE_CLOSED")])
    # Working once, so never rejected: cancelled, with OANDA's reason.
    assert (ended.status, ended.reason) == (BrokerStatus.CANCELLED,
                                            "oanda: LINKED_TRADE_CLOSED")


@pytest.mark.parametrize(("reason", "on_fill_part"), [
    ("TAKE_PROFIT_ON_FILL_PRICE_PRECISION_EXCEEDED", True),
    ("STOP_LOSS_ON_FILL_GUARANTEED_REQUIRED", True),
    ("TRAILING_STOP_LOSS_ON_FILL_PRICE_DISTANCE_MINIMUM_NOT_MET", True),
    ("ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS", True),
    ("UNITS_MIMIMUM_NOT_MET", False),
    ("INSUFFICIENT_MARGIN", False),
])
def test_only_a_refusal_of_the_on_fill_part_sends_the_entry_plain(
        reason: str, on_fill_part: bool) -> None:
    body = {"orderRejectTransaction": {"rejectReason": reason}, "errorCode": reason}
    error = wire.map_error(400, body, sends=True)
    assert isinstance(error, PermanentError)
    assert isinstance(error, wire.OnFillRefused) is on_fill_part


def test_an_order_with_on_fill_details_is_reported_native() -> None:
    order = {"id": "3", "instrument": "EUR_USD", "units": "1000", "state": "PENDING",
             "takeProfitOnFill": {"price": "1.12000"}}
    assert wire.order_report("E1", order, None, None, "USD").native_exits
    del order["takeProfitOnFill"]
    assert not wire.order_report("E1", order, None, None, "USD").native_exits
    dependent = {"id": "4", "type": "TAKE_PROFIT", "state": "PENDING", "tradeID": "3"}
    assert wire.order_report("E1-x1-tp", dependent, None, None, "USD",
                             "EUR_USD").symbol == "EUR_USD"


def test_reconciliation_takes_on_fill_orders_for_their_exits() -> None:
    spec = spec_from_request(exit_request("E1", entry(), Decimal(1000), 1), "oa")
    record = Order(client_order_id="E1-x1", request_id="r", spec=spec,
                   state=OrderState.ACCEPTED)
    reply = {"orders": [
        {"id": "4", "type": "TAKE_PROFIT", "state": "PENDING", "clientTradeID": "E1",
         "clientExtensions": {"id": "E1-x1-tp"}},
        {"id": "5", "type": "STOP_LOSS", "state": "PENDING", "clientTradeID": "E2",
         "clientExtensions": {"id": "E2-x1-sl"}},  # not adopted yet: OANDA's to hold
        {"id": "6", "type": "STOP_LOSS", "state": "PENDING"}]}  # someone else's
    assert reconcile.held(reply) == {"E1-x1", "E2-x1"}
    drift = reconcile.compare(reconcile.entry_orders(reply), {"E1-x1": record}, "oa",
                              reconcile.held(reply))
    assert (drift.orphans, drift.known, drift.missing) == ([], ["E1-x1"], [])
    assert reconcile.compare([], {"E1-x1": record}, "oa").missing == ["E1-x1"]
