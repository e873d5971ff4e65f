"""Alpaca's wire, pure: the order JSON, client ids within Alpaca's length, refusals that
name our field, every Alpaca status and error in our taxonomy, fills derived from
cumulative quantities, and account settings that never show a secret."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from executor.brokers.alpaca import wire
from executor.brokers.alpaca.config import AlpacaAccount
from executor.brokers.alpaca.wire import Call
from executor.brokers.base import (
    EMULATED,
    AuthenticationFailed,
    BrokerStatus,
    DuplicateClientId,
    NeedsEmulation,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
)
from executor.config import ConfigError, load_settings
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderType,
    Side,
    TimeInForce,
    TrailingOffsetType,
)
from producer.contract import WireDecimal as D


def spec(type: OrderType = OrderType.MARKET, quantity: str | None = "2", **kw: Any
         ) -> OrderSpec:
    kw.setdefault("symbol", "AAPL")
    return OrderSpec(account="ap", side=kw.pop("side", Side.BUY), type=type,
                     quantity=None if quantity is None else D(quantity), **kw)


def test_order_body_of_a_limit_order_with_extended_hours() -> None:
    body = wire.order_body("cid-1", spec(OrderType.LIMIT, "10", price=D("1.50")),
                           extended_hours=True)
    assert body == {"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "gtc",
                    "client_order_id": "cid-1", "qty": "10", "limit_price": "1.50",
                    "extended_hours": True}
    # Never on a market order, nor on a limit ioc (Alpaca takes it on limit day/gtc only).
    assert "extended_hours" not in wire.order_body("c", spec(), extended_hours=True)
    assert "extended_hours" not in wire.order_body(
        "c", spec(OrderType.LIMIT, "1", price=D("1"), time_in_force=TimeInForce.IOC),
        extended_hours=True)


def test_amounts_are_fixed_point_strings() -> None:
    body = wire.order_body("c", spec(OrderType.LIMIT, "1E+2", price=D("1E-7")))
    assert (body["qty"], body["limit_price"]) == ("100", "0.0000001")


def test_client_ids_within_the_limit_go_as_they_are() -> None:
    ours = "a" * wire.MAX_CLIENT_ID
    assert wire.client_id(ours) == ours
    assert wire.client_id("BTCUSD-b-lx3k-0-g") == "BTCUSD-b-lx3k-0-g"


def test_longer_client_ids_map_deterministically_within_the_limit() -> None:
    long_a, long_b = "s" * 40 + "-a" * 10, "s" * 40 + "-b" * 10
    mapped = wire.client_id(long_a)
    assert len(mapped) == wire.MAX_CLIENT_ID
    assert mapped == wire.client_id(long_a)  # the same every time: lookups find it
    assert mapped != wire.client_id(long_b)  # same first 31 characters, other ids
    assert mapped.startswith(long_a[:31] + "-")
    assert wire.order_body(long_a, spec())["client_order_id"] == mapped


@pytest.mark.parametrize(("order", "field"), [
    (spec(OrderType.LIMIT_MAKER, price=D("1")), "type"),
    (spec(OrderType.TAKE_PROFIT, stop_price=D("1")), "type"),
    (spec(OrderType.TAKE_PROFIT_LIMIT, price=D("1"), stop_price=D("1")), "type"),
    (spec(OrderType.OCO, price=D("2"), stop_price=D("1"), symbol="BTC/USD",
          reduce_only=True), "type"),
    (spec(OrderType.OCO, price=D("2"), stop_price=D("1")), "reduce_only"),
    (spec(OrderType.OCO, "0.5", price=D("2"), stop_price=D("1"), reduce_only=True),
     "quantity"),
    (spec(OrderType.OCO, side=Side.SELL, price=D("190.00"), stop_price=D("189.995"),
          reduce_only=True), "stop_price"),
    (spec(OrderType.OCO, price=D("189.995"), stop_price=D("190"), reduce_only=True),
     "stop_price"),
    (spec(OrderType.STOP, "1", stop_price=D("1"), symbol="BTC/USD"), "type"),
    (spec(time_in_force=TimeInForce.GTD), "time_in_force"),
    (spec(OrderType.LIMIT, price=D("1"), symbol="BTC/USD", time_in_force=TimeInForce.FOK),
     "time_in_force"),
    (spec(OrderType.LIMIT, None, quote_quantity=D("10"), price=D("1")), "quote_quantity"),
    (spec(quantity=None, quote_quantity=D("10"), time_in_force=TimeInForce.IOC),
     "quote_quantity"),
    (spec(quantity=None, quote_quantity=D("10"), symbol="BTC/USD"), "quote_quantity"),
    (spec(OrderType.LIMIT, "0.5", price=D("1")), "quantity"),
    (spec(OrderType.LIMIT, price=None), "price"),
    (spec(OrderType.STOP_LIMIT, price=D("1")), "stop_price"),
    # The auctions take market and limit orders; crypto trades round the clock.
    (spec(OrderType.STOP, "1", stop_price=D("1"), time_in_force=TimeInForce.OPG),
     "time_in_force"),
    (spec(OrderType.LIMIT, "1", price=D("1"), symbol="BTC/USD",
          time_in_force=TimeInForce.DAY), "time_in_force"),
])
def test_what_alpaca_cannot_take_is_refused_naming_the_field(order: OrderSpec,
                                                              field: str) -> None:
    with pytest.raises(ContractError) as caught:
        wire.check(order)
    assert caught.value.field == field


def test_fractions_where_alpaca_takes_them() -> None:
    wire.check(spec(quantity="0.5"))  # market, sent as day
    wire.check(spec(quantity=None, quote_quantity=D("25")))
    wire.check(spec(OrderType.LIMIT, "0.001", price=D("60000"), symbol="BTC/USD"))
    with pytest.raises(ContractError) as caught:
        wire.check(spec(quantity="0.5"), fractionable=False)
    assert caught.value.field == "quantity"


STATUSES = {
    "new": BrokerStatus.NEW, "accepted": BrokerStatus.NEW, "pending_new": BrokerStatus.NEW,
    "accepted_for_bidding": BrokerStatus.NEW, "pending_cancel": BrokerStatus.NEW,
    "pending_replace": BrokerStatus.NEW, "done_for_day": BrokerStatus.NEW,
    "stopped": BrokerStatus.NEW, "suspended": BrokerStatus.NEW,
    "calculated": BrokerStatus.NEW, "held": BrokerStatus.NEW,
    "partially_filled": BrokerStatus.PARTIALLY_FILLED, "filled": BrokerStatus.FILLED,
    "canceled": BrokerStatus.CANCELLED, "replaced": BrokerStatus.CANCELLED,
    "expired": BrokerStatus.EXPIRED, "rejected": BrokerStatus.REJECTED,
}


def test_every_alpaca_status_is_mapped() -> None:
    assert set(STATUSES) == set(wire.FINAL_STATUS) | wire.OPEN_STATUSES  # all 17
    for status, ours in STATUSES.items():
        filled = "1" if status == "partially_filled" else "0"
        assert wire.status_of({"status": status, "filled_qty": filled}) is ours, status
    # An open order with fills is partially filled, whatever Alpaca's word for it.
    for status in wire.OPEN_STATUSES:
        assert wire.status_of({"status": status, "filled_qty": "1"}) is (
            BrokerStatus.PARTIALLY_FILLED)


ORDER = {"id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "client_order_id": "cid",
         "symbol": "AAPL", "qty": "10", "filled_qty": "4", "filled_avg_price": "100.5",
         "status": "partially_filled", "updated_at": "2021-03-16T18:38:01.942282123Z",
         "filled_at": None}


def test_a_report_under_our_client_id_with_fills_from_the_cumulative() -> None:
    got = wire.report(ORDER, "ours")
    assert (got.client_order_id, got.broker_order_id) == ("ours", ORDER["id"])
    assert (got.quantity, got.filled_quantity) == (10, 4)
    assert got.updated_at == 1615919881942
    [fill] = got.fills
    assert (fill.fill_id, fill.quantity, fill.price) == (f"{ORDER['id']}:4", 4,
                                                         Decimal("100.5"))
    more = wire.report({**ORDER, "filled_qty": "10", "filled_avg_price": "101.1",
                        "status": "filled"}, "ours", got.fills)
    assert more.status is BrokerStatus.FILLED
    assert more.fills[0] == fill  # told again, the same: applied once
    assert (more.fills[1].quantity, more.fills[1].price) == (6, Decimal("101.5"))
    assert sum(f.quantity * f.price for f in more.fills) == Decimal("1011")
    # Nothing new: the same fills.
    assert wire.report({**ORDER, "filled_qty": "10", "filled_avg_price": "101.1"}, "ours",
                       more.fills).fills == more.fills


def oco(**kw: Any) -> OrderSpec:
    kw.setdefault("side", Side.SELL)
    kw.setdefault("reduce_only", True)
    return spec(OrderType.OCO, kw.pop("quantity", "5"), price=kw.pop("price", D("195")),
                stop_price=kw.pop("stop_price", D("185")), **kw)


def test_a_reduce_only_stock_oco_is_alpacas_oco_class_under_our_client_id() -> None:
    wire.check(oco())
    body = wire.order_body("E1-x1", oco(), extended_hours=True)
    assert body == {"symbol": "AAPL", "side": "sell", "type": "limit",
                    "time_in_force": "gtc", "client_order_id": "E1-x1", "qty": "5",
                    "order_class": "oco", "take_profit": {"limit_price": "195"},
                    "stop_loss": {"stop_price": "185"}}
    # A stop-limit leg: its limit in stop_loss; a buy (covering a short) the other way.
    body = wire.order_body("c", oco(side=Side.BUY, price=D("180"), stop_price=D("190.5"),
                                    stop_limit_price=D("191.25")))
    assert (body["side"], body["take_profit"], body["stop_loss"]) == (
        "buy", {"limit_price": "180"}, {"stop_price": "190.5", "limit_price": "191.25"})
    wire.check(oco(price=D("185.01"), stop_price=D("185")))  # a cent apart: taken


@pytest.mark.parametrize(("order", "field"), [
    (oco(symbol="BTC/USD", quantity="0.1"), "type"),  # crypto: simple orders only
    (oco(stop_limit_price=D("184"), time_in_force=TimeInForce.FOK), "time_in_force"),
    (oco(reduce_only=False), "reduce_only"),  # it may open a position: not an exit
    (oco(quantity="2.5"), "quantity"),  # a fractional position's exit: still protected
    (oco(price=D("185.005"), stop_price=D("185")), "stop_price"),  # closer than a cent
])
def test_an_oco_alpacas_oco_cannot_say_stays_emulated(order: OrderSpec, field: str) -> None:
    with pytest.raises(NeedsEmulation) as caught:
        wire.check(order)
    assert caught.value.field == field and EMULATED in str(caught.value)


PARENT = {"id": "11111111-1111-4111-8111-111111111111", "client_order_id": "E1-x1",
          "symbol": "AAPL", "qty": "5", "filled_qty": "0", "filled_avg_price": None,
          "status": "new", "order_class": "oco", "type": "limit", "limit_price": "195",
          "updated_at": "2026-12-04T17:00:00Z", "filled_at": None}
LEG = {**PARENT, "id": "22222222-2222-4222-8222-222222222222",
       "client_order_id": "made-by-alpaca", "type": "stop", "limit_price": None,
       "stop_price": "185", "status": "held", "legs": None}


def nested(parent: dict[str, Any], leg: dict[str, Any]) -> dict[str, Any]:
    return {**parent, "legs": [leg]}


def test_an_oco_is_one_report_of_both_its_orders() -> None:
    working = wire.report(nested(PARENT, LEG), "E1-x1")
    assert (working.status, working.broker_order_id, working.quantity) == (
        BrokerStatus.NEW, PARENT["id"], 5)
    # The stop leg filled, the take-profit cancelled: our oco is filled, with the leg's fill.
    stopped = wire.report(nested(
        {**PARENT, "status": "canceled", "updated_at": "2026-12-04T17:00:02Z"},
        {**LEG, "status": "filled", "filled_qty": "5", "filled_avg_price": "184.98",
         "filled_at": "2026-12-04T17:00:01Z"}), "E1-x1")
    assert (stopped.status, stopped.filled_quantity) == (BrokerStatus.FILLED, 5)
    [fill] = stopped.fills
    assert (fill.fill_id, fill.quantity, fill.price, fill.at) == (
        f"{LEG['id']}:5", 5, Decimal("184.98"), 1796403601000)
    assert stopped.updated_at == 1796403602000
    # The take-profit filled while the stop is not cancelled yet: open until it is (both
    # may fill in a fast market).
    took = nested({**PARENT, "status": "filled", "filled_qty": "5",
                   "filled_avg_price": "195"}, LEG)
    assert wire.report(took, "E1-x1").status is BrokerStatus.PARTIALLY_FILLED
    took["legs"] = [{**LEG, "status": "canceled"}]
    done = wire.report(took, "E1-x1")
    assert done.status is BrokerStatus.FILLED
    assert [(f.fill_id, f.price) for f in done.fills] == [(f"{PARENT['id']}:5", 195)]
    for parent, leg, ours in [("canceled", "canceled", BrokerStatus.CANCELLED),
                              ("expired", "expired", BrokerStatus.EXPIRED),
                              ("rejected", "rejected", BrokerStatus.REJECTED)]:
        got = wire.report(nested({**PARENT, "status": parent}, {**LEG, "status": leg}), "c")
        assert got.status is ours, (parent, leg)


def test_an_oco_without_its_leg_is_never_told_as_ended() -> None:
    """The lookup by client id may show the parent alone: cancelled, it may be because its
    stop leg filled, which only the nested answer shows."""
    alone = wire.report({**PARENT, "status": "canceled"}, "E1-x1")
    assert alone.status is BrokerStatus.NEW and alone.fills == []
    part = wire.report({**PARENT, "status": "canceled", "filled_qty": "2",
                        "filled_avg_price": "195"}, "E1-x1")
    assert part.status is BrokerStatus.PARTIALLY_FILLED and part.filled_quantity == 2


def test_an_ocos_fills_come_from_each_order_once() -> None:
    """Two of five at the take-profit, then the stop leg (given the three left, as Alpaca
    adjusts it) fills: two fills, each with its order's own id and price, none twice."""
    first = wire.report(nested({**PARENT, "status": "partially_filled", "filled_qty": "2",
                                "filled_avg_price": "195"}, {**LEG, "qty": "3"}), "E1-x1")
    assert first.status is BrokerStatus.PARTIALLY_FILLED
    after = wire.report(nested(
        {**PARENT, "status": "canceled", "filled_qty": "2", "filled_avg_price": "195"},
        {**LEG, "qty": "3", "status": "filled", "filled_qty": "3",
         "filled_avg_price": "184.5"}), "E1-x1", first.fills)
    assert after.status is BrokerStatus.FILLED and after.filled_quantity == 5
    assert after.fills[0] == first.fills[0]
    assert [(f.quantity, f.price) for f in after.fills] == [(2, 195), (3, Decimal("184.5"))]
    assert wire.report(nested({**PARENT, "status": "canceled", "filled_qty": "2",
                               "filled_avg_price": "195"},
                              {**LEG, "status": "filled", "filled_qty": "3",
                               "filled_avg_price": "184.5"}), "E1-x1",
                       after.fills).fills == after.fills


