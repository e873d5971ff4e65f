"""Native contingent lists at the paper exchange, the pure rules (brokers/paper/lists.py):
which entries it takes with their exit, and that the exit is placed exactly with the
entry's full fill (at submission or in a match pass), never otherwise, once; and how the
store lays the exit out right after its entry, so one script call stores both."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from executor.brokers.base import BrokerStatus
from executor.brokers.paper import matching
from executor.brokers.paper.config import PaperAccount
from executor.brokers.paper.lists import native_exit, placed_exit
from executor.brokers.paper.matching import Book
from executor.brokers.paper.records import PaperOrder, decode_order, encode_order, report
from executor.brokers.paper.store import ExchangeStore, NewOrder
from executor.model.lists import exit_request
from executor.model.order import spec_from_request
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderType,
    OtoTrigger,
    Side,
    TimeInForce,
    wire,
)
from producer.keys import Keys

D = Decimal
T = OrderType
NATIVE = PaperAccount(native_lists=True)
BTC = NATIVE.symbols["BTCUSDT"]
NOW = 1_700_000_000_000


def entry(type_: OrderType = T.MARKET, quantity: str = "0.5", price: str | None = None, *,
          tp: str | None = "50500", sl: str | None = "49500",
          trigger: OtoTrigger = OtoTrigger.FULL, **extra: Any) -> OrderSpec:
    return OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=type_,
                     quantity=wire(D(quantity)),
                     price=None if price is None else wire(D(price)),
                     take_profit=None if tp is None else wire(D(tp)),
                     stop_loss=None if sl is None else wire(D(sl)),
                     oto_trigger=trigger, **{"time_in_force": TimeInForce.GTC, **extra})


def check(config: PaperAccount = NATIVE) -> Any:
    def run(order: OrderSpec) -> object:
        if config.emulate_conditional and order.type in (T.OCO, T.STOP):
            raise ContractError("left to the emulator", "type")
        return matching.check(order, config)
    return run


def native(order: OrderSpec, config: PaperAccount = NATIVE) -> OrderSpec | None:
    return native_exit("E1", order, config, check(config))


def submitted(order: OrderSpec, ref: str = "50000") -> tuple[PaperOrder, Book]:
    book = Book(D(ref), BTC, NATIVE)
    record = matching.submit("E1", "PE1", order, book, BTC, NATIVE, NOW)
    record.exit = native(order)
    return record, book


# -- which entries go native -----------------------------------------------------------------

def test_the_exit_is_the_one_the_workers_would_publish() -> None:
    for tp, sl, kind in (("50500", "49500", T.OCO), ("50500", None, T.LIMIT),
                         (None, "49500", T.STOP)):
        order = entry(tp=tp, sl=sl)
        exit_ = native(order)
        assert exit_ == spec_from_request(exit_request("E1", order, D("0.5"), 1), "default")
        assert exit_ is not None and exit_.type is kind and exit_.reduce_only
        assert exit_.side is Side.SELL and exit_.quantity == D("0.5")
        assert exit_.metadata == {"list_id": "E1", "exit": 1}


def test_off_by_default_and_only_for_full_entries_that_open_a_position() -> None:
    assert native_exit("E1", entry(), PaperAccount(), check()) is None
    assert native(entry(trigger=OtoTrigger.PARTIAL)) is None
    assert native(entry(reduce_only=True)) is None
    assert native(entry(tp=None, sl=None)) is None
    assert native(entry(T.LIMIT, price="49900", display_quantity=wire(D("0.1")))) is None


def test_an_exit_the_exchange_would_refuse_or_leave_to_the_emulator_goes_the_workers_way(
        ) -> None:
    assert native(entry(tp="50500.001")) is None  # off the tick
    emulating = PaperAccount(native_lists=True, emulate_conditional=True)
    assert native(entry(), emulating) is None  # an oco the emulator holds
    assert native(entry(tp=None), emulating) is None  # a stop, likewise
    one = native(entry(sl=None), emulating)  # a limit: the exchange's own
    assert one is not None and one.type is T.LIMIT


# -- placed with the full fill, once -----------------------------------------------------------

def test_a_market_entry_places_its_exit_with_its_fill_at_submission() -> None:
    record, book = submitted(entry())
    assert record.status is BrokerStatus.FILLED
    exit_ = placed_exit(None, record, "PX", book, BTC, NATIVE, NOW)
    assert exit_ is not None and exit_.client_order_id == "E1-x1"
    assert exit_.exit_of == "E1" and exit_.broker_order_id == "PX"
    assert exit_.status is BrokerStatus.NEW and exit_.spec == record.exit
    assert exit_.filled_quantity == 0 and exit_.version == 1
    assert report(record).native_exits and not report(exit_).native_exits
    assert decode_order(encode_order(record)) == record  # the exit kept in the record


def test_a_resting_entry_places_its_exit_only_in_the_pass_that_fills_it_all() -> None:
    deep = msgspec.structs.replace(BTC, depth_quantity=D("0.3"))
    record, book = submitted(entry(T.LIMIT, price="49900"))
    assert record.status is BrokerStatus.NEW
    assert placed_exit(None, record, "PX", book, deep, NATIVE, NOW) is None
    low = Book(D("49900"), deep, NATIVE)
    part = matching.advance(record, low, deep, NATIVE, NOW + 1)
    assert part is not None and part.status is BrokerStatus.PARTIALLY_FILLED
    assert placed_exit(record, part, "PX", low, deep, NATIVE, NOW + 1) is None
    full = matching.advance(part, low, deep, NATIVE, NOW + 2)
    assert full is not None and full.status is BrokerStatus.FILLED
    exit_ = placed_exit(part, full, "PX", low, deep, NATIVE, NOW + 2)
    assert exit_ is not None and exit_.spec.quantity == D("0.5")
    assert placed_exit(full, full, "PX", low, deep, NATIVE, NOW + 3) is None  # once


def test_an_entry_that_ends_unfilled_or_part_filled_places_nothing() -> None:
    record, book = submitted(entry(T.LIMIT, price="49900"))
    for status in (BrokerStatus.CANCELLED, BrokerStatus.EXPIRED, BrokerStatus.REJECTED):
        ended = msgspec.structs.replace(record, version=2, status=status,
                                        filled_quantity=wire(D("0.2")))
        assert placed_exit(record, ended, "PX", book, BTC, NATIVE, NOW) is None
    ioc, book = submitted(entry(T.LIMIT, quantity="20", price="50010",
                                time_in_force=TimeInForce.IOC))
    assert ioc.status is BrokerStatus.EXPIRED and ioc.filled_quantity > 0
    assert placed_exit(None, ioc, "PX", book, BTC, NATIVE, NOW) is None


def test_an_exit_the_price_has_passed_is_placed_as_the_exchange_makes_it() -> None:
    """A stop-loss the fill price is already beyond: the exchange rejects it as it would the
    workers' stop (and their exit then meets the same refusal)."""
    record, book = submitted(entry(tp=None, sl="50100"))
    exit_ = placed_exit(None, record, "PX", book, BTC, NATIVE, NOW)
    assert exit_ is not None and exit_.status is BrokerStatus.REJECTED
    assert exit_.reason == matching.WOULD_TRIGGER


