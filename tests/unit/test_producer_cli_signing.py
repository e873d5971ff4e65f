"""How the producer commands find their signing key: --key-id (or $ORDERSTREAM_KEY_ID)
with the secret in $ORDERSTREAM_KEY_SECRET or --key-file; a half-given key is an error
(exit 2) before anything is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.cli import build_parser, main
from producer import cli


def key_of(argv: list[str]) -> dict[str, object]:
    args = build_parser().parse_args(["submit", "--symbol", "BTCUSDT", "--side", "buy",
                                      "--quantity", "1", *argv])
    return cli.signing_key(args)


def test_secret_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.KEY_ID_ENV, raising=False)
    monkeypatch.setenv(cli.KEY_SECRET_ENV, "env-secret-0123456789")
    assert key_of(["--key-id", "k1"]) == {"key_id": "k1", "secret": b"env-secret-0123456789"}
    path = tmp_path / "key"
    path.write_text("file-secret-0123456789\n")
    assert key_of(["--key-id", "k1", "--key-file", str(path)]) == {
        "key_id": "k1", "secret": b"file-secret-0123456789"}
    assert key_of([]) == {}  # no key id: unsigned, whatever the environment holds


def test_half_a_key_is_an_error_before_publishing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.KEY_ID_ENV, raising=False)
    monkeypatch.delenv(cli.KEY_SECRET_ENV, raising=False)
    base = ["submit", "--redis-url", "redis://127.0.0.1:1/0", "--symbol", "BTCUSDT",
            "--side", "buy", "--quantity", "1"]
    assert main([*base, "--key-id", "k1"]) == 2
    assert "ORDERSTREAM_KEY_SECRET" in capsys.readouterr().err
    (tmp_path / "key").write_text("file-secret-0123456789")
    assert main([*base, "--key-file", str(tmp_path / "key")]) == 2
    assert "--key-id" in capsys.readouterr().err
    assert main([*base, "--key-id", "k1", "--key-file", str(tmp_path / "none")]) == 2
    assert "cannot read --key-file" in capsys.readouterr().err
