"""Find (installing if need be) and run a private PostgreSQL server for tests.

Like devtools/redis_server.py, nothing here ever uses a PostgreSQL the developer already runs:
every server is a fresh cluster (``initdb``) in a temporary directory of our own, listening on
127.0.0.1 on a free port, with a unix socket in that directory rather than /run/postgresql,
and removed when it stops.

CLI (used by the Makefile)::

    python -m devtools.postgres_server find     # prints the directory of initdb and postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devtools.redis_server import (
    APT_ENV,
    NO_INSTALL_ENV,
    apt_get_install,
    free_port,
    run_logged,
)

WHO = "postgres_server"  # names this module on the installer lines it prints

# Where the binaries are, when they are neither Debian's nor on PATH (like REDIS_SERVER_BIN).
BIN_DIR_ENV = "POSTGRES_BIN_DIR"
# The superuser initdb creates; with trust authentication on loopback it needs no password.
SUPERUSER = "orderstream"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # an identifier that never needs quoting rules

T = TypeVar("T")


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries here, and none could be installed (the tests skip)."""


@dataclass(frozen=True)
class _Found:
    bin_dir: Path
    version: tuple[int, ...]


def parse_postgres_version(output: str) -> tuple[int, ...]:
    """The version in ``postgres --version`` output (``postgres (PostgreSQL) 15.18 (Debian
    ...)``); 10 and later have two parts, older ones three."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", output)
    if match is None:
        raise ValueError(f"no PostgreSQL version in {output.strip()[:200]!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _check(bin_dir: Path | None, tried: list[str], what: str) -> _Found | None:
    """``bin_dir`` if it holds a runnable ``initdb`` and ``postgres``, else None (noting why)."""
    if bin_dir is None:
        tried.append(f"{what}: not found")
        return None
    missing = [n for n in ("initdb", "postgres") if not os.access(bin_dir / n, os.X_OK)]
    if missing:
        tried.append(f"{what}: {bin_dir} has no {' or '.join(missing)}")
        return None
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL, check=False,
        )
        return _Found(bin_dir, parse_postgres_version(out.stdout + out.stderr))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        tried.append(f"{what}: {bin_dir}/postgres does not run or print a version ({exc})")
        return None


def _debian_bin_dirs() -> list[Path]:
    """Debian's /usr/lib/postgresql/<version>/bin, newest first: several versions may be
    installed side by side (an upgrade keeps the old one until its cluster is migrated)."""
    try:
        versions = [p for p in _DEBIAN_ROOT.iterdir() if p.name.isdigit() or
                    re.fullmatch(r"\d+\.\d+", p.name)]
    except OSError:
        return []
    versions.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
    return [p / "bin" for p in versions]


def _pg_config_bin_dir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _path_bin_dir() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _find_installed(tried: list[str]) -> _Found | None:
    debian = _debian_bin_dirs()
    if not debian:
        tried.append(f"Debian: no {_DEBIAN_ROOT}/<version>/bin")
    found = [f for f in (_check(d, tried, "Debian") for d in debian) if f]
    if found:
        return max(found, key=lambda f: f.version)
    for what, candidate in (("pg_config --bindir", _pg_config_bin_dir()),
                            ("PATH", _path_bin_dir())):
        hit = _check(candidate, tried, what)
        if hit:
            return hit
    return None


def _stop_package_service(env: dict[str, str]) -> None:
    """Stop and disable the cluster Debian's package creates and starts on 5432: the tests
    run clusters of their own, and a service left enabled would come back at every boot."""
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        run_logged(["systemctl", "disable", "--now", "postgresql"], env, who=WHO)
    if not shutil.which("pg_lsclusters"):
        return
    try:
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[3].startswith("online"):  # "online,recovery" too
            run_logged(["pg_ctlcluster", fields[0], fields[1], "stop"], env, who=WHO)
        # Without systemd the init script would start it again at boot.
        start_conf = Path("/etc/postgresql") / fields[0] / fields[1] / "start.conf"
        if start_conf.is_file():
            start_conf.write_text("manual\n")


def _apt_install(tried: list[str]) -> _Found | None:
    """Install Debian's ``postgresql`` (15 on Debian 12) if we are root on Debian/Ubuntu."""
    done = apt_get_install("postgresql", tried, who=WHO)
    if done is None:
        return None
    ok, tail = done
    _stop_package_service({**os.environ, **APT_ENV})
    # Even if dpkg failed to *start* the service, the binaries may be unpacked and usable.
    found = _find_installed(tried)
    if found is None and not ok:
        tried.append(f"apt-get install postgresql failed: {tail}")
    return found


