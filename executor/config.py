"""Configuration: one TOML file, every key overridable from the environment.

Sources, later ones winning: built-in defaults, the TOML file (``--config`` or
``ORDERSTREAM_CONFIG``), environment variables. ``REDIS_URL`` sets the connection; worker
settings have flat names (``ORDERSTREAM_BATCH_SIZE``); any other key of a section is
``ORDERSTREAM_<SECTION>_<KEY>``, and a key of an account defined in the file is
``ORDERSTREAM_ACCOUNTS_<ACCOUNT>_<KEY>``. Secrets are never inline: an account names the
environment variable or file that holds them (``secrets.py`` reads them when a worker
starts).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tomllib
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from producer.keys import check_cluster_prefix
from producer.partitions import Partitions, partition_prefix
from producer.signing import KEY_ID_PATTERN

from .archive.settings import ArchiveSettings
from .brokers.alpaca.config import AlpacaAccount
from .brokers.binance.config import BinanceAccount
from .brokers.oanda.config import OandaAccount
from .brokers.paper.config import PaperAccount
from .brokers.registry import AccountConfig, broker_type
from .infra import logs
from .infra.connection import DEFAULT_REDIS_URL as DEFAULT_REDIS_URL
from .infra.connection import RedisSettings as RedisSettings
from .infra.errors import ConfigError as ConfigError
from .model.exits import AutoExit
from .safety.breaker import BreakerSettings
from .safety.limits.config import AccountLimits, plan_for
from .safety.risk.limits import RiskSettings

DAY_MS = 86_400_000
# One batch is acknowledged by one XACK inside a Lua script, whose unpack() is limited.
MAX_BATCH = 5_000


class ProducerKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A producer's HMAC key: the secret is named (env var or file), never inline."""

    secret_env: str | None = None
    secret_file: str | None = None
    accounts: list[str] | None = None  # the accounts it may use; None: every account


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # key_id -> key. With at least one key every request must be signed
    # (pipeline/steps/authenticate.py).
    keys: dict[str, ProducerKey] = msgspec.field(default_factory=dict)
    # A signed request is fresh when its issued_at (or, without one, its deadline) is within
    # this long of the moment Redis added its entry: a captured entry added again later is
    # refused, so it cannot cancel, amend or place once more.
    max_age_ms: int = 60_000
    # How far a producer's clock may run ahead of the Redis server's (issued_at after the
    # entry was added) or behind it.
    max_clock_skew_ms: int = 5_000


class WorkerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    consumer: str = ""  # default: <host>-<pid>, unique per process
    batch_size: int = 200
    # Batches in flight at once in one process: while Redis runs one batch's scripts the
    # process works on another. Order between batches is not kept (it never is between
    # workers); within a batch it is.
    concurrency: int = 3
    block_ms: int = 1_000
    visibility_timeout_ms: int = 30_000
    max_deliveries: int = 5
    metrics_port: int = 9464
    metrics_host: str = "0.0.0.0"
    max_request_bytes: int = 65_536
    results_maxlen: int = 1_000_000  # approximate cap (XADD MAXLEN ~) of each result stream
    # Results older than this are trimmed too (retention.py): a producer reads its result
    # within seconds; the cap alone, a million entries of ~1 KB, is a GB per stream.
    results_retention_ms: int = DAY_MS
    # Events are kept at least this long, and in any case until the positions fold and
    # every registered reader (an archive) has them (retention.py); 0: trimmed as soon as
    # they have.
    events_retention_ms: int = 7 * DAY_MS
    retention_interval_ms: int = 60_000  # how often each worker runs a trimming pass
    order_ttl_ms: int = 7 * DAY_MS  # how long a finished order's record (idempotency) is kept
    submit_attempts: int = 3  # sends of one order while the broker says "retry" (never on unknown)
    # After an ambiguous failure, how long the order is looked up by client id before it is
    # taken as never arrived: exchanges are eventually consistent, and "no such order" just
    # after a send is not proof (freqtrade issues 4403, 4991).
    lookup_window_ms: int = 3_000
    # An order sent whose outcome stayed unknown (recorded submitted) is looked up by client
    # id on every tracker pass; if the broker still has no such order this long after, it
    # never reached the broker: it ends rejected (reason not_found) and its risk goes.
    unknown_resolve_ms: int = 600_000
    lag_interval_ms: int = 2_000
    # A worker beats this often; missing 5 beats, it counts as gone (liveness.py).
    heartbeat_ms: int = 1_000
    # Open orders are looked up at their broker this often (push feeds are followed live).
    track_interval_ms: int = 1_000
    # A market, IOC or FOK order still open this long after creation is cancelled.
    market_timeout_ms: int = 300_000
    # Whether this worker takes its turn folding positions (one worker at a time does, under
    # a lease). Folding costs ~25 us of CPU per order in the process that does it; a fleet
    # can leave it to a few workers, but at least one must have it on.
    project_positions: bool = True
    # Conditional orders a broker has no native order for (trailing stops, if-touched) are
    # held and released by the workers' emulator (background/emulator.py); off, they are
    # refused (invalid, naming the field). Deployment-wide: give every worker the same.
    emulate: bool = True
    # The emulator's pass over an account's held orders (one worker per account, under a
    # lease that expires this long after its holder's last pass).
    emulator_interval_ms: int = 250
    emulator_lease_ms: int = 3_000