def test_an_ocos_stop_leg_is_known_by_its_type() -> None:
    assert wire.is_oco_leg(LEG) and not wire.is_oco_leg(PARENT)
    assert not wire.is_oco_leg({**ORDER, "type": "stop"})


ERRORS = [
    (401, {"message": "unauthorized."}, Call.SUBMIT, AuthenticationFailed),
    (403, {"message": "forbidden."}, Call.LOOKUP, AuthenticationFailed),
    (403, {"code": 40310000, "message": "insufficient buying power"}, Call.SUBMIT,
     PermanentError),
    (429, {"message": "too many requests"}, Call.SUBMIT, RateLimited),
    (500, {"message": "internal"}, Call.SUBMIT, UnknownOutcome),
    (504, "gateway timeout", Call.SUBMIT, UnknownOutcome),
    (503, {"message": "x"}, Call.CANCEL, UnknownOutcome),
    (503, {"message": "x"}, Call.LOOKUP, RetryableError),
    (408, {"message": "timeout"}, Call.SUBMIT, UnknownOutcome),
    (422, {"code": 40010001, "message": "client_order_id must be unique"}, Call.SUBMIT,
     DuplicateClientId),
    (422, {"code": 40010001, "message": "invalid qty"}, Call.SUBMIT, PermanentError),
    (404, {"message": "order not found"}, Call.LOOKUP, OrderNotFound),
    (404, {"message": "order not found"}, Call.CANCEL, OrderNotFound),
    (422, {"code": 42210000, "message": "order status is not cancelable"}, Call.CANCEL,
     NotCancellable),
    (400, {"message": "bad request"}, Call.SUBMIT, PermanentError),
]


