"""How the producer commands find the deployment: --config (or $ORDERSTREAM_CONFIG), the
workers' TOML file, routes each command by --account; --prefix alone is an unpartitioned
deployment as before; the two naming different prefixes is an error (exit 2) before
anything is published. The operator commands keep their own --config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis, FakeRedis, FakeServer

from executor.cli import build_parser, main
from producer import cli, client
from producer.contract import decode_request
from producer.partitions import Deployment, Partitions

TOML = ('[redis]\nprefix = "desk"\n[accounts.alpha]\nbroker = "paper"\n'
        '[partitions]\ncount = 2\naccounts = {default = 0, alpha = 1}\n')
URL = ["--redis-url", "redis://127.0.0.1:1/0"]  # nothing listens: nothing may be sent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (cli.CONFIG_ENV, cli.PREFIX_ENV, cli.KEY_ID_ENV, cli.KEY_SECRET_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "orderstream.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """Every client the commands open talks to this one fake server."""
    shared = FakeServer()

    def fake(url: str, *, cluster: bool = False, **options: Any) -> Any:
        return FakeAsyncRedis(server=shared)

    monkeypatch.setattr(client, "redis_client", fake)
    yield shared


def where(argv: list[str]) -> str | Deployment:
    return cli.deployment(build_parser().parse_args(["cancel", "c-1", *argv]))


def test_the_deployment_comes_from_config_or_env_and_a_plain_prefix_as_before(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two = Deployment("desk", Partitions(count=2, accounts={"default": 0, "alpha": 1}))
    assert where([]) == "orders"
    assert where(["--prefix", "{o}"]) == "{o}"
    assert where(["--config", str(config)]) == two
    assert where(["--config", str(config), "--prefix", "desk"]) == two  # the same: fine
    monkeypatch.setenv(cli.CONFIG_ENV, str(config))
    assert where([]) == two
    assert where(["--config", "", "--prefix", "{o}"]) == "{o}"  # '' turns the file off
    # The workers take $ORDERSTREAM_REDIS_PREFIX over the file's redis.prefix.
    monkeypatch.setenv(cli.PREFIX_ENV, "blue")
    assert where([]) == Deployment("blue", two.partitions)


def test_a_prefix_and_a_config_that_disagree_are_an_error(config: Path) -> None:
    with pytest.raises(cli.UsageError, match=r"--prefix \{orders-1\} conflicts with --config"):
        where(["--config", str(config), "--prefix", "{orders-1}"])


@pytest.mark.parametrize(("text", "message"), [
    ('[partitions]\ncount = 2\naccounts = {alpha = 7}\n', r"partitions\.accounts\.alpha is 7"),
    ('[redis]\nprefix = "{desk}"\n[partitions]\ncount = 2\n', r"redis\.prefix '\{desk\}'"),
])
def test_a_config_that_cannot_route_is_an_error_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(cli.UsageError, match=rf"--config {path}: {message}"):
        where(["--config", str(path)])


def test_submit_goes_to_the_partition_of_its_account(config: Path,
                                                     server: FakeServer) -> None:
    base = ["submit", *URL, "--config", str(config), "--symbol", "BTCUSDT", "--side", "buy",
            "--quantity", "1", "--no-wait"]
    assert main([*base, "--account", "alpha"]) == 0
    assert main(base) == 0  # no account: the default account's partition
    r = FakeRedis(server=server)
    ((_, alpha),) = r.xrange("{desk-1}:pending")
    ((_, default),) = r.xrange("{desk-0}:pending")
    assert decode_request(alpha[b"data"]).account == "alpha"
    assert decode_request(default[b"data"]).account is None
    assert set(r.keys()) == {b"{desk-0}:pending", b"{desk-1}:pending"}


def test_cancel_for_an_account_in_no_partition_exits_2_with_nothing_sent(
    config: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cancel", "c-1", *URL, "--config", str(config), "--account", "beta",
                 "--no-wait"]) == 2
    assert "account `beta` is in no partition" in capsys.readouterr().err
    assert FakeRedis(server=server).keys() == []


def test_watch_on_a_partitioned_deployment_needs_one_partition(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", *URL, "--config", str(config)]) == 2
    assert "--account or --partition" in capsys.readouterr().err
    assert main(["watch", *URL, "--config", str(config), "--partition", "2"]) == 2
    assert "numbered 0 to 1" in capsys.readouterr().err
    assert main(["watch", *URL, "--partition", "0"]) == 2  # unpartitioned
    assert "is not partitioned" in capsys.readouterr().err


def test_operator_commands_keep_their_own_config_and_prefix(config: Path) -> None:
    trading = build_parser().parse_args(["trading", "--config", str(config)])
    assert (trading.config, trading.prefix) == (str(config), "orders")
    kill = build_parser().parse_args(["kill", "--prefix", "{orders-1}"])
    assert kill.prefix == "{orders-1}" and kill.config is None and kill.partition is None
