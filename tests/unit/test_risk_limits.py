"""Risk limits: layers merge field by field, run-time changes are validated, the [risk]
section of the configuration is read and checked."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from executor.config import ConfigError, load_settings
from executor.safety.risk.limits import (
    AccountLimits,
    RiskSettings,
    SymbolLimits,
    apply_changes,
    decode_runtime,
    encode_runtime,
    resolve,
)
from producer.contract import ContractError

D = Decimal


def test_layers_merge_from_defaults_to_run_time_per_symbol() -> None:
    settings = RiskSettings(
        defaults=AccountLimits(max_quantity=D("10"), max_open_orders=50,
                               symbols={"BTCUSDT": SymbolLimits(max_quantity=D("1"))}),
        accounts={"a": AccountLimits(max_open_orders=5, price_band_pct=D("3"),
                                     symbols={"ETHUSDT": SymbolLimits(price_band_pct=D("9"))})})
    assert resolve(settings, "b", "XRPUSDT").max_quantity == D("10")
    assert resolve(settings, "b", "BTCUSDT").max_quantity == D("1")
    a_btc = resolve(settings, "a", "BTCUSDT")
    assert (a_btc.max_open_orders, a_btc.price_band_pct) == (5, D("3"))
    assert resolve(settings, "a", "ETHUSDT").price_band_pct == D("9")
    runtime = AccountLimits(max_open_orders=2,
                            symbols={"BTCUSDT": SymbolLimits(max_quantity=D("0.5"))})
    assert resolve(settings, "a", "BTCUSDT", runtime).max_open_orders == 2
    assert resolve(settings, "a", "BTCUSDT", runtime).max_quantity == D("0.5")
    assert resolve(settings, "a", "ETHUSDT", runtime).max_quantity == D("10")


def test_run_time_changes_are_checked_and_none_removes_a_key() -> None:
    limits = apply_changes(None, {"max_open_orders": "3", "max_notional": "1000.5",
                                  "deny_symbols": "XRPUSDT, DOGEUSDT"})
    assert limits.max_open_orders == 3 and limits.max_notional == D("1000.5")
    assert limits.deny_symbols == ["XRPUSDT", "DOGEUSDT"]
    assert decode_runtime(encode_runtime(limits)) == limits
    limits = apply_changes(limits, {"max_quantity": "2"}, symbol="BTCUSDT")
    assert limits.symbols["BTCUSDT"].max_quantity == D("2")
    limits = apply_changes(limits, {"max_quantity": "none"}, symbol="BTCUSDT")
    assert limits.symbols == {}
    limits = apply_changes(limits, {"max_open_orders": "none"})
    assert limits.max_open_orders is None and limits.max_notional == D("1000.5")
    with pytest.raises(ContractError, match="unknown risk limit 'max_orders'"):
        apply_changes(None, {"max_orders": "3"})
    with pytest.raises(ContractError, match="max_open_orders"):
        apply_changes(None, {"max_open_orders": "three"})
    with pytest.raises(ContractError, match="non-negative"):
        apply_changes(None, {"max_notional": "-1"})
    with pytest.raises(ContractError, match="min_quantity 2 is above"):
        apply_changes(None, {"min_quantity": "2", "max_quantity": "1"})
    with pytest.raises(ContractError, match="unknown risk limit 'max_open_orders' for a symbol"):
        apply_changes(None, {"max_open_orders": "1"}, symbol="BTCUSDT")


def test_risk_section_of_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('''
[risk]
day_reset_utc = "22:00"
[risk.defaults]
max_open_orders = 20
[risk.accounts.default]
equity = "100000"
max_position_pct = "25"
[risk.accounts.default.symbols.BTCUSDT]
max_quantity = "2"
''')
    risk = load_settings(path, {}).risk
    assert risk.day_offset_ms == 22 * 3_600_000
    limits = resolve(risk, "default", "BTCUSDT")
    assert (limits.max_open_orders, limits.equity, limits.max_position_pct,
            limits.max_quantity) == (20, D("100000"), D("25"), D("2"))


@pytest.mark.parametrize(("text", "error"), [
    ('[risk]\nday_reset_utc = "25:00"', "HH:MM"),
    ('[risk.accounts.nobody]\nmax_open_orders = 1', "not configured: nobody"),
    ('[risk.defaults]\nmax_open_orders = -1', "must not be negative"),
    ('[risk.defaults]\nmax_orders = 1', "max_orders"),
])
def test_bad_risk_config_is_refused(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_settings(path, {})