@pytest.mark.parametrize(("status", "body", "call", "kind"), ERRORS)
def test_errors_map_into_the_taxonomy(status: int, body: Any, call: Call,
                                      kind: type[Exception]) -> None:
    error = wire.map_error(status, body, call)
    assert type(error) is kind
    assert str(error).startswith(f"alpaca HTTP {status}")


def test_retry_after_from_the_reset_header() -> None:
    assert wire.retry_after({"x-ratelimit-reset": "1000"}, 990.5) == 9.5
    assert wire.retry_after({}, 1.0) is None


def test_an_alpaca_account_in_the_config(tmp_path: Any) -> None:
    path = tmp_path / "orderstream.toml"
    path.write_text('[accounts.ap]\nbroker = "alpaca"\nkey_id_env = "K"\n'
                    'secret_file = "/run/secrets/alpaca"\nsymbols = ["AAPL"]\n')
    settings = load_settings(str(path), env={})
    account = settings.accounts["ap"]
    assert isinstance(account, AlpacaAccount)
    assert account.paper and account.venue() == "practice"
    assert account.rest_url() == "https://paper-api.alpaca.markets"
    live = AlpacaAccount(key_id_env="K", secret_env="S", paper=False)
    assert (live.venue(), live.rest_url()) == ("live", "https://api.alpaca.markets")


