"""The deployment's mode: an account that trades real money needs mode = "live", and a
live deployment takes no practice account; each refusal names the account. The mode is
shown by `orderstream config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.config import ConfigError, describe, load_settings

BINANCE = """
[accounts.desk]
broker = "binance"
api_key_env = "K"
api_secret_env = "S"
"""


def settings(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, env or {})


@pytest.mark.parametrize(
    ("text", "env", "mode"),
    [
        ("", {}, "paper"),  # the default: the paper exchange only
        (BINANCE, {}, "paper"),  # testnet, the Binance default: test money
        ('mode = "practice"\n' + BINANCE, {}, "practice"),
        ('mode = "live"\n' + BINANCE + "testnet = false\n", {}, "live"),
        (BINANCE + "testnet = false\n", {"ORDERSTREAM_MODE": "live"}, "live"),
        ('mode = "live"\n[accounts.sim]\nbroker = "paper"\n', {}, "live"),
    ],
)
def test_modes_that_fit_their_accounts(tmp_path: Path, text: str, env: dict[str, str],
                                       mode: str) -> None:
    s = settings(tmp_path, text, env)
    assert s.mode == mode  # type: ignore[attr-defined]
    assert describe(s)["mode"] == mode  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        # Real money without a deliberate mode = "live".
        (BINANCE + "testnet = false\n", {}, r"accounts\.desk trades real money .* mode is "
                                            r"'paper'"),
        ('mode = "practice"\n' + BINANCE + "testnet = false\n", {}, "accounts.desk trades "
                                                                    "real money"),
        # A live deployment with a practice account in it.
        ('mode = "live"\n' + BINANCE, {}, r"accounts\.desk is a practice account"),
        (BINANCE, {"ORDERSTREAM_MODE": "live"}, "practice account"),
        ("", {"ORDERSTREAM_MODE": "real"}, "mode"),
        # A live host cannot pass for the testnet.
        (BINANCE + 'base_url = "https://api.binance.com"\n', {}, "is Binance's live API"),
    ],
)
def test_a_mode_that_does_not_fit_an_account_is_refused_naming_it(
        tmp_path: Path, text: str, env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        settings(tmp_path, text, env)


def test_a_testnet_account_may_point_at_a_local_server(tmp_path: Path) -> None:
    s = settings(tmp_path, BINANCE + 'base_url = "http://127.0.0.1:8080"\n')
    assert s.accounts["desk"].venue() == "practice"  # type: ignore[attr-defined]