def test_a_plain_order_never_places_anything() -> None:
    plain = entry(tp=None, sl=None, trigger=None)  # type: ignore[arg-type]
    record, book = submitted(plain)
    assert record.exit is None and not report(record).native_exits
    assert placed_exit(None, record, "PX", book, BTC, NATIVE, NOW) is None


# -- stored in one script call ---------------------------------------------------------------

@pytest.fixture
def store() -> ExchangeStore:
    return ExchangeStore(aioredis.Redis(), Keys(), "default")


def test_the_exit_is_laid_out_right_after_its_entry_taken_only_with_it(
        store: ExchangeStore) -> None:
    exit_ = NewOrder("E1-x1", "{x}", watch=store.key("watch:BTCUSDT:every"))
    items = [NewOrder("A", "{a}", ended_at=5), NewOrder("E1", "{e}", ended_at=5, placed=exit_),
             NewOrder("B", "{b}", replaces=3)]
    keys, args = store.insert_call(items)
    flat = msgspec.msgpack.decode(args[0])
    assert [flat[i:i + 6] for i in range(0, len(flat), 6)] == [
        ["A", "{a}", 5, 0, "", 0], ["E1", "{e}", 5, 0, "", 0],
        ["E1-x1", "{x}", 0, 0, "", -1], ["B", "{b}", 0, 0, "", 3]]
    # The exit rests: its position in the call (3) and its watch key.
    assert args[1:] == [3, keys.index(exit_.watch) + 1, 0, ""]
    assert store.answers(items, [1, 1, 1, 0]) == [1, 1, 0]