# What a deployment may trade with: the paper exchange (and practice accounts), practice
# accounts at a broker's sandbox (testnet, fxpractice, paper-api), or real money.
Mode = Literal["paper", "practice", "live"]


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Refused at start: an account that trades real money unless "live"; with "live", an
    # account at a practice host (_check_mode).
    mode: Mode = "paper"
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    accounts: dict[str, AccountConfig] = msgspec.field(
        default_factory=lambda: {"default": PaperAccount()})
    # Per account; an account without a section gets its broker's published limits.
    limits: dict[str, AccountLimits] = msgspec.field(default_factory=dict)
    risk: RiskSettings = msgspec.field(default_factory=RiskSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    # Partitions of the deployment (producer/partitions.py); none by default.
    partitions: Partitions = msgspec.field(default_factory=Partitions)
    # The stop-loss / take-profit every position of an account gets when it opens
    # (executor/model/exits.py ``AutoExit``); none by default.
    exits: dict[str, AutoExit] = msgspec.field(default_factory=dict)
    # The SQL archive (executor/archive); read by `orderstream archive` and its queries.
    archive: ArchiveSettings = msgspec.field(default_factory=ArchiveSettings)

    def __post_init__(self) -> None:
        w = self.worker
        if not self.accounts:
            raise ConfigError("at least one account must be configured")
        unknown = sorted(set(self.risk.accounts) - set(self.accounts))
        if unknown:
            raise ConfigError(f"risk.accounts names accounts that are not configured: "
                              f"{', '.join(unknown)}")
        for name, value in (
            ("batch_size", w.batch_size),
            ("concurrency", w.concurrency),
            ("block_ms", w.block_ms),
            ("max_deliveries", w.max_deliveries),
            ("visibility_timeout_ms", w.visibility_timeout_ms),
            ("max_request_bytes", w.max_request_bytes),
            ("submit_attempts", w.submit_attempts),
            ("heartbeat_ms", w.heartbeat_ms),
            ("track_interval_ms", w.track_interval_ms),
            ("market_timeout_ms", w.market_timeout_ms),
            ("unknown_resolve_ms", w.unknown_resolve_ms),
            ("results_retention_ms", w.results_retention_ms),
            ("retention_interval_ms", w.retention_interval_ms),
            ("emulator_interval_ms", w.emulator_interval_ms),
        ):
            if value <= 0:
                raise ConfigError(f"worker.{name} must be positive, got {value}")
        if w.events_retention_ms < 0:
            raise ConfigError(
                f"worker.events_retention_ms must not be negative, got {w.events_retention_ms}")
        if w.emulator_lease_ms < 2 * w.emulator_interval_ms:
            raise ConfigError(f"worker.emulator_lease_ms ({w.emulator_lease_ms}) must be at "
                              "least twice worker.emulator_interval_ms "
                              f"({w.emulator_interval_ms}): the lease must outlive a pass")
        if w.batch_size > MAX_BATCH:
            raise ConfigError(f"worker.batch_size must be at most {MAX_BATCH}, got {w.batch_size}")
        unknown = sorted(set(self.exits) - set(self.accounts))
        if unknown:
            raise ConfigError(f"exits names accounts that are not configured: "
                              f"{', '.join(unknown)}")
        if self.exits and self.auth.keys:
            raise ConfigError("[exits] cannot be used with [auth] keys yet: requests must be "
                              "signed and a worker cannot sign the closing orders")
        for account, limits in self.limits.items():
            if account not in self.accounts:
                raise ConfigError(f"limits.{account}: no such account")
            # A batch held longer than the visibility timeout is taken over by another worker.
            if limits.max_wait_ms * 2 > w.visibility_timeout_ms:
                raise ConfigError(
                    f"limits.{account}.max_wait_ms ({limits.max_wait_ms}) must be at most half "
                    f"of worker.visibility_timeout_ms ({w.visibility_timeout_ms})")
        _check_ip_groups(self.limits, self.accounts)
        if self.redis.socket_timeout_s * 1000 <= w.block_ms + 1_000:
            self.redis.socket_timeout_s = (w.block_ms + 5_000) / 1000
        _check_redis(self.redis, partitioned=self.partitions.enabled)
        _check_keys(self.auth, self.accounts)
        _check_partitions(self.partitions, self.redis.prefix, self.accounts, self.limits)
        _check_mode(self.mode, self.accounts)


def _check_mode(mode: str, accounts: Mapping[str, Any]) -> None:
    for name, account in sorted(accounts.items()):
        venue = account.venue()
        if venue == "live" and mode != "live":
            raise ConfigError(
                f"accounts.{name} trades real money ({broker_type(account)}, live) but mode is "
                f"{mode!r}: set mode = \"live\" (ORDERSTREAM_MODE=live) to trade real money")
        if mode == "live" and venue == "practice":
            raise ConfigError(
                f"mode is \"live\" but accounts.{name} is a practice account "
                f"({broker_type(account)} testnet/practice host): a live deployment trades "
                "real money only; use a live account, or mode = \"practice\"")


def _check_partitions(partitions: Partitions, prefix: str, accounts: Mapping[str, Any],
                      limits: Mapping[str, AccountLimits]) -> None:
    try:
        partitions.check(prefix)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not partitions.enabled:
        return
    unknown = sorted(set(partitions.accounts) - set(accounts))
    if unknown:
        raise ConfigError(f"partitions.accounts.{unknown[0]}: no such account")
    unmapped = sorted(set(accounts) - set(partitions.accounts))
    if unmapped:
        raise ConfigError(f"accounts.{unmapped[0]} is in no partition: name it in "
                          "[partitions.accounts] (an account's partition is never guessed)")
    # The accounts of one IP group share their weight state, which lives in one partition.
    groups: dict[str, set[int]] = {}
    for account, own in limits.items():
        if own.ip_group:
            groups.setdefault(own.ip_group, set()).add(partitions.accounts[account])
    for group, where in sorted(groups.items()):
        if len(where) > 1:
            raise ConfigError(f"limits ip_group {group!r} spans partitions "
                              f"{', '.join(map(str, sorted(where)))}: the accounts of one IP "
                              "group share one weight window, so they must be in one partition")


def _check_ip_groups(limits: Mapping[str, AccountLimits], accounts: Mapping[str, Any]) -> None:
    """The accounts of one ``ip_group`` share one weight window, so they must agree on its
    cap: each checks the shared use against its own."""
    caps: dict[str, dict[str, int]] = {}
    for account, own in limits.items():
        if own.ip_group is not None:
            plan = plan_for(own, str(type(accounts[account]).__struct_config__.tag))
            cap = next((w.cap for w in plan.windows if w.counts_weight), 0)
            caps.setdefault(own.ip_group, {})[account] = cap
    for group, by_account in sorted(caps.items()):
        if len(set(by_account.values())) > 1:
            found = ", ".join(f"{a} {c}" for a, c in sorted(by_account.items()))
            raise ConfigError(f"limits: the accounts of ip_group {group} share one weight "
                              f"window but have different caps per minute ({found}); give "
                              "them the same weight_per_minute")


def _check_redis(r: RedisSettings, *, partitioned: bool) -> None:
    # Partitioned, each partition's prefix is hash-tagged by construction.
    if r.cluster and not partitioned:
        try:
            check_cluster_prefix(r.prefix)
        except ValueError as exc:
            raise ConfigError(f"redis.prefix: {exc}") from None
    if r.wait_replicas < 0 or r.wait_timeout_ms <= 0:
        raise ConfigError("redis.wait_replicas must not be negative and redis.wait_timeout_ms "
                          f"must be positive, got {r.wait_replicas} and {r.wait_timeout_ms}")
    if r.durability == "wait" and r.wait_replicas == 0 and not r.wait_aof:
        raise ConfigError('redis.durability = "wait" needs redis.wait_replicas >= 1 or '
                          "redis.wait_aof = true: there is nothing to wait for")
    if r.password_env and r.password_file:
        raise ConfigError("redis.password_env and redis.password_file are both set; set one")
    if (r.password_env or r.password_file) and _url_credentials(r.url)[1]:
        raise ConfigError("redis.url has a password and redis.password_env/_file is set too; "
                          "set one")
    if r.username and _url_credentials(r.url)[0]:
        raise ConfigError("redis.url has a user name and redis.username is set too; set one")
    if bool(r.tls_cert_file) != bool(r.tls_key_file):
        raise ConfigError("redis.tls_cert_file and redis.tls_key_file go together")
    tls_files = [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
                 if getattr(r, name)]
    if tls_files and not r.url.startswith("rediss://"):
        # Never a silent plain-text connection for an operator who meant TLS.
        raise ConfigError(f"redis.{tls_files[0]} is set but redis.url is not rediss://")


def _check_keys(auth: AuthSettings, accounts: Mapping[str, object]) -> None:
    if auth.max_age_ms <= 0:
        raise ConfigError(f"auth.max_age_ms must be positive, got {auth.max_age_ms}")
    if auth.max_clock_skew_ms < 0:
        raise ConfigError(f"auth.max_clock_skew_ms must not be negative, got "
                          f"{auth.max_clock_skew_ms}")
    for key_id, key in auth.keys.items():
        where = f"auth.keys.{key_id}"
        if not re.fullmatch(KEY_ID_PATTERN, key_id):
            raise ConfigError(f"{where}: a key id must match {KEY_ID_PATTERN}")
        if bool(key.secret_env) == bool(key.secret_file):
            raise ConfigError(f"{where}: set exactly one of secret_env and secret_file "
                              "(secrets are never inline)")
        if key.accounts is not None:
            if not key.accounts:
                raise ConfigError(f"{where}.accounts is empty: the key could use no account")
            unknown = sorted(set(key.accounts) - set(accounts))
            if unknown:
                raise ConfigError(f"{where}.accounts names account `{unknown[0]}`, which is "
                                  f"not configured (known: {', '.join(sorted(accounts))})")


def _url_credentials(url: str) -> tuple[str, str]:
    """The user name and password written in a redis url ("" where absent)."""
    parts = urllib.parse.urlsplit(url)
    in_query = urllib.parse.parse_qs(parts.query).get("password", [""])[0]
    return parts.username or "", parts.password or in_query


_ACCOUNT_TYPES: dict[str, type[msgspec.Struct]] = {"paper": PaperAccount,
                                                   "binance": BinanceAccount,
                                                   "oanda": OandaAccount,
                                                   "alpaca": AlpacaAccount}
# Worker settings that operators and tests tune have flat environment names.
_FLAT = {"worker"}
_SECTIONS = ("redis", "worker", "breaker", "auth", "archive")


def _env_name(path: tuple[str, ...]) -> str:
    if path[0] in _FLAT:
        path = path[1:]
    return "ORDERSTREAM_" + "_".join(part.upper().replace("-", "_") for part in path)


def _merge_env(raw: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply environment overrides to ``raw`` in place; returns the names applied."""
    applied: list[str] = []
    defaults = msgspec.to_builtins(Settings(), enc_hook=str)
    for section in _SECTIONS:
        for key, default in defaults[section].items():
            if isinstance(default, dict):
                continue  # a table (auth.keys) is written in the file
            name = _env_name((section, key))
            if name in env:
                raw.setdefault(section, {})[key] = env[name]
                applied.append(name)
    for account, values in raw.get("accounts", {}).items():
        if not isinstance(values, dict):
            continue
        kind = _ACCOUNT_TYPES.get(values.get("broker", "paper"))
        if kind is None:
            continue  # the conversion names the unknown broker
        for key in {f.name for f in msgspec.structs.fields(kind)} - {"symbols", "instruments"}:
            name = _env_name(("accounts", account, key))
            if name in env:
                values[key] = env[name]
                applied.append(name)
    for account in raw.get("accounts", {}):
        for key in AccountLimits.__struct_fields__:
            name = _env_name(("limits", account, key))
            if name in env:
                raw.setdefault("limits", {}).setdefault(account, {})[key] = env[name]
                applied.append(name)
    if "ORDERSTREAM_MODE" in env:
        raw["mode"] = env["ORDERSTREAM_MODE"]
        applied.append("ORDERSTREAM_MODE")
    for key in ("count", "serve"):
        name = _env_name(("partitions", key))
        if name in env:
            value: Any = env[name]
            if key == "serve":
                value = [part.strip() for part in value.split(",") if part.strip()]
            raw.setdefault("partitions", {})[key] = value
            applied.append(name)
    if "REDIS_URL" in env:
        raw.setdefault("redis", {})["url"] = env["REDIS_URL"]
        applied.append("REDIS_URL")
    return applied


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    path = path or env.get("ORDERSTREAM_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # The default account exists unless the file defines its own, so that environment
    # overrides reach it too.
    raw.setdefault("accounts", {"default": {"broker": "paper"}})
    for values in raw["accounts"].values():
        if isinstance(values, dict):
            values.setdefault("broker", "paper")  # the broker of an account that names none
    _merge_env(raw, env)
    try:
        # strict=False lets environment strings become ints, floats and Decimals.
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if not settings.worker.consumer:
        settings.worker.consumer = f"{socket.gethostname()}-{os.getpid()}"
    _redact_secrets(settings, raw, env)
    return settings


def _redact_secrets(settings: Settings, raw: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Have the logs mask every secret the configuration leads to: the Redis password and
    each value named by a setting whose key ends in ``_env`` (an environment variable) or
    ``_file`` (a file), the convention of every secret setting (a broker's API secret, a
    signing key)."""
    logs.redact(urllib.parse.urlsplit(settings.redis.url).password)
    with contextlib.suppress(ValueError):
        logs.redact(urllib.parse.urlsplit(settings.archive.database_url()).password)

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(value, str) and str(key).endswith("_env"):
                    logs.redact(env.get(value))
                elif isinstance(value, str) and str(key).endswith("_file"):
                    with contextlib.suppress(OSError, UnicodeDecodeError):
                        logs.redact(Path(value).read_text().strip())
                else:
                    walk(value)

    walk(raw)


def _dec_hook(tp: type, obj: object) -> object:
    if tp is Decimal and isinstance(obj, str | int):
        return Decimal(obj)
    raise NotImplementedError


def prefixes(settings: Settings, partition: int | None) -> list[str]:
    """The key prefixes of the deployment (one per partition), or of one partition's
    (``--partition`` of the archive and the projector; ConfigError where there is no such
    partition)."""
    base, parts = settings.redis.prefix, settings.partitions
    if not parts.enabled:
        if partition is not None:
            raise ConfigError("--partition: the deployment is not partitioned")
        return [base]
    if partition is not None:
        if not 0 <= partition < parts.count:
            raise ConfigError(f"--partition {partition}: partitions are numbered 0 to "
                              f"{parts.count - 1}")
        return [partition_prefix(base, partition)]
    return [partition_prefix(base, n) for n in range(parts.count)]


def describe(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, with secrets masked (for ``config``)."""
    data: dict[str, Any] = msgspec.to_builtins(settings, enc_hook=str)
    data["redis"]["url"] = mask_url(settings.redis.url)
    data["archive"]["url"] = mask_url(settings.archive.url)
    return data


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``; a password given as a
    query argument (``?password=...``, which redis-py also reads) is masked too."""
    base, qmark, query = url.partition("?")
    if qmark:
        pairs = [(k, "***" if k in _SECRET_QUERY_ARGS else v)
                 for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)]
        return mask_url(base) + "?" + urllib.parse.urlencode(pairs, safe="*/")
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}" if colon else (
        f"{scheme}://***@{host}"
    )


_SECRET_QUERY_ARGS = {"password", "ssl_password"}
