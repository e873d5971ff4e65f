"""Partitions: how a deployment splits over several key prefixes, and which one an account's
requests go to.

A partitioned deployment keeps each partition under its own prefix, ``{<prefix>-<n>}`` for
``n`` in ``0 .. count-1``: the braces make every key of a partition hash to one Redis Cluster
slot (its scripts and MULTI span them), and different partitions hash to different slots,
which the cluster spreads over its masters. Each account belongs to exactly one partition,
named in the configuration (``[partitions.accounts]``), so an account's orders, risk state,
rate limits and breaker live in one place and stay ordered there.

The rule for a producer in any language: read ``redis.prefix`` (default ``orders``) and the
``[partitions]`` table of the workers' TOML file; a request for account ``a`` (``default``
when it names none) goes to the stream ``{<prefix>-<accounts[a]>}:pending``, and its result
to ``{<prefix>-<accounts[a]>}:completed`` or ``:failed``. A deployment with ``count = 0``
(the default) is not partitioned: everything lives under ``<prefix>`` itself.

This module is pure (no I/O besides reading that file) so that the workers' configuration
and the producer client share one rule.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .keys import DEFAULT_PREFIX

DEFAULT_ACCOUNT = "default"


class WrongPartition(ValueError):
    """A request reached a partition that does not hold its account."""


class UnknownAccount(ValueError):
    """An account the partition map does not name."""


def partition_prefix(prefix: str, n: int) -> str:
    """The key prefix of partition ``n`` of the deployment whose prefix is ``prefix``."""
    return f"{{{prefix}-{n}}}"


class Partitions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[partitions]`` table of the configuration."""

    # How many partitions; 0: the deployment is not partitioned.
    count: int = 0
    # Account -> its partition. With count > 0 every configured account must be named: an
    # account's partition is never guessed, since moving it would split its orders and its
    # risk state over two partitions.
    accounts: dict[str, int] = msgspec.field(default_factory=dict)
    # The partitions a worker serves (one process, one consumer per partition); None: all.
    serve: list[int] | None = None

    def check(self, prefix: str) -> None:
        """ValueError naming the field for a table that cannot work."""
        if self.count < 0:
            raise ValueError(f"partitions.count must not be negative, got {self.count}")
        if self.count == 0:
            if self.accounts or self.serve:
                raise ValueError("partitions.accounts and partitions.serve need "
                                 "partitions.count >= 1")
            return
        if "{" in prefix or "}" in prefix:
            raise ValueError(
                f"redis.prefix {prefix!r} must have no braces when partitions.count is set: "
                f"each partition's prefix is {partition_prefix(prefix, 0)!r} and so on")
        for account, n in sorted(self.accounts.items()):
            if not 0 <= n < self.count:
                raise ValueError(f"partitions.accounts.{account} is {n}: partitions are "
                                 f"numbered 0 to {self.count - 1}")
        if self.serve is not None:
            if not self.serve:
                raise ValueError("partitions.serve is empty: the worker would serve nothing")
            bad = [n for n in self.serve if not 0 <= n < self.count]
            if bad:
                raise ValueError(f"partitions.serve names partition {bad[0]}: partitions are "
                                 f"numbered 0 to {self.count - 1}")
            if len(set(self.serve)) != len(self.serve):
                raise ValueError("partitions.serve names a partition twice")

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def served(self) -> list[int]:
        """The partitions a worker with this table serves, in order."""
        return sorted(self.serve) if self.serve is not None else list(range(self.count))

    def of(self, account: str | None) -> int:
        """The partition of ``account`` (``default`` for None); UnknownAccount if none."""
        name = account or DEFAULT_ACCOUNT
        n = self.accounts.get(name)
        if n is None:
            known = ", ".join(sorted(self.accounts)) or "none"
            raise UnknownAccount(f"account `{name}` is in no partition (partitions.accounts "
                                 f"names: {known})")
        return n

    def accounts_of(self, n: int) -> list[str]:
        return sorted(a for a, p in self.accounts.items() if p == n)


class Deployment(msgspec.Struct, frozen=True):
    """Where a deployment's keys live: its prefix and how it is partitioned."""

    prefix: str = DEFAULT_PREFIX
    partitions: Partitions = msgspec.field(default_factory=Partitions)

    def prefixes(self) -> list[str]:
        """Every partition's prefix (the one prefix of an unpartitioned deployment)."""
        if not self.partitions.enabled:
            return [self.prefix]
        return [partition_prefix(self.prefix, n) for n in range(self.partitions.count)]

    def prefix_of(self, account: str | None) -> str:
        """The prefix an account's requests go to; UnknownAccount for an account no
        partition holds."""
        if not self.partitions.enabled:
            return self.prefix
        return partition_prefix(self.prefix, self.partitions.of(account))


def load_deployment(path: str | Path) -> Deployment:
    """The deployment of the workers' TOML file at ``path`` (``redis.prefix`` and
    ``[partitions]``), for producers that route by account; ValueError when it is wrong."""
    try:
        raw: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    return deployment_of(raw.get("redis", {}).get("prefix", DEFAULT_PREFIX),
                         raw.get("partitions", {}))


def deployment_of(prefix: str, table: Mapping[str, Any] | Partitions) -> Deployment:
    """A checked Deployment from a prefix and a ``[partitions]`` table."""
    try:
        partitions = (table if isinstance(table, Partitions)
                      else msgspec.convert(table, Partitions, strict=False))
    except msgspec.ValidationError as exc:
        raise ValueError(f"partitions: {exc}") from None
    partitions.check(prefix)
    return Deployment(prefix, partitions)