def find_postgres_bin_dir(*, install: bool | None = None) -> Path:
    """The directory of a PostgreSQL server's ``initdb`` and ``postgres``, installing
    Debian's package if needed and allowed.

    Order: $POSTGRES_BIN_DIR; the newest /usr/lib/postgresql/<version>/bin; ``pg_config
    --bindir``; ``initdb`` on PATH; apt-get install postgresql (root on Debian/Ubuntu).
    ``install`` defaults to True unless $ORDERSTREAM_NO_INSTALL is set. Raises
    PostgresNotFound when there is none and none could be installed.
    """
    tried: list[str] = []
    explicit = os.environ.get(BIN_DIR_ENV)
    if explicit:
        # An explicit choice that does not work is an error, never a reason to skip.
        found = _check(Path(explicit), tried, BIN_DIR_ENV)
        if found is None:
            raise RuntimeError(f"{BIN_DIR_ENV} is not a PostgreSQL bin directory: {tried[-1]}")
        return found.bin_dir
    found = _find_installed(tried)
    if found:
        return found.bin_dir
    if install is None:
        install = not os.environ.get(NO_INSTALL_ENV)
    if install:
        found = _apt_install(tried)
        if found:
            print(f"[postgres_server] installed {found.bin_dir}", file=sys.stderr, flush=True)
            return found.bin_dir
    else:
        tried.append(f"installing: disabled by {NO_INSTALL_ENV}")
    raise PostgresNotFound(
        "no PostgreSQL server (initdb and postgres) found. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nInstall one (apt-get install postgresql) or set {BIN_DIR_ENV} to its bin "
        "directory."
    )


def _run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, in a thread of its own: the caller (a
    pytest fixture, say) may itself be inside a running event loop, where asyncio.run fails."""
    result: list[T] = []
    error: list[BaseException] = []

    async def call() -> T:
        return await make()

    def target() -> None:
        try:
            result.append(asyncio.run(call()))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account initdb and postgres run as when we are root: both refuse
    to run as root (a compromised server must not own the machine)."""
    name: str
    uid: int
    gid: int


def _unprivileged_account() -> _RunAs | None:
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return None
    # Debian's package creates "postgres"; nobody exists everywhere else.
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user for "
                       "PostgreSQL to run as (it refuses to run as root)")


