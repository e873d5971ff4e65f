"""Signed requests, decided without I/O: every way an entry can fail authentication has its
own message naming the field, and none shows the secret or the expected signature; a
signed request must be fresh, so a copy added again later is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor.config import ConfigError, describe, load_settings
from executor.infra.secrets import ProducerSecret, producer_keys, read_secret, redis_password
from executor.pipeline.steps.authenticate import permission_refusal, signature_refusal, staleness
from producer.contract import Action, Request, decode_request, encode, parse_decimal
from producer.signing import sign, signature_matches

SECRET = b"0123456789abcdef-not-a-real-one"
KEYS = {"k1": ProducerSecret(SECRET, None),
        "alpha-only": ProducerSecret(SECRET, frozenset({"alpha"}))}
DATA = b'{"client_order_id":"c-1","symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1"}'
GOOD = sign(SECRET, DATA).encode()


def fields(data: bytes = DATA, **extra: bytes) -> dict[bytes, bytes]:
    return {b"data": data, **{k.encode(): v for k, v in extra.items()}}


def check(f: dict[bytes, bytes], keys: dict[str, ProducerSecret] = KEYS) -> str | None:
    """Both passes, as the worker runs them: the signature over the raw bytes, then what the
    decoded request may do with its key."""
    reason = signature_refusal(f, keys)
    if reason is not None:
        return reason
    key_id = f[b"key_id"].decode()
    return permission_refusal(key_id, keys[key_id], decode_request(f[b"data"]))


def test_sign_is_the_lowercase_hex_hmac_sha256_of_the_bytes() -> None:
    # RFC 4231 test case 2.
    assert sign(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert signature_matches(b"Jefe", b"what do ya want for nothing?",
                             b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_a_correct_signature_passes() -> None:
    assert check(fields(key_id=b"k1", sig=GOOD)) is None


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (fields(sig=GOOD), "no `key_id` field"),
        (fields(key_id=b"k9", sig=GOOD), "`key_id` `k9` names no configured key"),
        (fields(key_id=b"bad key\xff", sig=GOOD), "`key_id` is not a key id"),
        (fields(key_id=b"k1"), "no `sig` field"),
        (fields(key_id=b"k1", sig=GOOD.upper()), "`sig` is not 64 lowercase hex digits"),
        (fields(key_id=b"k1", sig=GOOD[:-1]), "it has 63 characters"),
        (fields(key_id=b"k1", sig=GOOD + b"0"), "it has 65 characters"),
        (fields(key_id=b"k1", sig=b""), "it has 0 characters"),
        (fields(key_id=b"k1", sig=GOOD[:-1] + (b"0" if GOOD[-1:] != b"0" else b"1")),
         "`sig` does not match `data` under key `k1`"),
        # Signed over other bytes (a re-encoding of the same JSON) does not count.
        (fields(key_id=b"k1", sig=sign(SECRET, DATA.replace(b",", b", ")).encode()),
         "does not match"),
        (fields(key_id=b"k1", sig=sign(b"another-secret-of-16+", DATA).encode()),
         "does not match"),
    ],
)
def test_each_bad_signature_names_its_field(entry: dict[bytes, bytes], needle: str) -> None:
    reason = check(entry)
    assert reason is not None and needle in reason
    assert SECRET.decode() not in reason and GOOD.decode() not in reason


def test_the_signature_covers_the_data_bytes_exactly() -> None:
    tampered = DATA.replace(b'"quantity":"1"', b'"quantity":"9"')
    reason = check(fields(tampered, key_id=b"k1", sig=GOOD))
    assert reason is not None and "does not match" in reason


def test_a_signed_place_must_carry_its_client_order_id() -> None:
    data = b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1"}'
    reason = check(fields(data, key_id=b"k1", sig=sign(SECRET, data).encode()))
    assert reason is not None and "`client_order_id` is required" in reason


def signed(request: Request, key_id: str = "alpha-only") -> str | None:
    data = encode(request)
    return check(fields(data, key_id=key_id.encode(), sig=sign(SECRET, data).encode()))


def test_a_key_limited_to_an_account_uses_only_that_account() -> None:
    assert signed(decode_request(
        b'{"account":"alpha","client_order_id":"c-1","symbol":"BTCUSDT","side":"buy",'
        b'"type":"market","quantity":"1"}')) is None
    beta = signed(decode_request(
        b'{"account":"beta","client_order_id":"c-1","symbol":"BTCUSDT","side":"buy",'
        b'"type":"market","quantity":"1"}'))
    assert beta == "`account` `beta` may not be used with key `alpha-only` (it may use: alpha)"
    # No account on a place means `default`, which this key may not use either.
    default = signed(decode_request(DATA))
    assert default is not None and "`account` `default` may not" in default
    assert signed(decode_request(DATA), key_id="k1") is None


@pytest.mark.parametrize("action", [Action.CANCEL, Action.CANCEL_ALL, Action.AMEND])
def test_a_limited_key_must_name_the_account_of_cancels(action: Action) -> None:
    cid = None if action is Action.CANCEL_ALL else "c-1"
    request = Request(action=action, client_order_id=cid,
                      price=parse_decimal("1") if action is Action.AMEND else None)
    reason = signed(request)
    assert reason is not None and reason.startswith("`account` is required")
    assert signed(Request(action=action, client_order_id=cid, account="alpha",
                          price=request.price)) is None
    other = signed(Request(action=action, client_order_id=cid, account="beta",
                           price=request.price))
    assert other is not None and "`account` `beta` may not be used" in other


# -- configuration -------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text('[accounts.alpha]\nbroker = "paper"\n[accounts.beta]\nbroker = "paper"\n'
                    + text)
    return path


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "k2.secret"
    secret_file.write_text("file-secret-0123456789\n")
    path = write(tmp_path, '[auth.keys.k1]\nsecret_env = "K1_SECRET"\n'
                 f'[auth.keys.k2]\nsecret_file = "{secret_file}"\naccounts = ["alpha"]\n')
    settings = load_settings(path, {})
    keys = producer_keys(settings.auth, {"K1_SECRET": "env-secret-0123456789"})
    assert keys["k1"].secret == b"env-secret-0123456789" and keys["k1"].accounts is None
    assert keys["k2"].secret == b"file-secret-0123456789"  # the newline dropped
    assert keys["k2"].accounts == frozenset({"alpha"})
    shown = str(describe(settings)) + repr(keys)
    assert "env-secret" not in shown and "file-secret" not in shown
    assert "K1_SECRET" in shown  # where the secret is, not what it is


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[auth.keys.k1]\naccounts = ["alpha"]\n', "exactly one of secret_env and secret_file"),
        ('[auth.keys.k1]\nsecret_env = "A"\nsecret_file = "/x"\n', "exactly one"),
        ('[auth.keys.k1]\nsecret = "inline"\n', "secret"),
        ('[auth.keys.k1]\nsecret_env = "A"\naccounts = ["gamma"]\n',
         "auth.keys.k1.accounts names account `gamma`, which is not configured"),
        ('[auth.keys.k1]\nsecret_env = "A"\naccounts = []\n', "accounts is empty"),
        ('[auth.keys."bad id"]\nsecret_env = "A"\n', "auth.keys.bad id: a key id must match"),
    ],
)
def test_bad_key_config_is_a_clear_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(write(tmp_path, text), {})


def test_a_missing_or_short_secret_stops_the_start(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[auth.keys.k1]\nsecret_env = "K1_SECRET"\n'
                                   f'[auth.keys.k2]\nsecret_file = "{tmp_path}/none"\n'), {})
    with pytest.raises(ConfigError,
                       match=r"auth\.keys\.k1\.secret_env: environment variable K1_SECRET is "
                             "not set"):
        producer_keys(settings.auth, {})
    with pytest.raises(ConfigError, match=r"auth\.keys\.k2\.secret_file: cannot read .*/none: "
                                          "No such file"):
        producer_keys(settings.auth, {"K1_SECRET": "long-enough-0123456789"})
    with pytest.raises(ConfigError, match=r"auth\.keys\.k1\.secret: environment variable "
                                          "K1_SECRET is empty"):
        producer_keys(settings.auth, {"K1_SECRET": ""})
    with pytest.raises(ConfigError, match="15 bytes, fewer than 16") as exc:
        producer_keys(settings.auth, {"K1_SECRET": "short-secret-15"})
    assert "short-secret-15" not in str(exc.value)


def test_read_secret_keeps_inner_blanks(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"  a b  \r\n")
    assert read_secret("x", env_name=None, file=str(path)) == b"  a b"


def test_no_keys_means_no_keys() -> None:
    assert producer_keys(load_settings(None, {}).auth, {}) == {}


# -- redis connection settings -------------------------------------------------------------


def test_redis_password_and_tls_settings(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2-redis\n")
    env = {"REDIS_URL": "rediss://cache:6380/0", "ORDERSTREAM_REDIS_USERNAME": "worker",
           "ORDERSTREAM_REDIS_PASSWORD_FILE": str(pw),
           "ORDERSTREAM_REDIS_TLS_CA_FILE": "/etc/ca.pem",
           "ORDERSTREAM_REDIS_TLS_CHECK_HOSTNAME": "false"}
    s = load_settings(None, env)
    assert s.redis.username == "worker" and s.redis.tls_ca_file == "/etc/ca.pem"
    assert s.redis.tls_check_hostname is False
    assert redis_password(s.redis) == "hunter2-redis"
    assert "hunter2" not in str(describe(s))
    assert redis_password(load_settings(None, {}).redis) is None


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"ORDERSTREAM_REDIS_PASSWORD_ENV": "P", "ORDERSTREAM_REDIS_PASSWORD_FILE": "/p"},
         "password_env and redis.password_file are both set"),
        ({"REDIS_URL": "redis://:pw@h/0", "ORDERSTREAM_REDIS_PASSWORD_ENV": "P"},
         "redis.url has a password"),
        ({"REDIS_URL": "redis://h/0?password=pw", "ORDERSTREAM_REDIS_PASSWORD_FILE": "/p"},
         "redis.url has a password"),
        ({"REDIS_URL": "redis://u@h/0", "ORDERSTREAM_REDIS_USERNAME": "v"},
         "redis.url has a user name"),
        ({"REDIS_URL": "rediss://h/0", "ORDERSTREAM_REDIS_TLS_CERT_FILE": "/c"},
         "tls_cert_file and redis.tls_key_file go together"),
        ({"REDIS_URL": "redis://h/0", "ORDERSTREAM_REDIS_TLS_CA_FILE": "/ca"},
         "redis.tls_ca_file is set but redis.url is not rediss://"),
    ],
)
def test_bad_redis_settings_are_clear_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(None, env)


def test_a_missing_redis_password_names_its_setting() -> None:
    s = load_settings(None, {"ORDERSTREAM_REDIS_PASSWORD_ENV": "REDIS_PW"})
    with pytest.raises(ConfigError, match=r"redis\.password_env: environment variable REDIS_PW"):
        redis_password(s.redis, {})


def test_a_worker_does_not_start_without_its_key_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakeredis import FakeAsyncRedis

    from executor.worker import Worker

    monkeypatch.delenv("ORDERSTREAM_TEST_K1", raising=False)
    config = write(tmp_path, '[auth.keys.k1]\nsecret_env = "ORDERSTREAM_TEST_K1"\n')
    settings = load_settings(config, {})
    with pytest.raises(ConfigError, match="ORDERSTREAM_TEST_K1 is not set"):
        Worker(settings, redis=FakeAsyncRedis())
    monkeypatch.setenv("ORDERSTREAM_TEST_K1", "now-it-is-set-0123456789")
    assert set(Worker(settings, redis=FakeAsyncRedis()).authenticate.keys) == {"k1"}


# -- freshness: a signed request cannot be replayed later ------------------------------------

ADDED = 1_700_000_000_000  # when Redis added the entry (its id's time)


def fresh(**fields: object) -> str | None:
    body = {"action": "cancel", "client_order_id": "c-1", **fields}
    return staleness(decode_request(json.dumps(body)), ADDED, 60_000, 5_000)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"issued_at": ADDED}, None),
        ({"issued_at": ADDED - 60_000}, None),  # exactly the window
        ({"issued_at": ADDED + 5_000}, None),  # a producer clock 5 s ahead
        ({"issued_at": ADDED - 60_001}, "`issued_at` 1699999939999 is 60001 ms before the "
                                        "entry was added, more than the 60000 ms"),
        ({"issued_at": ADDED + 5_001}, "is 5001 ms after the entry was added, more than the "
                                       "5000 ms of clock skew"),
        ({"issued_at": 0}, "`issued_at` 0 is"),
        ({}, "`issued_at` is required in a signed request"),
        ({"deadline": ADDED + 1_000}, None),
        ({"deadline": ADDED + 65_000}, None),
        ({"deadline": ADDED - 5_000}, None),  # late by the skew: the deadline step decides
        ({"deadline": ADDED + 65_001}, "`deadline` 1700000065001 is 65001 ms after the entry"),
        ({"deadline": ADDED - 5_001}, "`deadline` 1699999994999 had passed 5001 ms before"),
        # issued_at decides when both are given: a long deadline is fine with it.
        ({"issued_at": ADDED, "deadline": ADDED + 3_600_000}, None),
        ({"issued_at": ADDED - 61_000, "deadline": ADDED + 1_000}, "`issued_at`"),
    ],
)
def test_a_signed_request_must_be_fresh(fields: dict[str, int], needle: str | None) -> None:
    reason = fresh(**fields)
    if needle is None:
        assert reason is None
    else:
        assert reason is not None and needle in reason


def test_signatures_are_checked_before_anything_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where signing is on, an entry its sender could not sign costs an HMAC over its bytes
    and nothing more: it is never decoded."""
    from executor.pipeline.job import Job
    from executor.pipeline.steps import decode as decode_module
    from executor.pipeline.steps.authenticate import Authenticate
    from executor.pipeline.steps.decode import Decode

    from .test_decode_step import services

    monkeypatch.setenv("ORDERSTREAM_TEST_K1", SECRET.decode())
    svc = services()
    svc.settings.auth = load_settings(write(tmp_path, '[auth.keys.k1]\nsecret_env = '
                                                      '"ORDERSTREAM_TEST_K1"\n'), {}).auth
    decoded: list[bytes] = []
    real = decode_module.decode_request

    def counting(data: bytes) -> Request:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(decode_module, "decode_request", counting)
    deep = b'{"metadata":' + b"[" * 60_000 + b"}"  # under max_request_bytes
    good = (b'{"client_order_id":"c-1","symbol":"BTCUSDT","side":"buy","type":"market",'
            b'"quantity":"1","issued_at":1700000000000}')
    jobs = [Job(f"1700000000000-{i}", f, 1) for i, f in enumerate([
        fields(deep), fields(deep, key_id=b"k1", sig=b"0" * 64),
        fields(deep, key_id=b"k9", sig=sign(SECRET, deep).encode()),
        fields(good, key_id=b"k1", sig=sign(SECRET, good).encode())])]
    auth = Authenticate(svc)
    auth.signatures(jobs)
    Decode(svc)([j for j in jobs if j.open])
    auth([j for j in jobs if j.open])
    assert decoded == [good]
    assert [j.result.reason_code if j.result else None for j in jobs] == \
        ["unauthenticated"] * 3 + [None]


def test_the_freshness_window_is_configurable_and_checked(tmp_path: Path) -> None:
    auth = load_settings(None, {"ORDERSTREAM_AUTH_MAX_AGE_MS": "5000",
                                "ORDERSTREAM_AUTH_MAX_CLOCK_SKEW_MS": "0"}).auth
    assert (auth.max_age_ms, auth.max_clock_skew_ms) == (5_000, 0)
    defaults = load_settings(None, {}).auth
    assert (defaults.max_age_ms, defaults.max_clock_skew_ms) == (60_000, 5_000)
    with pytest.raises(ConfigError, match=r"auth\.max_age_ms must be positive"):
        load_settings(write(tmp_path, "[auth]\nmax_age_ms = 0\n"), {})
    with pytest.raises(ConfigError, match=r"auth\.max_clock_skew_ms must not be negative"):
        load_settings(None, {"ORDERSTREAM_AUTH_MAX_CLOCK_SKEW_MS": "-1"})
