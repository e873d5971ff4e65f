from __future__ import annotations

from pathlib import Path

import pytest

from executor.config import ConfigError, describe, load_settings, mask_url


def test_defaults_with_no_config_at_all() -> None:
    s = load_settings(None, {})
    assert s.redis.url == "redis://localhost:6379/0"
    assert s.redis.prefix == "orders"
    assert list(s.accounts) == ["default"]
    assert set(s.accounts["default"].symbols) >= {"BTCUSDT", "ETHUSDT", "EUR_USD"}
    assert s.worker.consumer  # host-pid
    # The socket timeout always exceeds the read block (redis-py issue 3138).
    assert s.redis.socket_timeout_s * 1000 > s.worker.block_ms


def test_file_then_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[redis]\nprefix = "{orders}"\n[worker]\nbatch_size = 50\nmax_deliveries = 7\n'
        '[accounts.alpha]\nbroker = "paper"\nlatency_ms = 5\n'
    )
    env = {
        "ORDERSTREAM_CONFIG": str(path),
        "REDIS_URL": "redis://user:s3cret@example:6380/2",
        "ORDERSTREAM_BATCH_SIZE": "25",
        "ORDERSTREAM_CONSUMER": "worker-9",
        "ORDERSTREAM_VISIBILITY_TIMEOUT_MS": "1234",
        "ORDERSTREAM_METRICS_PORT": "9999",
        "ORDERSTREAM_ACCOUNTS_ALPHA_LATENCY_MS": "7",
    }
    s = load_settings(None, env)
    assert s.redis.prefix == "{orders}"
    assert s.redis.url.endswith("@example:6380/2")
    assert s.worker.batch_size == 25 and s.worker.max_deliveries == 7
    assert s.worker.consumer == "worker-9"
    assert s.worker.visibility_timeout_ms == 1234 and s.worker.metrics_port == 9999
    assert list(s.accounts) == ["alpha"] and s.accounts["alpha"].latency_ms == 7
    shown = describe(s)
    assert "s3cret" not in str(shown)
    assert shown["redis"]["url"] == "redis://user:***@example:6380/2"


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[worker]\nbatchsize = 5\n", {}, "batchsize"),
        ("[worker]\nbatch_size = 0\n", {}, "batch_size"),
        ("[redis\n", {}, "TOML"),
        ("", {"ORDERSTREAM_BATCH_SIZE": "many"}, "batch_size"),
        ('[accounts.x]\nbroker = "nobroker"\n', {}, "nobroker"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, env: dict[str, str],
                                     match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(path, env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml", {})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://u:pw@h:1/0", "rediss://u:***@h:1/0"),
        ("redis://token@h:1/0", "redis://***@h:1/0"),
        ("rediss://u:pw@h:1/0?password=pw2&ssl_ca_certs=/etc/ca.pem",
         "rediss://u:***@h:1/0?password=***&ssl_ca_certs=/etc/ca.pem"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