def _base_dir_for(run_as: _RunAs | None) -> Path:
    """Where to make our temporary directory: the server's account must be able to reach it,
    and $TMPDIR may be under a home that only root can enter."""
    base = Path(tempfile.gettempdir()).resolve()
    if run_as is None:
        return base
    reachable = all(p.stat().st_mode & 0o001 for p in (base, *base.parents))
    return base if reachable else Path("/tmp")


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1, for tests (sync; a context manager).

    Every start runs ``initdb`` into a new temporary directory; ``close`` (or leaving the
    ``with`` block) stops the server and removes the directory, data included.
    """

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_postgres_bin_dir()
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self._run_as = _unprivileged_account()
        self._port = free_port()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self._proc.pid

    @property
    def url(self) -> str:
        """SQLAlchemy's asyncpg URL of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self._port}/{database}"

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines) if self._dir is not None else "(no log)"

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-h", "127.0.0.1",
            "-p", str(self._port),
            # Our own socket directory: Debian's /run/postgresql may not exist or be ours.
            "-k", str(self.socket_dir),
            # Durability is worth nothing for a throwaway test cluster, and without these
            # every commit and CREATE DATABASE waits for the disk.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            *self.extra_args,
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def _popen(self, cmd: list[str], log: int | None) -> subprocess.Popen[bytes]:
        run_as = self._run_as
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # ours only
        env.update(LC_ALL="C", TZ="UTC")
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.base_dir,  # not the caller's cwd, which the server's account may not enter
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )

    def _make_dirs(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="orderstream-pg-", dir=_base_dir_for(self._run_as)))
        self._dir = base
        self.socket_dir.mkdir(mode=0o700)
        self.log_path.touch(mode=0o600)
        if self._run_as is not None:
            # initdb creates data/ itself, 0700 and owned by its account, as postgres demands.
            for path in (base, self.socket_dir, self.log_path):
                os.chown(path, self._run_as.uid, self._run_as.gid)

    def _initdb(self) -> None:
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-A", "trust",  # loopback and our own socket only: no passwords to keep
            "-U", SUPERUSER,
            "-E", "UTF8",
            "--no-locale",  # C collation: the same results on every machine
            "--no-sync",
        ]
        with open(self.log_path, "ab") as log:
            proc = self._popen(cmd, log.fileno())
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
        if code != 0:
            raise RuntimeError(f"initdb failed ({'timed out' if code is None else code})\n"
                               f"command: {shlex.join(cmd)}\n{self.log_path}:\n"
                               f"{self.log_tail()}")

    def start(self) -> PostgresServer:
        if self._dir is not None:
            raise RuntimeError(f"PostgreSQL server already started in {self._dir}")
        self._make_dirs()
        try:
            self._initdb()
            for attempt in range(3):
                try:
                    self._spawn_and_wait()
                    break
                except RuntimeError:
                    # The free port we picked may have been taken before postgres bound it.
                    if "could not bind" not in self.log_tail(10) or attempt == 2:
                        raise
                    self._port = free_port()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn_and_wait(self) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = self._popen(self.command(), log.fileno())
        proc = self._proc
        expected = str(self.data_dir)

        async def probe() -> str | None:
            """Our server's answer once it accepts connections; None if it exited."""
            # A short connect timeout: a refused or half-started server is retried.
            engine = create_async_engine(self.url, poolclass=NullPool,
                                         connect_args={"timeout": 2})
            try:
                while proc.poll() is None:
                    try:
                        async with engine.connect() as conn:
                            # Another server that took our port would answer too.
                            return str((await conn.execute(text("SHOW data_directory")))
                                       .scalar_one())
                    except Exception:
                        # "the database system is starting up", refusals, timeouts: retry.
                        if time.monotonic() > deadline:
                            raise TimeoutError from None
                        await asyncio.sleep(0.05)
                return None
            finally:
                await engine.dispose()

        deadline = time.monotonic() + self.start_timeout
        try:
            answer = _run_async(probe)
        except TimeoutError:
            self._halt()
            raise RuntimeError(
                f"PostgreSQL did not accept connections on port {self._port} within "
                f"{self.start_timeout:.0f}s\n{self.log_path}:\n{self.log_tail()}"
            ) from None
        if answer is None:
            self._proc = None
            raise RuntimeError(
                f"postgres exited with code {proc.returncode} at start\n"
                f"command: {shlex.join(self.command())}\n{self.log_path}:\n{self.log_tail()}"
            )
        if answer != expected:
            self._halt()
            raise RuntimeError(f"port {self._port} is answered by another PostgreSQL "
                               f"(data directory {answer}, ours is {expected})")

    def _halt(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect clients, end);
        then immediate (SIGQUIT), then SIGKILL, each after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGINT, signal.SIGQUIT):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def close(self) -> None:
        """Stop the server and remove its directory, data included."""
        self._halt()
        base, self._dir = self._dir, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def _admin(self, *statements: str) -> None:
        async def run() -> None:
            # CREATE / DROP DATABASE cannot run inside a transaction block.
            engine = create_async_engine(self.url, poolclass=NullPool,
                                         isolation_level="AUTOCOMMIT")
            try:
                async with engine.connect() as conn:
                    for statement in statements:
                        await conn.execute(text(statement))
            finally:
                await engine.dispose()

        _run_async(run)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case letters, digits, _); its URL."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not [a-z_][a-z0-9_]{{0,62}}")
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any connections a test left open to it."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not [a-z_][a-z0-9_]{{0,62}}")
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            f'DROP DATABASE IF EXISTS "{name}"',
        )

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.postgres_server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("find", help="print the bin directory of a PostgreSQL server, installing "
                   "Debian's postgresql if needed")
    args = parser.parse_args(argv)
    try:
        if args.command == "find":
            print(find_postgres_bin_dir())
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
