"""Binance account settings: read from TOML and the environment like every account, secrets
only by reference, and the order types the paper exchange does not support refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor.brokers.binance.broker import BinanceBroker
from executor.brokers.binance.config import BinanceAccount
from executor.brokers.circuit import CircuitBroker
from executor.brokers.paper import PaperAccount
from executor.brokers.paper.matching import check as paper_check
from executor.config import ConfigError, describe, load_settings
from producer.contract import (
    ContractError,
    OrderSpec,
    OrderType,
    Request,
    Side,
    WireDecimal,
    decode_request,
)
from producer.validation import check_request

TOML = """
[accounts.main]
broker = "binance"
api_key_env = "BN_KEY"
api_secret_file = "{secret}"
testnet = true
orphans = "adopt"

[accounts.paper]
broker = "paper"
"""


def test_a_binance_account_from_toml_and_environment(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    path = tmp_path / "c.toml"
    path.write_text(TOML.format(secret=secret))
    env = {"BN_KEY": "k3y-value", "ORDERSTREAM_ACCOUNTS_MAIN_ROUND_QUANTITY": "true",
           "ORDERSTREAM_ACCOUNTS_MAIN_BASE_URL": "http://127.0.0.1:8090",
           "ORDERSTREAM_ACCOUNTS_PAPER_LATENCY_MS": "5"}
    s = load_settings(path, env)
    main = s.accounts["main"]
    assert isinstance(main, BinanceAccount)
    assert (main.round_quantity, main.orphans, main.testnet) == (True, "adopt", True)
    assert main.rest_url() == "http://127.0.0.1:8090/api"
    assert main.ws_url() == "ws://127.0.0.1:8090/ws-api/v3"
    paper = s.accounts["paper"]
    assert isinstance(paper, PaperAccount) and paper.latency_ms == 5
    shown = json.dumps(describe(s))
    assert "s3cr3t-value" not in shown and "k3y-value" not in shown
    assert '"api_key_env": "BN_KEY"' in shown  # where it is, never what it is


def test_the_lookup_window_is_12_s_by_default_and_the_broker_tells_it_through_its_guards(
        tmp_path: Path) -> None:
    assert BinanceAccount(api_key_env="K", api_secret_env="S").lookup_window_ms == 12_000
    path = tmp_path / "c.toml"
    path.write_text('[accounts.main]\nbroker = "binance"\napi_key_env = "K"\n'
                    'api_secret_env = "S"\n')
    s = load_settings(path, {"ORDERSTREAM_ACCOUNTS_MAIN_LOOKUP_WINDOW_MS": "20000"})
    account = s.accounts["main"]
    assert isinstance(account, BinanceAccount) and account.lookup_window_ms == 20_000
    # The submit step reads it with getattr on the guarded broker it is given.
    guarded = CircuitBroker(BinanceBroker("main", account), breaker=None)  # type: ignore[arg-type]
    assert getattr(guarded, "lookup_window_ms", None) == 20_000


def test_an_account_that_names_no_broker_is_a_paper_account(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[accounts.x]\nlatency_ms = 3\n")
    account = load_settings(path, {"ORDERSTREAM_ACCOUNTS_X_SEED": "9"}).accounts["x"]
    assert isinstance(account, PaperAccount)
    assert (account.latency_ms, account.seed) == (3, 9)


def test_credentials_are_read_from_env_or_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  the-secret\n")
    monkeypatch.setenv("BN_KEY", "the-key")
    account = BinanceAccount(api_key_env="BN_KEY", api_secret_file=str(secret))
    assert account.credentials() == ("the-key", "the-secret")
    monkeypatch.delenv("BN_KEY")
    with pytest.raises(ValueError, match="BN_KEY is not set"):
        account.credentials()
    secret.write_text("")
    monkeypatch.setenv("BN_KEY", "the-key")
    with pytest.raises(ValueError, match="is empty"):
        account.credentials()
    secret.write_text("the-secret")
    monkeypatch.setenv("BN_KEY", " \t ")
    with pytest.raises(ValueError, match="api_key: BN_KEY holds only blanks"):
        account.credentials()
    secret.unlink()
    monkeypatch.setenv("BN_KEY", "the-key")
    with pytest.raises(ValueError, match="api_secret_file: cannot read") as caught:
        account.credentials()
    assert "the-key" not in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [
    ('api_secret_env = "S"', "exactly one of api_key_env and api_key_file"),
    ('api_key_env = "K"\napi_key_file = "f"\napi_secret_env = "S"', "exactly one"),
    ('api_key_env = "K"\napi_secret_env = "S"\nrecv_window_ms = 60001', "recv_window_ms"),
    ('api_key_env = "K"\napi_secret_env = "S"\nbase_url = "ftp://x"', "base_url"),
    # Below Binance's 10 s backend timeout, or shorter than a request stays acceptable.
    ('api_key_env = "K"\napi_secret_env = "S"\nlookup_window_ms = 9999', "lookup_window_ms"),
    ('api_key_env = "K"\napi_secret_env = "S"\nrecv_window_ms = 20000\n'
     'lookup_window_ms = 15000', "lookup_window_ms.*recv_window_ms"),
    ('api_key_env = "K"\napi_secret_env = "S"\norphans = "ignore"', "orphans"),
    ('api_key_env = "K"\napi_secret_env = "S"\napi_secret = "inline"', "api_secret"),
])
def test_bad_binance_accounts_are_clear_errors(tmp_path: Path, text: str,
                                               message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[accounts.main]\nbroker = "binance"\n{text}\n')
    with pytest.raises(ConfigError, match=message):
        load_settings(path, {})


def test_limit_maker_needs_a_price_and_the_paper_exchange_refuses_it() -> None:
    req = decode_request(b'{"symbol":"BTCUSDT","side":"buy","type":"limit_maker",'
                         b'"quantity":"0.01"}')
    with pytest.raises(ContractError) as caught:
        check_request(req)
    assert caught.value.field == "price"
    check_request(Request(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT_MAKER,
                          quantity=WireDecimal("0.01"), price=WireDecimal("1")))
    order = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY,
                      type=OrderType.LIMIT_MAKER, quantity=WireDecimal("0.01"),
                      price=WireDecimal("49000"))
    with pytest.raises(ContractError) as caught:
        paper_check(order, PaperAccount())
    assert caught.value.field == "type" and "limit_maker" in str(caught.value)
