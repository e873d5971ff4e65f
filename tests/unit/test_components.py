"""Order components (producer/components.py) and the two examples of examples/python: the
stamp of name and version, the contract checked naming the field (the limits on input
included, after the stamp), ids derived from the decision, floats refused everywhere, the
risk-sizing arithmetic exact, and a bracket's levels on the right side of either entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from fakeredis import FakeAsyncRedis
from hypothesis import given
from hypothesis import strategies as st

from examples.python.bracketed import BracketConfig, Bracketed, Unit, bracket
from examples.python.risk_sized import RiskSized, RiskSizedConfig, risk_quantity
from producer import MarketData, OrderClient, OrderComponent, Signal
from producer.components import COMPONENT_KEY, VERSION_KEY
from producer.contract import (
    Action,
    ContractError,
    OrderType,
    Request,
    Side,
    decode_request,
    encode,
    wire,
)
from producer.keys import Keys
from producer.validation import check_request

D = Decimal
MARKET = MarketData(symbol="BTCUSDT", bid=D("49999.99"), ask=D("50000"), at=1_700_000_000_000)
BUY = Signal(id="sig-1", side=Side.BUY, stop=D("49500"))


class Fixed(OrderComponent):
    """Returns whatever request it was given (or None)."""

    name = "fixed"
    version = "2.1"

    def __init__(self, request: Request | None) -> None:
        self.request = request

    def generate_order(self, market: MarketData, signal: Signal | None) -> Request | None:
        return self.request


def limit(**changes: Any) -> Request:
    return Request(**{"symbol": "BTCUSDT", "side": Side.BUY, "type": OrderType.LIMIT,
                      "quantity": wire(D("0.01")), "price": wire(D("49000")), **changes})


def refused(request: Request, signal: Signal | None = BUY) -> ContractError:
    with pytest.raises(ContractError) as caught:
        Fixed(request).order(MARKET, signal)
    return caught.value


# -- the stamp, the id, the contract


def test_the_stamp_adds_name_and_version_to_the_components_own_metadata() -> None:
    request = Fixed(limit(metadata={"why": "breakout"})).order(MARKET, BUY)
    assert request is not None
    assert request.metadata == {"why": "breakout", COMPONENT_KEY: "fixed", VERSION_KEY: "2.1"}
    assert request.signal_id == "sig-1"
    assert request == decode_request(encode(request))  # as a worker reads it


def test_a_stamp_the_component_set_itself_must_agree() -> None:
    same = Fixed(limit(metadata={COMPONENT_KEY: "fixed"})).order(MARKET, BUY)
    assert same is not None and same.metadata == {COMPONENT_KEY: "fixed", VERSION_KEY: "2.1"}
    error = refused(limit(metadata={VERSION_KEY: "2.0"}))
    assert error.field == "metadata" and "'2.0'" in str(error)


def test_the_id_is_derived_from_the_decision_so_a_retry_is_the_same_order() -> None:
    def cid(component: OrderComponent, signal: Signal | None = BUY) -> str:
        request = component.order(MARKET, signal)
        assert request is not None and request.client_order_id is not None
        return request.client_order_id

    first = cid(Fixed(limit()))
    assert first == cid(Fixed(limit(price=wire(D("48000")))))  # the same decision
    assert first.startswith("BTCUSDT-B-")
    others = {cid(Fixed(limit()), Signal(id="sig-2", side=Side.BUY)),
              cid(Fixed(limit(account="alpha"))), cid(Fixed(limit()), None),
              cid(Fixed(limit(side=Side.SELL)))}
    assert first not in others and len(others) == 4
    assert cid(Fixed(limit(client_order_id="mine-1"))) == "mine-1"  # its own is kept


def test_the_contract_is_checked_naming_the_field() -> None:
    assert refused(limit(price=None)).field == "price"
    assert refused(limit(symbol="BTC USDT")).field == "symbol"  # a pattern: the round trip
    assert refused(limit(signal_id="x" * 129)).field == "signal_id"
    assert refused(limit(take_profit=wire(D("48000")))).field == "take_profit"
    assert refused(Request(action=Action.CANCEL, client_order_id="c-1")).field == "action"


def test_the_limits_on_input_hold_with_the_stamp() -> None:
    big = {"notes": "x" * (Fixed.max_request_bytes - 250)}
    assert Fixed(limit(metadata=big)).order(MARKET, BUY) is not None
    error = refused(limit(metadata={"notes": "x" * Fixed.max_request_bytes}))
    assert error.field == "metadata" and "bytes" in str(error)
    deep: dict[str, Any] = {}
    for _ in range(31):  # the request object, metadata, and 31 more: one level too many
        deep = {"d": deep}
    assert refused(limit(metadata=deep)).field == "metadata"
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert refused(limit(metadata=loop)).field == "metadata"
    assert refused(limit(metadata={"n": 10**5000})).field == "metadata"
    assert refused(limit(metadata={"o": object()})).field == "metadata"


def test_no_order_is_none_and_nothing_is_checked() -> None:
    assert Fixed(None).order(MARKET, BUY) is None
    assert Fixed(None).order(MARKET, None) is None


def test_name_and_version_are_checked() -> None:
    with pytest.raises(TypeError, match="name"):
        type("Spaced", (Fixed,), {"name": "has space"})
    with pytest.raises(TypeError, match="version"):
        type("Long", (Fixed,), {"version": "1" * 33})

    class Nameless(OrderComponent):
        def generate_order(self, market: MarketData, signal: Signal | None) -> Request | None:
            return limit()

    with pytest.raises(TypeError, match=r"Nameless\.name"):
        Nameless().order(MARKET, BUY)


# -- floats


def test_floats_are_refused_in_the_inputs() -> None:
    with pytest.raises(TypeError, match=r"MarketData\.bid is a float"):
        MarketData(symbol="BTCUSDT", bid=0.1, ask=D(1), at=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Signal\.stop is a float"):
        Signal(id="s", side=Side.BUY, stop=49500.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Signal\.data\.levels\[1\] is a float"):
        Signal(id="s", side=Side.SELL, data={"levels": [D(1), 2.5]})
    with pytest.raises(TypeError, match="float"):
        RiskSizedConfig(risk=100.0, lot_step=D("0.001"))  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="bid"):  # decoded: the same checks
        msgspec.json.decode(b'{"symbol":"X","bid":"-1","ask":"1","at":0}', type=MarketData)
    decoded = msgspec.json.decode(b'{"symbol":"X","bid":0.1,"ask":"0.2","at":5}',
                                  type=MarketData)
    assert decoded.bid == D("0.1")  # a JSON number is read exactly


def test_floats_are_refused_in_the_request_naming_the_field() -> None:
    error = refused(limit(quantity=0.1))
    assert error.field == "quantity" and "float" in str(error)
    error = refused(limit(metadata={"score": {"now": 0.7}}))
    assert error.field == "metadata" and "metadata.score.now is a float" in str(error)


# -- the client


@pytest.fixture
async def client() -> AsyncIterator[OrderClient]:
    c = OrderClient(FakeAsyncRedis())
    yield c
    await c.aclose()


async def test_place_from_publishes_the_stamped_order_or_nothing(client: OrderClient) -> None:
    assert await client.place_from(Fixed(None), MARKET, BUY) is None
    assert await client.redis.xlen(Keys().pending) == 0
    sub = await client.place_from(Fixed(limit()), MARKET, BUY)
    again = await client.place_from(Fixed(limit()), MARKET, BUY)  # a retry: the same id
    assert sub is not None and again is not None
    assert sub.client_order_id == again.client_order_id
    entries: Any = await client.redis.xrange(Keys().pending)
    ((_, fields), _) = entries
    published = decode_request(fields[b"data"])
    assert published == Fixed(limit()).order(MARKET, BUY)
    with pytest.raises(ContractError):
        await client.place_from(Fixed(limit(price=None)), MARKET, BUY)
    assert await client.redis.xlen(Keys().pending) == 2


# -- risk sizing

SIZED = RiskSized(RiskSizedConfig(risk=D("100"), lot_step=D("0.001")))


def test_risk_sized_buys_risk_over_stop_distance_rounded_down() -> None:
    request = SIZED.order(MARKET, BUY)
    assert request is not None
    assert (request.type, request.quantity, request.price) == (OrderType.MARKET, D("0.2"), None)
    assert request.metadata == {"risk": "100", "stop": "49500", COMPONENT_KEY: "risk_sized",
                                VERSION_KEY: "1.0.0"}
    # 100 / 300 = 0.3333...: down to the lot
    assert risk_quantity(D(100), D(50000), D(49700), Side.BUY, D("0.001")) == D("0.333")
    # A sell: the stop above, the entry at the bid.
    sell = SIZED.order(MARKET, Signal(id="s", side=Side.SELL, stop=D("50099.99")))
    assert sell is not None and sell.quantity == D("1")


def test_risk_sized_limit_entry_at_the_signals_price_or_joining_the_book() -> None:
    limit_sized = RiskSized(RiskSizedConfig(risk=D("100"), lot_step=D("0.01"),
                                            entry=OrderType.LIMIT))
    at_signal = limit_sized.order(MARKET, Signal(id="s", side=Side.BUY, entry=D("49800"),
                                                 stop=D("49300")))
    assert at_signal is not None and (at_signal.price, at_signal.quantity) == (D(49800),
                                                                               D("0.2"))
    joining = limit_sized.order(MARKET, Signal(id="s", side=Side.SELL, stop=D("50500")))
    assert joining is not None and (joining.price, joining.quantity) == (D(50000), D("0.2"))
    with pytest.raises(ValueError, match="market or limit"):
        RiskSizedConfig(risk=D(1), lot_step=D(1), entry=OrderType.STOP)


def test_risk_sized_makes_no_order_without_a_usable_stop_or_a_whole_lot() -> None:
    def sized(stop: str | None, side: Side = Side.BUY) -> Request | None:
        return SIZED.order(MARKET, Signal(id="s", side=side,
                                          stop=None if stop is None else D(stop)))
    assert SIZED.order(MARKET, None) is None
    assert sized(None) is None
    assert sized("50000") is None  # at the entry
    assert sized("50100") is None  # a buy's stop above it: void
    assert sized("49999", Side.SELL) is None  # a sell's below its entry (the bid)
    assert sized("1") is not None and sized("0.00000001") is not None
    assert risk_quantity(D(100), D(50000), D(49500), Side.BUY, D(1)) is None  # 0.2 lots


prices = st.decimals(min_value=D("0.00000001"), max_value=D("10000000"), places=8)


@given(risk=st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2),
       entry=prices, stop=prices,
       lot_step=st.sampled_from([D("1"), D("0.1"), D("0.001"), D("0.00001"), D("0.3")]),
       side=st.sampled_from(Side))
def test_risk_quantity_risks_at_most_the_amount_and_one_more_lot_would_exceed_it(
        risk: Decimal, entry: Decimal, stop: Decimal, lot_step: Decimal, side: Side) -> None:
    quantity = risk_quantity(risk, entry, stop, side, lot_step)
    distance = entry - stop if side is Side.BUY else stop - entry  # exact: 8 places
    if distance <= 0:
        assert quantity is None
        return
    if quantity is None:
        assert lot_step * distance > risk
        return
    assert quantity > 0 and quantity % lot_step == 0
    assert quantity * distance <= risk < (quantity + lot_step) * distance


# -- brackets

BPS = BracketConfig(tick=D("0.01"), take_profit=D("200"), stop_loss=D("100"), unit=Unit.BPS)


def test_bracketed_wraps_the_order_with_levels_around_the_market_price() -> None:
    request = Bracketed(SIZED, BPS).order(MARKET, BUY)
    assert request is not None
    assert (request.take_profit, request.stop_loss) == (D("51000"), D("49500"))
    assert request.quantity == D("0.2") and request.type is OrderType.MARKET
    assert request.metadata == {
        "risk": "100", "stop": "49500", COMPONENT_KEY: "bracketed", VERSION_KEY: "1.0.0",
        "wraps": {COMPONENT_KEY: "risk_sized", VERSION_KEY: "1.0.0"}}
    sell = Bracketed(SIZED, BPS).order(MARKET, Signal(id="s", side=Side.SELL,
                                                      stop=D("50500")))
    assert sell is not None  # around the bid, 49999.99
    assert (sell.take_profit, sell.stop_loss) == (D("48999.99"), D("50499.98"))


def test_bracket_levels_round_reward_up_and_risk_down_on_both_sides() -> None:
    cfg = BracketConfig(tick=D("0.5"), take_profit=D("1.2"), stop_loss=D("1.2"))
    assert bracket(Side.BUY, D(100), cfg) == (D("101.5"), D("99"))
    assert bracket(Side.SELL, D(100), cfg) == (D("98.5"), D("101"))
    assert bracket(Side.BUY, D(100), BracketConfig(tick=D(1), take_profit=D(3))) == (D(103),
                                                                                    None)
    with pytest.raises(ContractError) as caught:
        bracket(Side.BUY, D(100), BracketConfig(tick=D(1), stop_loss=D("0.5")))
    assert caught.value.field == "stop_loss"


def test_bracketed_limit_entry_is_measured_from_its_price_and_accepted() -> None:
    for side, stop, levels in ((Side.BUY, "48000", (D(49490), D(48510))),
                               (Side.SELL, "50000", (D(48510), D(49490)))):
        inner = Fixed(limit(side=side))
        config = BracketConfig(tick=D(10), take_profit=D(490), stop_loss=D(490))
        request = Bracketed(inner, config).order(MARKET, Signal(id="s", side=side,
                                                                stop=D(stop)))
        assert request is not None and (request.take_profit, request.stop_loss) == levels


def test_bracketed_refuses_an_order_that_has_levels_already() -> None:
    inner = Fixed(limit(stop_loss=wire(D("48000"))))
    with pytest.raises(ContractError) as caught:
        Bracketed(inner, BPS).order(MARKET, BUY)
    assert caught.value.field == "stop_loss"
    assert Bracketed(Fixed(None), BPS).order(MARKET, BUY) is None


@given(entry=st.decimals(min_value=D("100"), max_value=D("100000"), places=2),
       take=st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2),
       stop=st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2),
       tick=st.sampled_from([D("0.01"), D("0.05"), D("1"), D("0.25")]),
       side=st.sampled_from(Side))
def test_bracket_levels_are_on_the_right_sides_and_within_the_distances(
        entry: Decimal, take: Decimal, stop: Decimal, tick: Decimal, side: Side) -> None:
    # Distances below the entry's price, so that either side's levels are positive.
    take, stop = entry * take, entry * stop
    cfg = BracketConfig(tick=tick, take_profit=take, stop_loss=stop)
    try:
        tp, sl = bracket(side, entry, cfg)
    except ContractError as exc:  # only when the stop-loss cannot be a tick beyond the entry
        assert exc.field == "stop_loss"
        return
    assert tp is not None and sl is not None and tp % tick == 0 and sl % tick == 0
    sign = 1 if side is Side.BUY else -1
    assert sign * (tp - entry) >= take  # the reward is never less than configured
    assert 0 < sign * (entry - sl) <= stop  # the risk never more
    assert sign * (entry - sl) > stop - tick
    check_request(Request(symbol="X", side=side, type=OrderType.LIMIT, quantity=wire(D(1)),
                          price=wire(entry), take_profit=wire(tp), stop_loss=wire(sl)))
