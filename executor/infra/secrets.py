"""Reading the secrets that the configuration names: producer keys and the Redis password.

The configuration holds only where a secret is (an environment variable or a file), so
``orderstream config`` can print it whole; the value is read when a worker starts, and a
missing one stops the start with a ConfigError naming the setting, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from producer.signing import MIN_SECRET_BYTES, key_file_secret

from .errors import ConfigError

if TYPE_CHECKING:
    # Types only: the configuration imports the brokers' account settings, which read their
    # secrets here, so this module must not import the configuration when it runs.
    from ..config import AuthSettings
    from .connection import RedisSettings


def read_secret(setting: str, *, env_name: str | None, file: str | None,
                environ: Mapping[str, str] | None = None) -> bytes:
    """The secret in environment variable ``env_name`` or in ``file`` (one of them is set).
    Trailing blanks and newlines of a file are dropped (``echo secret > file``)."""
    environ = os.environ if environ is None else environ
    if env_name:
        value = environ.get(env_name)
        if value is None:
            raise ConfigError(f"{setting}_env: environment variable {env_name} is not set")
        secret = value.encode()
        where = f"environment variable {env_name}"
    else:
        assert file
        try:
            secret = key_file_secret(Path(file).read_bytes())
        except OSError as exc:
            raise ConfigError(f"{setting}_file: cannot read {file}: {exc.strerror}") from None
        where = f"file {file}"
    if not secret:
        raise ConfigError(f"{setting}: {where} is empty")
    return secret


def one_source(broker: str, setting: str, env: str | None, file: str | None) -> None:
    """A broker account names exactly one of ``<setting>_env`` and ``<setting>_file``."""
    if (env is None) == (file is None):
        raise ValueError(f"a {broker} account needs exactly one of {setting}_env and "
                         f"{setting}_file")


def secret_text(setting: str, env: str | None, file: str | None) -> str:
    """A broker credential as text, blanks around it dropped. Errors (a ValueError) name
    where it was looked for, never what was found."""
    value = read_secret(setting, env_name=env, file=file).decode(errors="replace").strip()
    if not value:
        raise ValueError(f"{setting}: {env or file} holds only blanks")
    return value


@dataclass(frozen=True, slots=True)
class ProducerSecret:
    secret: bytes
    accounts: frozenset[str] | None  # None: every account

    def __repr__(self) -> str:  # never the secret, even in a traceback's locals
        return f"ProducerSecret(accounts={self.accounts!r})"


def producer_keys(auth: AuthSettings, environ: Mapping[str, str] | None = None
                  ) -> dict[str, ProducerSecret]:
    """key_id -> secret and accounts, for every configured producer key."""
    keys: dict[str, ProducerSecret] = {}
    for key_id, key in auth.keys.items():
        setting = f"auth.keys.{key_id}.secret"
        secret = read_secret(setting, env_name=key.secret_env, file=key.secret_file,
                             environ=environ)
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"{setting}: the secret is {len(secret)} bytes, fewer than "
                              f"{MIN_SECRET_BYTES}; use a random one (openssl rand -hex 32)")
        keys[key_id] = ProducerSecret(
            secret, None if key.accounts is None else frozenset(key.accounts))
    return keys


def redis_password(redis: RedisSettings, environ: Mapping[str, str] | None = None
                   ) -> str | None:
    """The password named by ``redis.password_env``/``_file``, or None when neither is set
    (there may be one in the url)."""
    if not (redis.password_env or redis.password_file):
        return None
    secret = read_secret("redis.password", env_name=redis.password_env,
                         file=redis.password_file, environ=environ)
    try:
        return secret.decode()
    except UnicodeDecodeError:
        raise ConfigError("redis.password: the password is not UTF-8 text") from None
