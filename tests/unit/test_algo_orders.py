"""Execution algorithms on the wire and in the order model: what a request may ask for
(each refusal names the field), the children it makes, and a parent's progress, which
carries its children's totals without fills of its own."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from executor.brokers.paper import matching
from executor.brokers.paper.config import PaperAccount
from executor.model.order import Context, new_order, progress, transition
from executor.model.schedules import (
    check_parent,
    child_id,
    child_price,
    child_request,
    slippage_bps,
    u_shape,
    weights_of,
)
from producer.contract import (
    Action,
    Algo,
    AlgoStrategy,
    ContractError,
    OrderSpec,
    OrderState,
    OrderType,
    Request,
    Side,
    TimeInForce,
    decode_request,
)
from producer.validation import algo_slices, check_request

D = Decimal
TWAP = Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6)


def place(**kw: object) -> Request:
    fields: dict[str, object] = dict(action=Action.PLACE, symbol="BTCUSDT", side=Side.BUY,
                                     type=OrderType.MARKET, quantity=D("1"), algo=TWAP)
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


def refused(request: Request) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_request(request)
    return caught.value


def test_a_good_twap_and_vwap_pass_and_decode() -> None:
    check_request(place())
    vwap = Algo(strategy=AlgoStrategy.VWAP, horizon_ms=3_000, interval_ms=1_000,
                weights=[D("1"), D("2"), D("1")])
    check_request(place(algo=vwap, reduce_only=True, side=Side.SELL))
    wire = (b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1",'
            b'"algo":{"strategy":"vwap","horizon_ms":60000,"slices":4,"start_at":5}}')
    req = decode_request(wire)
    assert req.algo == Algo(strategy=AlgoStrategy.VWAP, horizon_ms=60_000, slices=4,
                            start_at=5)
    assert algo_slices(TWAP) == (6, 10_000) and algo_slices(vwap) == (3, 1_000)


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"type": OrderType.STOP, "stop_price": D("1")}, "type", "market or limit, not stop"),
    ({"time_in_force": TimeInForce.IOC}, "time_in_force", "not allowed with algo"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6,
                   reprice_ms=5_000)}, "algo.reprice_ms", "limit parent only"),
    ({"type": OrderType.LIMIT, "price": D("1"),
      "algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6,
                   limit_offset_bps=D("10000"))}, "algo.limit_offset_bps", "below 10000"),
    ({"type": OrderType.LIMIT, "price": D("1"),
      "algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6,
                   reprice_ms=999)}, "algo.reprice_ms", "at least 1000"),
    ({"quantity": None, "quote_quantity": D("100")}, "quote_quantity", "not allowed with"),
    ({"take_profit": D("60000")}, "take_profit", "not allowed with algo"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=999, slices=1)},
     "algo.horizon_ms", "1000 to 604800000"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=10_000)}, "algo.slices",
     "exactly one of slices and interval_ms"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=10_000, slices=2,
                   interval_ms=5_000)}, "algo.slices", "exactly one"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=10_000, interval_ms=500)},
     "algo.interval_ms", "from 1000 to the horizon"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=10_000, slices=20)},
     "algo.slices", "500 ms apart"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=3_600_000, interval_ms=1_000)},
     "algo.interval_ms", "3600 slices"),
    ({"algo": Algo(strategy=AlgoStrategy.TWAP, horizon_ms=10_000, slices=2,
                   weights=[D(1), D(1)])}, "algo.weights", "vwap only"),
    ({"algo": Algo(strategy=AlgoStrategy.VWAP, horizon_ms=10_000, slices=2,
                   weights=[D(1)])}, "algo.weights", "1 weights for 2 slices"),
    ({"algo": Algo(strategy=AlgoStrategy.VWAP, horizon_ms=10_000, slices=2,
                   weights=[D(1), D(0)])}, "algo.weights", "positive"),
])
def test_what_an_algo_cannot_ask_for_is_refused_naming_the_field(
        change: dict[str, object], field: str, words: str) -> None:
    error = refused(place(**change))
    assert error.field == field and words in str(error), (error.field, str(error))


NOW = 1_700_000_000_000


def test_an_end_time_fixes_the_schedule_from_its_start() -> None:
    by_slices = Algo(strategy=AlgoStrategy.TWAP, end_at=NOW + 60_000, slices=4)
    check_request(place(algo=by_slices), NOW)
    check_request(place(algo=by_slices))  # no clock: the worker checks the times
    # Accepted 20 s later than asked: 4 slices still, 10 s apart, ending at end_at.
    assert algo_slices(by_slices, NOW + 20_000) == (4, 10_000)
    by_interval = Algo(strategy=AlgoStrategy.VWAP, start_at=NOW, end_at=NOW + 30_000,
                       interval_ms=10_000, weights=[D(1), D(2), D(3)])
    check_request(place(algo=by_interval), NOW)
    assert algo_slices(by_interval, NOW + 999) == (3, 10_000)
    check_request(place(algo=Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=2,
                                  max_participation=D("1"))))


@pytest.mark.parametrize(("algo", "field", "words"), [
    (Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, end_at=NOW + 60_000, slices=2),
     "algo.horizon_ms", "exactly one of horizon_ms and end_at"),
    (Algo(strategy=AlgoStrategy.TWAP, slices=2), "algo.horizon_ms", "exactly one"),
    (Algo(strategy=AlgoStrategy.TWAP, end_at=NOW, slices=2), "algo.end_at",
     "not in the future"),
    (Algo(strategy=AlgoStrategy.TWAP, end_at=NOW + 999, slices=1), "algo.end_at",
     "got 999"),
    (Algo(strategy=AlgoStrategy.TWAP, end_at=NOW + 8 * 86_400_000, slices=1),
     "algo.end_at", "7 days"),
    (Algo(strategy=AlgoStrategy.TWAP, start_at=NOW + 10_000, end_at=NOW + 5_000,
          slices=1), "algo.end_at", "got -5000"),
    (Algo(strategy=AlgoStrategy.TWAP, end_at=NOW + 60_000, interval_ms=10_000),
     "algo.interval_ms", "needs start_at"),
    (Algo(strategy=AlgoStrategy.TWAP, end_at=NOW + 10_000, slices=20), "algo.slices",
     "500 ms apart"),
    (Algo(strategy=AlgoStrategy.VWAP, start_at=NOW, end_at=NOW + 30_000,
          interval_ms=10_000, weights=[D(1), D(1)]), "algo.weights",
     "2 weights for 3 slices"),
    (Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=2,
          max_participation=D("0")), "algo.max_participation", "above 0 and at most 1"),
    (Algo(strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=2,
          max_participation=D("1.01")), "algo.max_participation", "got 1.01"),
])
def test_a_bad_end_time_or_cap_is_refused_naming_the_field(algo: Algo, field: str,
                                                           words: str) -> None:
    with pytest.raises(ContractError) as caught:
        check_request(place(algo=algo), NOW)
    assert caught.value.field == field and words in str(caught.value), str(caught.value)


def test_a_limit_parent_takes_an_offset_and_a_repricing() -> None:
    check_request(place(type=OrderType.LIMIT, price=D("50000"), algo=Algo(
        strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=6,
        limit_offset_bps=D("2.5"), reprice_ms=5_000)))


def test_a_limit_childs_price_is_passive_capped_and_on_the_tick() -> None:
    # A buy 10 bps below 50000.37, on the tick down; capped by the parent's price.
    assert child_price(Side.BUY, D("50000.37"), D("10"), D("60000"), D("0.01")) == D(
        "49950.36")
    assert child_price(Side.BUY, D("50000"), D("10"), D("49900"), D("0.01")) == D("49900")
    # A sell above, on the tick up; never below the parent's price.
    assert child_price(Side.SELL, D("50000.37"), D("10"), D("1"), D("0.01")) == D(
        "50050.38")
    assert child_price(Side.SELL, D("50000"), D("0"), D("50100"), D("0.5")) == D("50100")


def test_algo_belongs_to_place_only() -> None:
    error = refused(Request(action=Action.CANCEL, client_order_id="x", algo=TWAP))
    assert error.field == "algo"


SPEC = OrderSpec(account="a", symbol="BTCUSDT", side=Side.SELL, type=OrderType.MARKET,
                 quantity=D("1"), algo=TWAP, reduce_only=True, strategy_id="s",
                 metadata={"component": "c", "component_version": "1", "other": 1})


def test_a_child_is_a_plain_market_order_naming_its_parent_and_slice() -> None:
    limit = child_request("P", SPEC, D("0.25"), 3, 2, D("50000"))
    assert (limit.type, limit.price) == (OrderType.LIMIT, D("50000"))
    check_request(limit)
    child = child_request("P", SPEC, D("0.25"), 3, 2)
    assert (child.client_order_id, child.type, child.side, child.quantity) == (
        "P-E3", OrderType.MARKET, Side.SELL, D("0.25"))
    assert child.reduce_only and child.strategy_id == "s" and child.algo is None
    assert child.metadata == {"algo_id": "P", "slice": 2, "component": "c",
                              "component_version": "1"}
    check_request(child)
    long = child_id("p" * 40, 12)
    assert len(long) <= 36 and long.endswith("-E12") and long != child_id("p" * 41, 12)


def test_vwap_weights_default_to_the_u_shape() -> None:
    assert weights_of(TWAP) == [D(1)] * 6
    assert weights_of(msgspec.structs.replace(TWAP, strategy=AlgoStrategy.VWAP)) == u_shape(6)


def test_slippage_is_worse_when_a_buy_pays_more_or_a_sell_gets_less() -> None:
    assert slippage_bps(Side.BUY, D("50050"), D("50000")) == D(10)
    assert slippage_bps(Side.SELL, D("50050"), D("50000")) == D(-10)


def test_a_parents_progress_carries_its_childrens_totals_without_fills() -> None:
    ctx = Context(now=1_000, worker="w", request_id="r")
    order, _ = new_order("P", "r", SPEC, ctx)
    transition(order, OrderState.SUBMITTED, ctx)
    transition(order, OrderState.ACCEPTED, ctx)
    [part] = progress(order, D("0.4"), D("20000.4"), ctx)
    assert (part.state, part.fill, part.filled_quantity, part.average_price) == (
        OrderState.PARTIALLY_FILLED, None, D("0.4"), D("50001"))
    assert progress(order, D("0.4"), D("20000.4"), ctx) == []  # nothing moved
    [full] = progress(order, D("1"), D("50000.4"), ctx)
    assert full.state is OrderState.FILLED and order.fills == []
    assert order.average_price == D("50000.4")
    with pytest.raises(ValueError, match="more than its quantity"):
        progress(new_order("Q", "r", SPEC, ctx)[0], D("2"), D("1"), ctx)


def paper_check(spec: OrderSpec) -> None:
    matching.check(spec, PaperAccount())  # BTCUSDT: 0.00001 to 1000, steps of 0.00001


def test_a_parent_too_big_for_one_order_passes_when_its_children_fit() -> None:
    big = msgspec.structs.replace(SPEC, symbol="BTCUSDT", quantity=D("1500"))
    assert check_parent(paper_check, big, D("0.00001")) is None  # six children of 250
    one = msgspec.structs.replace(big, algo=Algo(strategy=AlgoStrategy.TWAP,
                                                 horizon_ms=60_000, slices=1))
    with pytest.raises(ContractError, match="1000") as caught:
        check_parent(paper_check, one, D("0.00001"))  # its one child is the whole
    assert caught.value.field == "quantity"
    two = msgspec.structs.replace(one, quantity=D("2400"), algo=Algo(
        strategy=AlgoStrategy.TWAP, horizon_ms=60_000, slices=2))
    with pytest.raises(ContractError, match="1000"):
        check_parent(paper_check, two, D("0.00001"))  # children of 1200: still too big
    off_step = msgspec.structs.replace(big, quantity=D("1500.000001"))
    with pytest.raises(ContractError, match=r"steps of 0\.00001"):
        check_parent(paper_check, off_step, D("0.00001"))
    unknown = msgspec.structs.replace(big, symbol="NOPE")
    with pytest.raises(ContractError) as caught:
        check_parent(paper_check, unknown, D("0.00001"))
    assert caught.value.field == "symbol"
