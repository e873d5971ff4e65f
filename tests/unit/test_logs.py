"""Log lines: one JSON object per line (or text), the order's ids as fields, secrets masked,
level and format from flags or the environment."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor import cli
from executor.config import ConfigError, _redact_secrets, load_settings
from executor.infra import logs
from executor.infra.connection import connection_options


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    yield out, logging.getLogger("executor.test")
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_order_and_keep_tracebacks_on_one_line(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    out, log = capture
    logs.setup("INFO", "json", out)
    log.info("plain %s", "line")
    log.warning("order %s: slow", "c-1", extra=logs.about("c-1", "1700000000000-0"))
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("order %s failed", "c-2", extra=logs.about("c-2"))
    log.debug("not at INFO")
    first, second, third = lines(out)
    assert set(first) == {"ts", "level", "logger", "msg"}
    assert first["level"] == "INFO" and first["logger"] == "executor.test"
    assert first["msg"] == "plain line" and first["ts"].endswith("Z")
    assert second["client_order_id"] == "c-1" and second["request_id"] == "1700000000000-0"
    assert third["client_order_id"] == "c-2" and "request_id" not in third
    assert "ValueError: boom" in third["exc"]
    assert len(out.getvalue().splitlines()) == 3, "a traceback stays inside its line"


def test_registered_secrets_are_masked_in_json_and_text(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    out, log = capture
    logs.redact("hunter2-secret")
    logs.redact("abc")  # too short to be a secret: ordinary words stay readable
    for fmt in ("json", "text"):
        logs.setup("DEBUG", fmt, out)
        log.info("url redis://:hunter2-secret@host abc", extra=logs.about("c-3"))
        try:
            raise RuntimeError("key hunter2-secret refused")
        except RuntimeError:
            log.exception("failed")
    text = out.getvalue()
    assert "hunter2-secret" not in text
    # Per format: the message, and the traceback's source line and exception message.
    assert text.count("***") == 6 and "abc" in text
    assert "[cid=c-3]" in text


def test_level_and_format_come_from_flags_then_environment() -> None:
    env = {"ORDERSTREAM_LOG_LEVEL": "debug", "ORDERSTREAM_LOG_FORMAT": "TEXT"}
    assert logs.settings(None, None, env, "json") == ("DEBUG", "text")
    assert logs.settings("error", "json", env, "text") == ("ERROR", "json")
    assert logs.settings(None, None, {}, "json") == ("INFO", "json")
    with pytest.raises(logs.LogConfigError, match=r"log level must be one of .* got 'LOUD'"):
        logs.settings(None, None, {"ORDERSTREAM_LOG_LEVEL": "loud"}, "json")
    with pytest.raises(logs.LogConfigError, match="must be json or text, got 'xml'"):
        logs.settings(None, None, {"ORDERSTREAM_LOG_FORMAT": "xml"}, "json")


def test_a_bad_log_level_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ORDERSTREAM_LOG_LEVEL", "chatty")
    assert cli.main(["schema"]) == 2
    assert "log level must be one of" in capsys.readouterr().err


def test_the_configuration_registers_every_secret_it_leads_to(tmp_path: Path) -> None:
    key_file = tmp_path / "api.key"
    key_file.write_text("file-secret-9876\n")
    env = {"REDIS_URL": "redis://user:url-secret-1234@redis:6379/0", "API_SECRET": "env-1357"}
    settings = load_settings(None, env)
    raw = {"accounts": {"live": {"api_secret_env": "API_SECRET",
                                 "api_key_file": str(key_file), "symbols": ["BTCUSDT"]}}}
    _redact_secrets(settings, raw, env)
    assert logs.masked("url-secret-1234 env-1357 file-secret-9876 BTCUSDT") == (
        "*** *** *** BTCUSDT")


def test_the_redis_password_can_come_from_a_named_variable() -> None:
    env = {"ORDERSTREAM_REDIS_PASSWORD_ENV": "MY_REDIS_PW", "MY_REDIS_PW": "pw-from-env-42"}
    settings = load_settings(None, env)
    assert settings.redis.password_env == "MY_REDIS_PW"
    assert logs.masked("pw-from-env-42") == "***"
    unset = {"ORDERSTREAM_REDIS_PASSWORD_ENV": "MY_REDIS_PW"}
    with pytest.raises(ConfigError, match="MY_REDIS_PW is not set"):
        connection_options(load_settings(None, unset).redis, unset)
    with pytest.raises(ConfigError, match="url has a password"):
        load_settings(None, {**env, "REDIS_URL": "redis://:other@localhost/0"})


def test_a_repeated_condition_is_logged_once_per_period_per_key() -> None:
    every = logs.Every(60_000)
    assert every.due("a", 0) and every.due("b", 10)
    assert not every.due("a", 59_999) and not every.due("b", 30_000)
    assert every.due("a", 60_000) and not every.due("a", 60_001)


def test_keys_not_seen_for_a_period_are_forgotten() -> None:
    every = logs.Every(1_000)
    for n in range(1024):
        assert every.due(n, 0)
    assert every.due("late", 5_000)  # the stale keys are dropped as the map fills
    assert len(every._at) == 1
    assert every.due(0, 5_000) and not every.due("late", 5_500)
