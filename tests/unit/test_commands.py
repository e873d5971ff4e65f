"""The operator commands' exit codes when they cannot do their job: 2, never 0 or 1 (replay's
"no difference" and "differences")."""

from __future__ import annotations

import socket

import pytest

from executor.cli import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.mark.parametrize("command", ["replay", "orders", "positions", "info"])
def test_unreachable_redis_is_exit_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    assert main([command, "--redis-url", url]) == 2
    assert capsys.readouterr().err.startswith("error: redis:")


def test_an_unreadable_config_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--config", "/nonexistent/orderstream.toml"]) == 2
    assert "cannot read config file" in capsys.readouterr().err
