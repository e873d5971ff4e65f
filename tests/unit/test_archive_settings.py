"""``[archive]``: environment overrides, refusals that name the field, the URL masked where
the configuration is shown, a URL kept in a file, and the async drivers chosen for the URLs
people write."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.archive.store import async_url
from executor.config import ConfigError, describe, load_settings


def test_the_environment_names_the_archive() -> None:
    s = load_settings(None, {"ORDERSTREAM_ARCHIVE_URL": "sqlite:///x.db",
                             "ORDERSTREAM_ARCHIVE_BATCH": "50",
                             "ORDERSTREAM_ARCHIVE_READER": "audit-copy"})
    assert (s.archive.url, s.archive.batch, s.archive.reader) == ("sqlite:///x.db", 50,
                                                                  "audit-copy")
    assert load_settings(None, {}).archive.database_url() == "sqlite:///orderstream.db"


@pytest.mark.parametrize(("name", "value", "field"), [
    ("BATCH", "0", "archive.batch"), ("BATCH", "10001", "archive.batch"),
    ("BLOCK_MS", "0", "archive.block_ms"), ("READER", "a:b", "archive.reader"),
])
def test_bad_values_are_refused_naming_the_field(name: str, value: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(None, {f"ORDERSTREAM_ARCHIVE_{name}": value})


def test_the_password_is_masked_and_may_live_in_a_file(tmp_path: Path) -> None:
    s = load_settings(None, {"ORDERSTREAM_ARCHIVE_URL": "postgresql://arch:hunter2@db/x"})
    assert describe(s)["archive"]["url"] == "postgresql://arch:***@db/x"
    secret = tmp_path / "url"
    secret.write_text("postgresql://arch:hunter2@db/x\n")
    s = load_settings(None, {"ORDERSTREAM_ARCHIVE_URL_FILE": str(secret)})
    assert s.archive.database_url() == "postgresql://arch:hunter2@db/x"
    assert "hunter2" not in str(describe(s))
    missing = load_settings(None, {"ORDERSTREAM_ARCHIVE_URL_FILE": str(tmp_path / "none")})
    with pytest.raises(ValueError, match=r"archive\.url_file"):
        missing.archive.database_url()


def test_urls_get_their_asyncio_drivers() -> None:
    assert async_url("sqlite:///a.db") == "sqlite+aiosqlite:///a.db"
    assert async_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_url("postgres://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_url("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"


def test_a_deployment_name_sets_the_rows_source() -> None:
    s = load_settings(None, {"ORDERSTREAM_ARCHIVE_DEPLOYMENT": "desk-a"})
    assert s.archive.source("{orders-1}") == "desk-a/{orders-1}"
    assert load_settings(None, {}).archive.source("orders") == "orders"
    with pytest.raises(ConfigError, match=r"archive\.deployment"):
        load_settings(None, {"ORDERSTREAM_ARCHIVE_DEPLOYMENT": "a/b"})
