"""``make run``: a private Redis, one worker, the SQL archive (a SQLite file,
.run/orderstream.db), a burst of demo orders, then a trickle.

Uses $REDIS_URL only when it is set explicitly (and reachable): we never write demo data into
a Redis that merely happens to listen on localhost:6379. Otherwise a private redis-server runs
on a free loopback port with its files in .run/redis.

Stops on Ctrl-C / SIGTERM, or after $RUN_FOR seconds (default 15 when $CI is set or stdin is
not a terminal, else until Ctrl-C; RUN_FOR=0 means until Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from devtools.redis_server import RedisServer, free_port, url_is_reachable

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
WORKER_LOG = RUN_DIR / "worker.log"
ARCHIVE_LOG = RUN_DIR / "archive.log"
ARCHIVE_DB = RUN_DIR / "orderstream.db"
ARCHIVE_URL = f"sqlite:///{ARCHIVE_DB}"
HEALTH_TIMEOUT_S = 30.0
TRICKLE_EVERY_S = 2.0
CLI = [sys.executable, "-m", "executor"]


class _Stop(Exception):
    """Raised from the SIGTERM handler so that the same cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fail(msg: str) -> int:
    _say(msg)
    print(f"--- last lines of {WORKER_LOG} ---\n{_tail(WORKER_LOG)}\n---", flush=True)
    return 1


def run_for_seconds(env: Mapping[str, str], interactive: bool) -> float | None:
    """How long to keep running: None means until Ctrl-C."""
    raw = env.get("RUN_FOR", "").strip()
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"RUN_FOR must be a number of seconds, got {raw!r}") from None
        return seconds if seconds > 0 else None
    return 15.0 if env.get("CI") or not interactive else None


def _masked(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):  # HTTPError (503: not ready yet) is a URLError
        return False


def _wait_healthy(worker: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            return False
        if _healthy(port):
            return True
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen[bytes] | None, name: str) -> None:
    if process is None or process.poll() is not None:
        return
    _say(f"stopping the {name} (SIGTERM)")
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        _say(f"the {name} did not stop within 10 s: SIGKILL")
        process.kill()
        process.wait()


