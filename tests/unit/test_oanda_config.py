"""OANDA account settings: exactly one source per secret, hosts per venue, and secrets
never in a repr or an error."""

from __future__ import annotations

import msgspec
import pytest

from executor.brokers.oanda.broker import OandaBroker
from executor.brokers.oanda.config import OandaAccount
from executor.config import Settings

TOKEN = "oanda-token-never-shown-0123456789"


def test_exactly_one_source_per_secret() -> None:
    with pytest.raises(ValueError, match="exactly one of token_env and token_file"):
        OandaAccount(account_id_env="A", token_env="T", token_file="/t")
    with pytest.raises(ValueError, match="exactly one of account_id_env and account_id_file"):
        OandaAccount(token_env="T")
    with pytest.raises(ValueError, match="lookup_window_ms"):
        OandaAccount(account_id_env="A", token_env="T", lookup_window_ms=1_000)


def test_practice_by_default_and_the_hosts() -> None:
    practice = OandaAccount(account_id_env="A", token_env="T")
    assert practice.venue() == "practice"
    assert practice.rest_url() == "https://api-fxpractice.oanda.com"
    assert practice.streaming_url() == "https://stream-fxpractice.oanda.com"
    live = OandaAccount(account_id_env="A", token_env="T", practice=False)
    assert live.venue() == "live"
    assert live.rest_url() == "https://api-fxtrade.oanda.com"
    assert live.streaming_url() == "https://stream-fxtrade.oanda.com"
    local = OandaAccount(account_id_env="A", token_env="T", base_url="http://127.0.0.1:1/")
    assert local.rest_url() == "http://127.0.0.1:1"


def test_an_oanda_account_in_the_settings() -> None:
    raw = {"accounts": {"fx": {"broker": "oanda", "account_id_env": "A", "token_env": "T",
                               "instruments": ["EUR_USD", "USD_JPY"]}}}
    settings = msgspec.convert(raw, Settings)
    account = settings.accounts["fx"]
    assert isinstance(account, OandaAccount) and account.instruments == ["EUR_USD", "USD_JPY"]
    assert account.pricing_stream  # prices streamed unless switched off
    raw["accounts"]["fx"]["pricing_stream"] = False
    off = msgspec.convert(raw, Settings).accounts["fx"]
    assert isinstance(off, OandaAccount) and not off.pricing_stream
    with pytest.raises(msgspec.ValidationError, match="token"):
        msgspec.convert({"accounts": {"fx": {"broker": "oanda", "account_id_env": "A",
                                             "token": TOKEN}}}, Settings)


def test_secrets_are_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_TOKEN", TOKEN)
    monkeypatch.setenv("OA_ACCOUNT", "101-004-1234567-001")
    account = OandaAccount(account_id_env="OA_ACCOUNT", token_env="OA_TOKEN")
    assert account.credentials() == ("101-004-1234567-001", TOKEN)
    assert TOKEN not in repr(account) and TOKEN not in repr(OandaBroker("fx", account))
    monkeypatch.setenv("OA_TOKEN", "   ")
    with pytest.raises(ValueError) as info:
        account.credentials()
    assert "OA_TOKEN" in str(info.value)
    monkeypatch.delenv("OA_TOKEN")
    with pytest.raises(ValueError, match="OA_TOKEN is not set"):
        account.credentials()


def test_a_bad_account_id_is_refused_without_showing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from executor.brokers.base import AuthenticationFailed

    monkeypatch.setenv("OA_TOKEN", TOKEN)
    monkeypatch.setenv("OA_ACCOUNT", "../../secret-path")
    broker = OandaBroker("fx", OandaAccount(account_id_env="OA_ACCOUNT", token_env="OA_TOKEN",
                                            base_url="http://127.0.0.1:9"))
    with pytest.raises(AuthenticationFailed) as info:
        asyncio.run(broker.start())
    assert "secret-path" not in str(info.value) and TOKEN not in str(info.value)
