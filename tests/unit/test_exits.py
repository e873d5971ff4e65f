"""Stop-loss / take-profit on positions (executor/model/exits.py): which level fires at
which price for a long and a short position, the trail, the closing order's size and
client id, and the refusals of levels already reached."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from executor.config import ConfigError, load_settings
from executor.model.exits import (
    AutoExit,
    Exit,
    auto_exit,
    check_levels,
    closable,
    closing_id,
    decide,
)
from producer.contract import (
    CLIENT_ORDER_ID_PATTERN,
    ContractError,
    OrderType,
    Request,
    Side,
    TrailingOffsetType,
    decode_request,
)
from producer.validation import check_request

D = Decimal
LEVELS = Exit(stop_loss=D("49800"), take_profit=D("50500"), set_at=1)


@pytest.mark.parametrize(("quantity", "ref", "why", "side"), [
    ("0.5", "49800", "stop_loss", Side.SELL),  # a long stops out on a fall, exactly there
    ("0.5", "50500", "take_profit", Side.SELL),
    ("-0.5", "50500", "stop_loss", Side.BUY),  # a short's levels are the other way round
    ("-0.5", "49800", "take_profit", Side.BUY),
])
def test_each_level_fires_at_its_price_exactly_for_longs_and_shorts(
        quantity: str, ref: str, why: str, side: Side) -> None:
    levels = LEVELS if quantity[0] != "-" else Exit(stop_loss=D("50500"),
                                                     take_profit=D("49800"), set_at=1)
    _, closing = decide(levels, D(quantity), D(ref), 0)
    assert closing is not None
    assert (closing.why, closing.side, closing.quantity) == (why, side, D("0.5"))
    assert closing.type is OrderType.MARKET and closing.price is None


def test_between_the_levels_nothing_fires_and_flat_positions_are_left_alone() -> None:
    assert decide(LEVELS, D("0.5"), D("49800.01"), 0)[1] is None
    assert decide(LEVELS, D("0.5"), D("50499.99"), 0)[1] is None
    assert decide(LEVELS, D("0"), D("40000"), 0) == (None, None)


def test_the_closing_order_is_as_large_as_the_position_when_it_fires() -> None:
    _, closing = decide(LEVELS, D("1.3"), D("49000"), 0)
    assert closing is not None and closing.quantity == D("1.3")


def test_a_limit_close_rests_at_the_level_that_fired() -> None:
    limit = msgspec.structs.replace(LEVELS, close="limit")
    _, closing = decide(limit, D("0.5"), D("49700"), 0)
    assert closing is not None
    assert (closing.type, closing.price, closing.trigger) == (
        OrderType.LIMIT, D("49800"), D("49700"))


def test_in_flight_or_not_before_nothing_fires_again() -> None:
    assert decide(msgspec.structs.replace(LEVELS, fired="x"), D("0.5"), D("1"), 0) == (
        None, None)
    later = msgspec.structs.replace(LEVELS, not_before=1_000)
    assert decide(later, D("0.5"), D("1"), 999) == (None, None)
    assert decide(later, D("0.5"), D("1"), 1_000)[1] is not None


def test_a_trailing_exit_follows_the_best_price_and_restarts_on_a_new_direction() -> None:
    trailing = Exit(trailing_offset=D("100"), set_at=1)
    state, closing = decide(trailing, D("0.5"), D("50000"), 0)
    assert closing is None and state is not None and state.long is True
    assert state.trail is not None and state.trail.trigger == D("49900")
    up, closing = decide(state, D("0.5"), D("50300"), 0)
    assert closing is None and up is not None and up.trail is not None
    assert up.trail.trigger == D("50200")
    _, fired = decide(up, D("0.5"), D("50200"), 0)
    assert fired is not None and fired.why == "trailing_stop" and fired.side is Side.SELL
    short, _ = decide(up, D("-0.5"), D("50300"), 0)  # the position turned short
    assert short is not None and short.long is False and short.trail is not None
    assert short.trail.trigger == D("50400")  # trailed afresh, above the price


def test_percent_trails_and_levels_already_reached_are_refused() -> None:
    pct = Exit(trailing_offset=D("1"), trailing_offset_type=TrailingOffsetType.PERCENT)
    state, _ = decide(pct, D("2"), D("50000"), 0)
    assert state is not None and state.trail is not None and state.trail.trigger == D("49500")
    assert check_levels(LEVELS, D("0.5"), D("49700")) is not None  # below its stop-loss
    assert check_levels(LEVELS, D("-0.5"), D("50000")) is not None  # a short's TP below
    assert check_levels(LEVELS, D("0.5"), D("50000")) is None
    assert check_levels(LEVELS, D("0"), D("50000")) == "there is no position to protect"


def test_closing_ids_are_one_per_firing_and_valid_everywhere() -> None:
    first = closing_id("default", "BTCUSDT", LEVELS)
    assert first == closing_id("default", "BTCUSDT", LEVELS)  # a retry: a duplicate
    again = closing_id("default", "BTCUSDT", msgspec.structs.replace(LEVELS, generation=1))
    other = closing_id("default", "BTCUSDT", msgspec.structs.replace(LEVELS, set_at=2))
    assert len({first, again, other}) == 3

    assert all(re.fullmatch(CLIENT_ORDER_ID_PATTERN, c) for c in (first, again, other))


def sl_tp(**fields: object) -> Request:
    return decode_request(msgspec.json.encode({"action": "sl_tp", "symbol": "BTCUSDT",
                                               **fields}))


@pytest.mark.parametrize(("fields", "field"), [
    ({"stop_loss": "0"}, "stop_loss"),
    ({"take_profit": "-1"}, "take_profit"),
    ({"stop_loss": "1", "side": "sell"}, "side"),
    ({"stop_loss": "1", "quantity": "1"}, "quantity"),
    ({"stop_loss": "1", "price": "1"}, "price"),
    ({"stop_loss": "1", "client_order_id": "x1"}, "client_order_id"),
    ({"stop_loss": "1", "type": "stop"}, "type"),
    ({"trailing_offset": "1", "type": "limit"}, "type"),
    ({"stop_loss": "1", "trailing_offset_type": "bps"}, "trailing_offset_type"),
    ({"trailing_offset": "100", "trailing_offset_type": "percent"}, "trailing_offset"),
    ({"stop_loss": "1", "reduce_only": True}, "reduce_only"),
])
def test_sl_tp_requests_refuse_what_they_do_not_take_naming_the_field(
        fields: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError) as caught:
        check_request(sl_tp(**fields))
    assert caught.value.field == field, caught.value


def test_sl_tp_takes_levels_a_trail_and_a_close_and_nothing_clears() -> None:
    check_request(sl_tp(stop_loss="49800", take_profit="50500", type="limit"))
    check_request(sl_tp(trailing_offset="1", trailing_offset_type="percent"))
    check_request(sl_tp())  # clear
    with pytest.raises(ContractError) as caught:
        check_request(decode_request(b'{"action":"sl_tp"}'))
    assert caught.value.field == "symbol"


@pytest.mark.parametrize("action", ["amend", "cancel", "cancel_all"])
def test_other_actions_refuse_the_exit_levels(action: str) -> None:
    """(place takes them too: a contingent list's entry, tests/unit/test_lists.py.)"""
    request = decode_request(msgspec.json.encode({
        "action": action, "symbol": "BTCUSDT", "side": "buy", "type": "market",
        "quantity": "1", "client_order_id": "c1", "stop_loss": "1"}))
    with pytest.raises(ContractError) as caught:
        check_request(request)
    assert caught.value.field == "stop_loss"


def test_automatic_exits_sit_at_their_percentages_rounded_away_from_the_price() -> None:
    auto = AutoExit(stop_loss_percent=D("1"), take_profit_percent=D("2.5"))
    long = auto_exit(auto, D("0.5"), D("50000.37"), 7, D("0.01"))
    # 50000.37 * 0.99 = 49500.3663 -> down to 49500.36; * 1.025 = 51250.379... -> up.
    assert (long.stop_loss, long.take_profit) == (D("49500.36"), D("51250.38"))
    assert (long.long, long.set_by, long.set_at) == (True, "auto", 7)
    short = auto_exit(auto, D("-2"), D("100"), 7, D("0.01"))
    assert (short.stop_loss, short.take_profit) == (D("101.00"), D("97.50"))
    trail = auto_exit(AutoExit(trailing_percent=D("3")), D("1"), D("100"), 0)
    assert (trail.trailing_offset, trail.trailing_offset_type) == (
        D("3"), TrailingOffsetType.PERCENT)


@pytest.mark.parametrize("fields", [{}, {"stop_loss_percent": D("0")},
                                    {"take_profit_percent": D("100")},
                                    {"trailing_percent": D("1"), "close": "limit"}])
def test_automatic_exits_refuse_settings_that_protect_nothing(
        fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AutoExit(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("toml", "words"), [
    ('[exits.other]\nstop_loss_percent = "1"\n', "exits names accounts that are not "
     "configured: other"),
    ('[exits.default]\nstop_loss_percent = "0"\n', "stop_loss_percent must be above 0"),
    ('[exits.default]\nstop_loss_percent = "1"\n[auth.keys.k1]\nsecret_env = "K1"\n',
     "[exits] cannot be used with [auth] keys yet"),
])
def test_the_configuration_refuses_automatic_exits_that_cannot_work(
        tmp_path: Path, toml: str, words: str) -> None:
    config = tmp_path / "orderstream.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings(str(config), {"K1": "a-secret-of-at-least-16-bytes"})
    assert load_settings(None, {}).exits == {}


def test_a_closing_order_takes_what_the_broker_s_step_allows_of_the_position() -> None:
    # A buy whose fee was taken in BTC: 0.5 less 0.0005 is 0.4995, closable whole at a
    # 0.0001 step, 0.499 at 0.001; dust below a step is nothing to close.
    assert closable(D("0.4995"), D("0.0001")) == D("0.4995")
    assert closable(D("-0.4995"), D("0.001")) == D("0.499")
    assert closable(D("0.0004"), D("0.001")) == 0
    _, closing = decide(LEVELS, D("0.4995"), D("49000"), 0, None, D("0.001"))
    assert closing is not None and closing.quantity == D("0.499")