@pytest.mark.parametrize("changes", [
    {"secret_env": None}, {"key_id_file": "/k"}, {"base_url": "ftp://x"},
    {"stream_url": "http://x"}, {"request_timeout_ms": 0}, {"lookup_window_ms": 1},
    {"symbols": ["AAPL", "AAPL"]},
])
def test_bad_account_settings_are_refused(changes: dict[str, Any]) -> None:
    values = {"key_id_env": "K", "secret_env": "S", **changes}
    with pytest.raises((ValueError, msgspec.ValidationError)):
        msgspec.convert({"broker": "alpaca", **values}, AlpacaAccount)


def test_credentials_never_show_the_secret(tmp_path: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_K", "key-id-1")
    monkeypatch.delenv("ALPACA_S", raising=False)
    account = AlpacaAccount(key_id_env="ALPACA_K", secret_env="ALPACA_S")
    with pytest.raises(ConfigError) as missing:
        account.credentials()
    assert "ALPACA_S" in str(missing.value)
    monkeypatch.setenv("ALPACA_S", "super-secret-value")
    assert account.credentials() == ("key-id-1", "super-secret-value")
    assert "super-secret-value" not in repr(account)


@pytest.mark.parametrize(
    ("body", "mid"),
    [
        ({"symbol": "AAPL", "quote": {"bp": Decimal("189.99"), "ap": Decimal("190.01")}},
         Decimal("190.00")),
        ({"quotes": {"BTC/USD": {"bp": Decimal("59999"), "ap": Decimal("60001")}}},
         Decimal("60000")),
        ({"quote": {"bp": Decimal("0"), "ap": Decimal("190.01")}}, Decimal("190.01")),
        ({"quote": {"bp": 0, "ap": 0}}, None),  # no bid, no ask
        ({"quote": {"bp": Decimal("NaN"), "ap": "x"}}, None),
        ({"quotes": {}}, None),
        ({"message": "not found"}, None),
        (None, None),
    ],
)
def test_a_quotes_mid_is_its_bid_and_ask_or_the_one_side_it_has(body: object,
                                                                 mid: Decimal | None) -> None:
    symbol = "BTC/USD" if isinstance(body, dict) and "quotes" in body else "AAPL"
    assert wire.quote_mid(body, symbol) == mid


def test_a_memory_extends_the_record_only_when_it_holds_all_of_it() -> None:
    one, two, three = (wire.fills_of([], "o", Decimal(n), Decimal(10), 0)[0]
                       for n in (1, 2, 3))
    assert wire.extends([one, two], [one]) and wire.extends([one], [one])
    assert wire.extends([one], [])
    assert not wire.extends([one], [one, two])  # another worker told a rise since
    assert not wire.extends([one, three], [one, two])  # derived along another path


@pytest.mark.parametrize(("order", "sent"), [
    (spec(OrderType.LIMIT, "1", price=D("1"), time_in_force=TimeInForce.DAY), "day"),
    (spec(time_in_force=TimeInForce.OPG), "opg"),  # market on open
    (spec(OrderType.LIMIT, "1", price=D("1"), time_in_force=TimeInForce.CLS), "cls"),
])
def test_day_and_the_auctions_go_as_alpacas_own(order: OrderSpec, sent: str) -> None:
    wire.check(order)
    assert wire.order_body("c", order, extended_hours=False)["time_in_force"] == sent


# -- trailing stops: native where they map exactly -------------------------------------------

def trailing(offset: str = "2.50", kind: TrailingOffsetType | None = None,
             quantity: str = "10", **kw: Any) -> OrderSpec:
    kw.setdefault("side", Side.SELL)
    return spec(OrderType.TRAILING_STOP, quantity, trailing_offset=D(offset),
                trailing_offset_type=kind, **kw)


@pytest.mark.parametrize(("order", "trail"), [
    (trailing("2.50"), {"trail_price": "2.50"}),
    (trailing("2.50", TrailingOffsetType.PRICE), {"trail_price": "2.50"}),
    (trailing("1.5", TrailingOffsetType.PERCENT), {"trail_percent": "1.5"}),
    # Basis points are a percent / 100, exactly (25 bps = 0.25%, 1000 bps = 10%).
    (trailing("25", TrailingOffsetType.BPS), {"trail_percent": "0.25"}),
    (trailing("1000", TrailingOffsetType.BPS), {"trail_percent": "10"}),
    (trailing("0.5", TrailingOffsetType.BPS), {"trail_percent": "0.005"}),
    (trailing("1234.56789012345678901234", TrailingOffsetType.BPS),
     {"trail_percent": "12.3456789012345678901234"}),
])
def test_a_trailing_stop_is_alpacas_trailing_stop(order: OrderSpec,
                                                  trail: dict[str, str]) -> None:
    wire.check(order)
    assert wire.order_body("t-1", order) == {
        "symbol": "AAPL", "side": "sell", "type": "trailing_stop", "time_in_force": "gtc",
        "client_order_id": "t-1", "qty": "10", **trail}


def test_a_day_trailing_buy_stop_goes_as_day() -> None:
    order = trailing("3", side=Side.BUY, time_in_force=TimeInForce.DAY)
    wire.check(order)
    body = wire.order_body("t-2", order, extended_hours=True)
    assert (body["side"], body["time_in_force"], body["trail_price"]) == ("buy", "day", "3")
    assert "extended_hours" not in body  # limit orders only


@pytest.mark.parametrize(("order", "field", "words"), [
    (trailing(activation_price=D("200")), "activation_price", EMULATED),
    (trailing(time_in_force=TimeInForce.IOC), "time_in_force", "day or gtc only"),
    (trailing(time_in_force=TimeInForce.FOK), "time_in_force", "day or gtc only"),
    (trailing(time_in_force=TimeInForce.OPG), "time_in_force", "day or gtc only"),
    (trailing(symbol="BTC/USD"), "type", EMULATED),
    (spec(OrderType.TRAILING_STOP_LIMIT, trailing_offset=D("1"), limit_offset=D("0")),
     "type", EMULATED),
    (spec(OrderType.MARKET_IF_TOUCHED, stop_price=D("180")), "type", EMULATED),
    (spec(OrderType.LIMIT_IF_TOUCHED, stop_price=D("180"), price=D("181")), "type",
     EMULATED),
    (trailing(quantity="1.5"), "quantity", "fractional"),
])
def test_what_alpacas_trailing_stop_is_not_is_refused(order: OrderSpec, field: str,
                                                      words: str) -> None:
    with pytest.raises(ContractError) as caught:
        wire.check(order)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert field in str(caught.value)


def test_an_untriggered_trailing_stop_reports_new_and_its_fill_as_usual() -> None:
    base = {"id": "0d6bd4c4-4d4b-4a8c-9c3e-d4f7c7f0f0f1", "symbol": "AAPL",
            "type": "trailing_stop", "qty": "10", "trail_price": "2.5", "hwm": "191",
            "stop_price": "188.5", "updated_at": "2026-12-04T10:00:00.000000001Z"}
    waiting = wire.report({**base, "status": "new", "filled_qty": "0"}, "t-1")
    assert waiting.status is BrokerStatus.NEW and waiting.fills == []
    filled = wire.report({**base, "status": "filled", "filled_qty": "10",
                          "filled_avg_price": "188.4",
                          "filled_at": "2026-12-04T10:01:00Z"}, "t-1")
    assert filled.status is BrokerStatus.FILLED
    assert [(f.price, f.quantity) for f in filled.fills] == [(D("188.4"), D("10"))]


# -- traded volume: 1-minute bars -------------------------------------------------------------

T0 = 1_796_137_200_000  # 2026-12-01T15:00:00Z, on the minute
M = wire.MINUTE_MS


def bar(minute: int, volume: Any) -> dict[str, Any]:
    return {"t": wire.rfc3339(T0 + minute * M), "o": 1, "h": 1, "l": 1, "c": 1,
            "v": volume, "n": 1, "vw": 1}


def test_bar_times_go_out_as_rfc3339_and_start_on_the_minute_after() -> None:
    assert wire.rfc3339(T0) == "2026-12-01T15:00:00Z"
    assert wire.rfc3339(T0 + 30_250) == "2026-12-01T15:00:30.250Z"
    assert wire.epoch_ms(wire.rfc3339(T0 + 30_250)) == T0 + 30_250
    assert wire.minute_up(T0) == T0
    assert wire.minute_up(T0 + 1) == T0 + M
    assert wire.minute_up(T0 + M - 1) == T0 + M


def test_a_bars_answer_is_read_for_stocks_and_crypto_and_nothing_else() -> None:
    one = [bar(0, 5)]
    assert wire.bars_of({"bars": one, "symbol": "AAPL", "next_page_token": None},
                        "AAPL") == one
    assert wire.bars_of({"bars": None, "symbol": "AAPL"}, "AAPL") == []  # none: null
    assert wire.bars_of({"bars": {"BTC/USD": one}}, "BTC/USD") == one
    assert wire.bars_of({"bars": {"ETH/USD": one}}, "BTC/USD") == []  # absent: none
    for broken in (None, [], "text", {"symbol": "AAPL"}, {"bars": "x"}, {"bars": 3}):
        assert wire.bars_of(broken, "AAPL") is None, broken


F = wire.BAR_FINAL_MS


def test_final_bars_are_counted_exactly_up_to_the_last_final_one() -> None:
    bars = [bar(0, Decimal("0.12345678")), bar(1, 7), bar(2, "0.5"), bar(3, Decimal(9))]
    # At 15:03:50 the 15:03 bar is open, the 15:02 one final: until is the 15:03 start.
    assert wire.closed_volume(bars, T0, T0 + 3 * M + 50_000) == (
        Decimal("7.62345678"), T0 + 3 * M)
    # 15:03 closed at 15:04:00, but a late trade may still change it until 15:04:30.
    assert wire.closed_volume(bars, T0, T0 + 4 * M) == (Decimal("7.62345678"), T0 + 3 * M)
    assert wire.closed_volume(bars, T0, T0 + 4 * M + F - 1) == (
        Decimal("7.62345678"), T0 + 3 * M)
    assert wire.closed_volume(bars, T0, T0 + 4 * M + F) == (
        Decimal("16.62345678"), T0 + 4 * M)


def test_the_partial_first_minute_is_not_counted() -> None:
    bars = [bar(0, 100), bar(1, 10), bar(2, 1)]
    assert wire.closed_volume(bars, T0 + 1, T0 + 3 * M + F) == (Decimal(11), T0 + 3 * M)
    assert wire.closed_volume(bars, T0 + M, T0 + 3 * M + F) == (Decimal(11), T0 + 3 * M)


def test_nothing_closed_leaves_until_at_since_and_a_gap_is_passed_once_a_later_bar_closes(
        ) -> None:
    assert wire.closed_volume([], T0 + 5, T0 + 9 * M) == (Decimal(0), T0 + 5)
    assert wire.closed_volume([bar(0, 4)], T0, T0 + M + F - 1) == (Decimal(0), T0)
    # 15:01 and 15:02 traded nothing (no bars): passed over up to the end of 15:03.
    assert wire.closed_volume([bar(0, 4), bar(3, 6)], T0, T0 + 4 * M + F) == (
        Decimal(10), T0 + 4 * M)


@pytest.mark.parametrize("broken", [
    bar(0, -1), bar(0, None), bar(0, True), bar(0, "x"), bar(0, Decimal("NaN")),
    {"t": "yesterday", "v": 1}, {"v": 1}, "bar"])
def test_an_unreadable_bar_makes_the_volume_unknown(broken: Any) -> None:
    assert wire.closed_volume([bar(1, 3), broken], T0, T0 + 5 * M) is None
