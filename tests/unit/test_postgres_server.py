"""How devtools.postgres_server finds PostgreSQL, on fake bin directories (no server runs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devtools import postgres_server
from devtools.postgres_server import (
    PostgresNotFound,
    find_postgres_bin_dir,
    parse_postgres_version,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", (15, 18)),
        ("postgres (PostgreSQL) 17.2\n", (17, 2)),
        ("postgres (PostgreSQL) 9.6.24\n", (9, 6, 24)),
        ("postgres (PostgreSQL) 18beta1\n", (18,)),
    ],
)
def test_parse_postgres_version(text: str, expected: tuple[int, ...]) -> None:
    assert parse_postgres_version(text) == expected


@pytest.mark.parametrize("text", ["", "postgres (PostgreSQL)", "postgres: not found"])
def test_parse_postgres_version_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="no PostgreSQL version"):
        parse_postgres_version(text)


def _fake_bin(directory: Path, version: str, *, initdb: bool = True) -> Path:
    directory.mkdir(parents=True)
    names = ["postgres", "initdb"] if initdb else ["postgres"]
    for name in names:
        script = directory / name
        script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Debian directory, no pg_config or initdb on PATH, no $POSTGRES_BIN_DIR."""
    root = tmp_path / "usr-lib-postgresql"
    monkeypatch.setattr(postgres_server, "_DEBIAN_ROOT", root)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv("POSTGRES_BIN_DIR", raising=False)
    return root


def test_newest_debian_version_wins(nothing_installed: Path) -> None:
    _fake_bin(nothing_installed / "13" / "bin", "13.16")
    newest = _fake_bin(nothing_installed / "16" / "bin", "16.4")
    _fake_bin(nothing_installed / "17" / "bin", "17.0", initdb=False)  # client tools only
    assert find_postgres_bin_dir(install=False) == newest


def test_initdb_on_path(nothing_installed: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _fake_bin(tmp_path / "opt" / "bin", "16.4")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_postgres_bin_dir(install=False) == bin_dir.resolve()


def test_explicit_dir_wins_and_must_work(nothing_installed: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bin(nothing_installed / "16" / "bin", "16.4")
    chosen = _fake_bin(tmp_path / "chosen", "14.1")
    monkeypatch.setenv("POSTGRES_BIN_DIR", str(chosen))
    assert find_postgres_bin_dir(install=False) == chosen
    monkeypatch.setenv("POSTGRES_BIN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="POSTGRES_BIN_DIR") as raised:
        find_postgres_bin_dir(install=False)
    # A wrong explicit choice is an error, never the "not installed" that tests skip on.
    assert not isinstance(raised.value, PostgresNotFound)


def test_missing_says_what_was_tried(nothing_installed: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PostgresNotFound, match="installing: disabled") as raised:
        find_postgres_bin_dir(install=False)
    assert "POSTGRES_BIN_DIR" in str(raised.value)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        with pytest.raises(PostgresNotFound, match="apt-get: skipped, not root"):
            find_postgres_bin_dir(install=True)


def test_database_names_are_checked() -> None:
    server = postgres_server.PostgresServer(Path("/nonexistent"))
    for bad in ["Upper", "semi;colon", "quo\"te", "1digit", "x" * 64, ""]:
        with pytest.raises(ValueError, match="database name"):
            server.create_database(bad)
