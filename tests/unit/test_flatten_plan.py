from decimal import Decimal as D

from executor.model.positions import Position, position_key
from executor.operations.control import Close, flatten_plan
from producer.contract import Side


def pos(account: str, symbol: str, qty: str) -> tuple[str, Position]:
    return position_key(account, symbol), Position(account=account, symbol=symbol,
                                                   quantity=D(qty))


def test_each_position_in_scope_is_closed_by_the_opposite_side() -> None:
    held = dict([pos("a", "BTCUSDT", "0.0105"), pos("a", "ETHUSDT", "-2.5"),
                 pos("a", "EUR_USD", "0"), pos("b", "BTCUSDT", "1")])
    assert flatten_plan(held, "a") == [
        Close("a", "BTCUSDT", Side.SELL, D("0.0105")),
        Close("a", "ETHUSDT", Side.BUY, D("2.5")),
    ]
    assert [c.account for c in flatten_plan(held, None)] == ["a", "a", "b"]
    assert flatten_plan({}, None) == []