def _start_archive(env: dict[str, str], private_redis: bool) -> subprocess.Popen[bytes]:
    """The archive, set up first (its tables, and its registration with Redis, so nothing
    it has not stored is trimmed). A private Redis starts empty each run, so its archive
    does too; with $REDIS_URL the file carries on from its cursors."""
    if private_redis:
        for leftover in RUN_DIR.glob(f"{ARCHIVE_DB.name}*"):
            leftover.unlink()
    init = subprocess.run([*CLI, "archive", "--init"], env=env, cwd=ROOT, check=False,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(f"orderstream archive --init failed: {init.stderr.strip()}")
    with open(ARCHIVE_LOG, "wb") as log:
        return subprocess.Popen([*CLI, "archive"], env=env, cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _archived(env: dict[str, str]) -> str:
    """What the archive holds, as its daily report shows it."""
    shown = subprocess.run([*CLI, "report"], env=env, cwd=ROOT, check=False,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return shown.stdout.strip() or shown.stderr.strip()


def _demo(env: dict[str, str], *args: str) -> int:
    # Ctrl-C reaches the demo too (same process group): it is ours to interrupt.
    return subprocess.run([*CLI, "demo", *args], env=env, cwd=ROOT, check=False).returncode


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    RUN_DIR.mkdir(exist_ok=True)
    server: RedisServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    archive: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = {}
    try:
        run_for = run_for_seconds(os.environ, sys.stdin.isatty())
        url = os.environ.get("REDIS_URL")
        shown = "$REDIS_URL"  # how the banner tells the user to reach redis
        if url:
            if not url_is_reachable(url, timeout=3.0):
                _say(f"REDIS_URL={_masked(url)} is set but does not answer PING; unset it to "
                     "use a private redis-server")
                return 1
            _say(f"using REDIS_URL={_masked(url)}")
        else:
            # Own session: Ctrl-C reaches only us; we stop redis last, after the worker.
            server = RedisServer(data_dir=RUN_DIR / "redis", own_session=True)
            _say(f"starting private redis-server {server.binary}")
            server.start()
            url = shown = server.url
            _say(f"redis at {url} (log {server.log_path})")

        metrics_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": url,
            "ORDERSTREAM_METRICS_PORT": str(metrics_port),
            "ORDERSTREAM_METRICS_HOST": "127.0.0.1",  # a demo has no business on 0.0.0.0
            "ORDERSTREAM_CONSUMER": "demo-worker-1",
            "PYTHONUNBUFFERED": "1",  # so the log is readable while it runs
            # For people reading the log; deployments keep the worker's default, JSON lines.
            "ORDERSTREAM_LOG_FORMAT": os.environ.get("ORDERSTREAM_LOG_FORMAT", "text"),
            "ORDERSTREAM_ARCHIVE_URL": ARCHIVE_URL,
        }
        _say(f"starting the archive into {ARCHIVE_DB}; its log: {ARCHIVE_LOG}")
        archive = _start_archive(env, server is not None)
        _say(f"starting the worker; its log: {WORKER_LOG}")
        with open(WORKER_LOG, "wb") as log:  # one run per log: its tail is this run's
            worker = subprocess.Popen(
                [*CLI, "worker"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C goes to us only, and we stop the worker before redis.
                start_new_session=True,
            )
        if not _wait_healthy(worker, metrics_port):
            if worker.poll() is not None:
                return _fail(f"the worker exited early with code {worker.returncode}")
            return _fail(f"the worker's /healthz did not answer 200 in {HEALTH_TIMEOUT_S:.0f} s")
        _say(f"worker healthy (pid {worker.pid})")

        _say("publishing demo orders")
        if (code := _demo(env, "--count", "13")) != 0:
            return _fail(f"the demo producer exited with code {code}")

        how_to_stop = (
            "stop with Ctrl-C"
            if run_for is None
            else f"stops by itself after {run_for:.0f} s (RUN_FOR=0: never), or Ctrl-C"
        )
        print(
            f"""
================================================================================
  orderstream is running
    metrics:  http://127.0.0.1:{metrics_port}/metrics
    health:   http://127.0.0.1:{metrics_port}/healthz  (ready: /readyz)
    redis:    {_masked(url)}
    worker log: {WORKER_LOG}
    archive:  {ARCHIVE_DB} (log {ARCHIVE_LOG})
  publish more orders (another terminal):
    REDIS_URL={shown} .venv/bin/orderstream submit \\
        --symbol BTCUSDT --side buy --type market --quantity 0.010
    REDIS_URL={shown} .venv/bin/orderstream demo --count 5
  read the archive:
    .venv/bin/orderstream history --url {ARCHIVE_URL}
    .venv/bin/orderstream fills --url {ARCHIVE_URL} --csv
  one more demo order every {TRICKLE_EVERY_S:.0f} s; {how_to_stop}
================================================================================
""",
            flush=True,
        )
        deadline = None if run_for is None else time.monotonic() + run_for
        trickle = True
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                return _fail(f"the worker exited with code {worker.returncode}")
            if archive.poll() is not None:
                _say(f"the archive exited with code {archive.returncode}:\n"
                     f"{_tail(ARCHIVE_LOG)}")
                return 1
            if trickle and _demo(env, "--count", "1", "--quiet") != 0:
                _say("a trickle demo order failed; no more will be sent (the worker keeps running)")
                trickle = False
            time.sleep(TRICKLE_EVERY_S)
        _say("RUN_FOR elapsed")
        return 0
    except (RuntimeError, ValueError) as exc:  # no redis-server, bad RUN_FOR, ...
        _say(f"error: {exc}")
        return 1
    except (KeyboardInterrupt, _Stop):
        print(flush=True)
        _say("interrupted")
        return 0
    finally:
        # Ignore further Ctrl-C / SIGTERM while cleaning up, so nothing is left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(worker, "worker")
        if archive is not None and archive.poll() is None:
            time.sleep(1.5)  # its last batch: the block time and a commit
            _stop(archive, "archive")
            _say(f"the archive holds:\n{_archived(env)}")
        if server is not None:
            _say("stopping the private redis-server")
            server.stop()
        _say("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
