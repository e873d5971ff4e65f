"""The partition map (producer/partitions.py): which prefix an account's requests go to, and
the tables that are refused, each with an error naming the field to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.partitions import (
    Deployment,
    Partitions,
    UnknownAccount,
    deployment_of,
    load_deployment,
    partition_prefix,
)

TWO = Partitions(count=2, accounts={"default": 0, "alpha": 1})


def test_each_account_goes_to_its_partitions_hash_tagged_prefix() -> None:
    d = Deployment("orders", TWO)
    assert d.prefixes() == ["{orders-0}", "{orders-1}"]
    assert d.prefix_of("alpha") == "{orders-1}" == partition_prefix("orders", 1)
    assert d.prefix_of(None) == d.prefix_of("default") == "{orders-0}"
    with pytest.raises(UnknownAccount, match=r"account `beta` is in no partition.*alpha, "
                                             "default"):
        d.prefix_of("beta")


def test_an_unpartitioned_deployment_is_its_one_prefix_for_every_account() -> None:
    d = Deployment("{orders}")
    assert d.prefixes() == ["{orders}"]
    assert d.prefix_of("anyone") == d.prefix_of(None) == "{orders}"


@pytest.mark.parametrize(("table", "prefix", "message"), [
    (Partitions(count=-1), "orders", r"partitions\.count must not be negative, got -1"),
    (Partitions(accounts={"a": 0}), "orders", r"partitions\.accounts and partitions\.serve "
                                              r"need partitions\.count >= 1"),
    (Partitions(serve=[0]), "orders", r"need partitions\.count >= 1"),
    (Partitions(count=2, accounts={"a": 2}), "orders",
     r"partitions\.accounts\.a is 2: partitions are numbered 0 to 1"),
    (Partitions(count=2, accounts={"a": -1}), "orders", r"partitions\.accounts\.a is -1"),
    (Partitions(count=2, serve=[]), "orders", r"partitions\.serve is empty"),
    (Partitions(count=2, serve=[0, 0]), "orders", r"partitions\.serve names a partition twice"),
    (Partitions(count=2, serve=[1, 2]), "orders", r"partitions\.serve names partition 2"),
    (Partitions(count=2), "{orders}", r"redis\.prefix '\{orders\}' must have no braces"),
    (Partitions(count=2), "orders}", r"redis\.prefix 'orders\}' must have no braces"),
])
def test_a_table_that_cannot_work_is_refused_naming_its_field(
    table: Partitions, prefix: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        table.check(prefix)
    with pytest.raises(ValueError, match=message):
        deployment_of(prefix, table)


def test_a_table_that_works_is_accepted() -> None:
    Partitions().check("{orders}")  # unpartitioned: braces are the cluster's hash tag
    Partitions(count=2, accounts={"a": 0, "b": 1}, serve=[1, 0]).check("orders")
    assert Partitions(count=3, serve=[2, 0]).served() == [0, 2]
    assert Partitions(count=2).served() == [0, 1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orderstream.toml"
    path.write_text(text)
    return path


def test_load_deployment_reads_the_prefix_and_the_partitions_of_the_workers_file(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[redis]\nprefix = "desk"\n[accounts.alpha]\nbroker = "paper"\n'
                 '[partitions]\ncount = 2\naccounts = {default = 0, alpha = 1}\n')
    d = load_deployment(path)
    assert d == Deployment("desk", Partitions(count=2, accounts={"default": 0, "alpha": 1}))
    assert d.prefix_of("alpha") == "{desk-1}"
    assert load_deployment(write(tmp_path, "")) == Deployment("orders", Partitions())


@pytest.mark.parametrize(("text", "message"), [
    ('[partitions]\ncount = 2\naccounts = {a = 5}\n', r"partitions\.accounts\.a is 5"),
    ('[partitions]\ncount = "many"\n', r"partitions: .*\$\.count"),
    ('[partitions]\ncount = 1\nweights = 3\n', r"partitions: .*weights"),
    ('[redis]\nprefix = "{o}"\n[partitions]\ncount = 1\n', r"redis\.prefix '\{o\}'"),
    ("[partitions\n", r"is not valid TOML"),
])
def test_load_deployment_errors_name_the_field(tmp_path: Path, text: str,
                                               message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_deployment(write(tmp_path, text))


def test_load_deployment_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"cannot read {tmp_path}/none"):
        load_deployment(tmp_path / "none")
