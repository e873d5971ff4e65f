"""Connection security against real redis-servers of our own: a password (requirepass)
read from a file the settings name, and TLS with a CA and a client certificate. In both, a
full round trip works (worker and producer), the secret never shows in the logs, and
without the credential (or the CA) nothing connects."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools.redis_server import RedisServer, find_redis_server, free_port
from executor.config import ConfigError, Settings, describe
from executor.infra.connection import connection_options
from producer.client import OrderClient
from producer.contract import ResultStatus

from .conftest import running, settings_for

PASSWORD = "requirepass-secret-0123456789"


async def ping(settings: Settings) -> None:
    """PING as a worker with ``settings`` would connect."""
    r = aioredis.Redis.from_url(settings.redis.url, **connection_options(settings.redis))
    try:
        await r.ping()
    finally:
        await r.aclose()


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(binary=find_redis_server(), data_dir=tmp_path_factory.mktemp("pw"),
                         extra_args=["--requirepass", PASSWORD], password=PASSWORD)
    with server:
        yield server


async def test_password_from_a_file_round_trip_and_never_logged(
    password_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "redis.pw").write_text(PASSWORD + "\n")
    url = password_server.url
    settings = settings_for(url, redis_password_file=str(tmp_path / "redis.pw"))
    assert PASSWORD not in str(describe(settings))
    caplog.set_level(logging.DEBUG)
    async with running(settings), OrderClient.from_url(
            url.replace("redis://", f"redis://:{PASSWORD}@")) as client:
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        result = await client.wait_result(sub.request_id, 10)
    assert result.status is ResultStatus.FILLED
    assert PASSWORD not in caplog.text
    anonymous = aioredis.Redis.from_url(url)
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
            await anonymous.xlen("orders:pending")
    finally:
        await anonymous.aclose()


async def test_a_wrong_password_is_refused(password_server: RedisServer, tmp_path: Path
                                           ) -> None:
    (tmp_path / "redis.pw").write_text("not-the-password")
    settings = settings_for(password_server.url,
                            redis_password_file=str(tmp_path / "redis.pw"))
    with pytest.raises(AuthenticationError):
        await ping(settings)


# -- TLS ------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=orderstream test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(
            ext + "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=orderstream test {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int,
                                                                            Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make test certificates with")
    certs = tmp_path_factory.mktemp("certs")
    make_certificates(certs)
    tls_port = free_port()
    server = RedisServer(
        binary=find_redis_server(), data_dir=tmp_path_factory.mktemp("tls"),
        extra_args=["--tls-port", str(tls_port),
                    "--tls-cert-file", str(certs / "server.crt"),
                    "--tls-key-file", str(certs / "server.key"),
                    "--tls-ca-cert-file", str(certs / "ca.crt"),
                    "--tls-auth-clients", "optional"])
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server was built without TLS: {str(exc)[:300]}")
        raise
    try:
        yield server, tls_port, certs
    finally:
        server.close()


async def test_tls_round_trip_with_a_client_certificate(
    tls_server: tuple[RedisServer, int, Path]
) -> None:
    _server, port, certs = tls_server
    url = f"rediss://127.0.0.1:{port}/0"
    settings = settings_for(url, redis_tls_ca_file=str(certs / "ca.crt"),
                            redis_tls_cert_file=str(certs / "client.crt"),
                            redis_tls_key_file=str(certs / "client.key"))
    # A producer in Python gives the TLS files as url arguments (redis-py reads them).
    producer_url = f"{url}?ssl_ca_certs={certs / 'ca.crt'}"
    async with running(settings) as worker, OrderClient.from_url(producer_url) as client:
        sub = await client.place("BTCUSDT", "buy", "market", "0.010")
        result = await client.wait_result(sub.request_id, 10)
        info = await worker.redis.client_info()
    assert result.status is ResultStatus.FILLED
    assert info["laddr"].endswith(f":{port}")  # the worker's connection is the TLS port


async def test_tls_verifies_the_server_and_refuses_plain_text(
    tls_server: tuple[RedisServer, int, Path], tmp_path: Path
) -> None:
    _server, port, certs = tls_server
    # Without our CA, the server's certificate is not trusted: no connection.
    settings = settings_for(f"rediss://127.0.0.1:{port}/0")
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await ping(settings)
    # A name the certificate does not hold fails the host name check.
    settings = settings_for(f"rediss://127.0.0.2:{port}/0",
                            redis_tls_ca_file=str(certs / "ca.crt"))
    with pytest.raises(RedisConnectionError):
        await ping(settings)
    # A TLS file that cannot be read stops the start, naming the setting.
    settings = settings_for(f"rediss://127.0.0.1:{port}/0",
                            redis_tls_ca_file=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match=r"redis\.tls_ca_file: cannot read"):
        connection_options(settings.redis)
