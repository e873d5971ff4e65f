"""The ``[limits.<account>]`` section: file, environment, and what is refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from executor.config import ConfigError, describe, load_settings
from executor.safety.limits import AccountLimits, plan_for
from executor.safety.limits.config import DEFAULT_MAX_WAIT_MS


def test_limits_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[accounts.main]\nbroker = "paper"\n'
                    '[limits.main]\norders_per_10s = 20\norders_per_second = "2.5"\n')
    s = load_settings(path, {"ORDERSTREAM_LIMITS_MAIN_ORDERS_PER_10S": "30",
                             "ORDERSTREAM_LIMITS_MAIN_MAX_WAIT_MS": "2000"})
    limits = s.limits["main"]
    assert limits.orders_per_10s == 30 and limits.max_wait_ms == 2_000
    assert limits.orders_per_second == Decimal("2.5") and limits.weight_per_minute is None
    assert describe(s)["limits"]["main"]["orders_per_10s"] == 30


def test_an_account_without_a_section_has_none_in_the_config() -> None:
    assert load_settings(None, {}).limits == {}


@pytest.mark.parametrize(("env", "message"), [
    ({"ORDERSTREAM_LIMITS_DEFAULT_ORDERS_PER_DAY": "-1"}, "orders_per_day"),
    ({"ORDERSTREAM_LIMITS_DEFAULT_MAX_WAIT_MS": "20000"}, "max_wait_ms"),
    ({"ORDERSTREAM_LIMITS_DEFAULT_BURST": "0"}, "burst"),
    ({"ORDERSTREAM_LIMITS_DEFAULT_MAX_IN_FLIGHT": "-1"}, "max_in_flight"),
    ({"ORDERSTREAM_LIMITS_DEFAULT_IP_GROUP": "host 1"}, "ip_group"),
    ({"ORDERSTREAM_LIMITS_DEFAULT_IP_GROUP": ""}, "ip_group"),
])
def test_bad_limits_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env)


def test_limits_of_an_unknown_account_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[limits.ghost]\norders_per_10s = 5\n')
    with pytest.raises(ConfigError, match=r"limits\.ghost: no such account"):
        load_settings(path, {})


def test_no_call_waits_longer_than_half_the_visibility_timeout() -> None:
    # A batch held past the visibility timeout is taken over by another worker, which finds
    # its orders unsent and sends them itself: the default wait is cut down to half of it.
    assert plan_for(None, "binance").max_wait_ms == DEFAULT_MAX_WAIT_MS
    assert plan_for(None, "binance", visibility_timeout_ms=8_000).max_wait_ms == 4_000
    assert plan_for(AccountLimits(max_wait_ms=1_000), "paper",
                    visibility_timeout_ms=8_000).max_wait_ms == 1_000


def test_calls_in_flight_are_bounded_on_binance_by_default_and_as_configured() -> None:
    assert plan_for(None, "binance").max_in_flight == 4
    assert plan_for(None, "paper").max_in_flight == 0  # in-process: nothing to protect
    s = load_settings(None, {"ORDERSTREAM_LIMITS_DEFAULT_MAX_IN_FLIGHT": "0"})
    assert plan_for(s.limits["default"], "binance").max_in_flight == 0  # 0: off


def test_an_ip_group_comes_from_the_config_into_the_plan() -> None:
    s = load_settings(None, {"ORDERSTREAM_LIMITS_DEFAULT_IP_GROUP": "host-1"})
    assert s.limits["default"].ip_group == "host-1"
    assert plan_for(s.limits["default"], "binance").ip_group == "host-1"
    assert plan_for(None, "binance").ip_group is None


def test_the_accounts_of_one_ip_group_must_agree_on_the_weight_cap(tmp_path: Path) -> None:
    base = ('[accounts.a]\nbroker = "binance"\napi_key_env = "K"\napi_secret_env = "S"\n'
            '[accounts.b]\nbroker = "binance"\napi_key_env = "K"\napi_secret_env = "S"\n'
            '[limits.a]\nip_group = "host-1"\n[limits.b]\nip_group = "host-1"\n')
    path = tmp_path / "c.toml"
    path.write_text(base)
    assert load_settings(path, {}).limits["b"].ip_group == "host-1"  # both 6000, Binance's
    with pytest.raises(ConfigError, match=r"ip_group host-1 .* \(a 6000, b 1200\)"):
        load_settings(path, {"ORDERSTREAM_LIMITS_B_WEIGHT_PER_MINUTE": "1200"})
    # Another group, or none, is free to differ.
    env = {"ORDERSTREAM_LIMITS_B_WEIGHT_PER_MINUTE": "1200",
           "ORDERSTREAM_LIMITS_B_IP_GROUP": "host-2"}
    assert load_settings(path, env).limits["b"].weight_per_minute == 1200
