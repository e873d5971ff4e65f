from executor.safety.trading import GLOBAL, TradingState, effective, parse


def test_absent_is_active_and_garbage_is_halted() -> None:
    assert parse(None) is TradingState.ACTIVE
    assert parse(b"reducing") is TradingState.REDUCING
    assert parse("halted") is TradingState.HALTED
    assert parse(b"paused") is TradingState.HALTED  # unreadable: fail safe


def test_the_stricter_of_account_and_global_applies() -> None:
    assert effective({}, "a") is TradingState.ACTIVE
    assert effective({b"a": b"reducing"}, "a") is TradingState.REDUCING
    assert effective({b"a": b"reducing"}, "b") is TradingState.ACTIVE
    assert effective({GLOBAL.encode(): b"halted", b"a": b"active"}, "a") is TradingState.HALTED
    assert effective({GLOBAL: "reducing", "a": "halted"}, "a") is TradingState.HALTED
    assert effective({GLOBAL: "reducing"}, "a") is TradingState.REDUCING
