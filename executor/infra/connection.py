"""How a worker reaches Redis: the ``[redis]`` settings, the url plus credentials and TLS.

The password is read here, when the worker starts, from the variable or file the settings
name (or it is in the url); TLS files are checked for readability at the same moment, so a
mistake stops the start with a ConfigError instead of an endless reconnect loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from producer.connect import redis_client
from producer.keys import DEFAULT_PREFIX

from .errors import ConfigError
from .packing import use_c_packing
from .pool import use_lean_pool
from .secrets import redis_password

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class RedisSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    # A Redis Cluster: ``url`` names one of its nodes (the client finds the others), and
    # ``prefix`` must hold a hash tag (``{orders}``) so that every key of the deployment
    # lives in one slot, where its scripts and MULTI can span them.
    cluster: bool = False
    # Must exceed the XREADGROUP block time, or redis-py raises a timeout on an idle stream
    # (redis-py issue 3138); Settings enforces it.
    socket_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    # Credentials: an ACL user (or the default user of ``requirepass``). The password is
    # named, never inline: an environment variable or a file (or in ``url``, not both).
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # TLS is on with a ``rediss://`` url; these files configure it (PEM).
    tls_ca_file: str | None = None  # CA to verify the server with (default: system CAs)
    tls_cert_file: str | None = None  # client certificate, with tls_key_file (mutual TLS)
    tls_key_file: str | None = None
    tls_check_hostname: bool = True
    # "wait": an order is sent to its broker only once Redis confirms that its record (and
    # its send token) reached ``wait_replicas`` replicas (WAIT) and, with ``wait_aof``, this
    # server's append-only file on disk (WAITAOF, Redis >= 7.2 with appendonly yes), within
    # ``wait_timeout_ms``; otherwise it is not sent and its request is redelivered. "none":
    # Redis's own persistence (appendfsync everysec can lose the last second on a crash or
    # failover; a lost pending_submit record would let the redelivered request be sent again).
    durability: Literal["none", "wait"] = "none"
    wait_replicas: int = 1
    wait_aof: bool = False
    wait_timeout_ms: int = 1_000



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


def connect(redis: RedisSettings, *, socket_timeout_s: float | None = None) -> aioredis.Redis:
    """A client of the deployment's Redis (or Cluster) with its credentials and TLS."""
    return use_lean_pool(use_c_packing(redis_client(
        redis.url,
        cluster=redis.cluster,
        socket_timeout=socket_timeout_s or redis.socket_timeout_s,
        socket_connect_timeout=redis.connect_timeout_s,
        health_check_interval=30,
        **connection_options(redis),
    )))
