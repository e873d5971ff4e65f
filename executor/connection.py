"""How a worker reaches Redis: the url plus credentials and TLS from the configuration.

The password is read here, when the worker starts, from the variable or file the settings
name (or it is in the url); TLS files are checked for readability at the same moment, so a
mistake stops the start with a ConfigError instead of an endless reconnect loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import ConfigError, RedisSettings
from .secrets import redis_password


def connection_options(redis: RedisSettings, environ: Mapping[str, str] | None = None
                       ) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url(redis.url, ...)``."""
    options: dict[str, Any] = {}
    if redis.username:
        options["username"] = redis.username
    password = redis_password(redis, environ)
    if password is not None:
        options["password"] = password
    if redis.url.startswith("rediss://"):
        for setting, option in (("tls_ca_file", "ssl_ca_certs"),
                                ("tls_cert_file", "ssl_certfile"),
                                ("tls_key_file", "ssl_keyfile")):
            path: str | None = getattr(redis, setting)
            if path is None:
                continue
            if not os.access(path, os.R_OK):
                raise ConfigError(f"redis.{setting}: cannot read {path}")
            options[option] = path
        options["ssl_cert_reqs"] = "required"  # the server's certificate is always verified
        options["ssl_check_hostname"] = redis.tls_check_hostname
    return options
