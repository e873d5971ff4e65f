"""The Node and Go producers of examples/ against a real worker on the paper broker: each
publishes its order, which the worker executes, and prints the result it waited for; signed
with the worker's producer key it is accepted, signed with another secret it is refused as
`unauthenticated` (and nothing reaches the broker).

Each example is installed once per session the way its README says (``npm ci`` from the
committed lock; ``go build`` from go.mod and go.sum, offline unless $GOPROXY is set), and
skipped, saying why, where its toolchain or its Redis client library cannot be had.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis.asyncio as aioredis

from executor.config import Settings, load_settings
from producer.keys import Keys

from .conftest import running, settings_for

K = Keys()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "example-secret-0123456789abcdef"
INSTALL_TIMEOUT_S = 300
# redis (node-redis) 5 supports no older Node.
NODE_MIN = (18, 19)


def _install(args: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Runs an install step; None when it worked, else why it did not (its last lines)."""
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"it did not finish within {INSTALL_TIMEOUT_S} s"
    return None if done.returncode == 0 else "\n".join(done.stderr.strip().splitlines()[-3:])


@pytest.fixture(scope="session")
def node_producer(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``node producer.js`` in a copy of examples/node installed with ``npm ci``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (Debian: apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    found = re.match(r"v(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < NODE_MIN:
        pytest.skip(f"node {version.strip()} is older than the {NODE_MIN[0]}.{NODE_MIN[1]} "
                    "that node-redis 5 needs")
    workdir = tmp_path_factory.mktemp("node-producer")
    for name in ("package.json", "package-lock.json", "producer.js"):
        shutil.copy(EXAMPLES / "node" / name, workdir / name)
    failed = _install([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], workdir)
    if failed is not None:
        pytest.skip(f"npm ci could not install node-redis: {failed}")
    return [node, str(workdir / "producer.js")]


@pytest.fixture(scope="session")
def go_producer(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The binary ``go build`` makes of examples/go."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (Debian: apt-get install golang-go)")
    # Never rewrite go.mod or go.sum; without a $GOPROXY of the developer's, fetch nothing.
    env = {**os.environ, "GOFLAGS": "-mod=readonly",
           "GOPROXY": os.environ.get("GOPROXY") or "off"}
    source = EXAMPLES / "go"
    failed = _install([go, "mod", "download"], source, env)
    if failed is not None:
        pytest.skip("go-redis v9 (github.com/redis/go-redis/v9, examples/go/go.mod) is not in "
                    f"the Go module cache and cannot be fetched (GOPROXY={env['GOPROXY']}; set "
                    "$GOPROXY to fetch it); Debian packages no go-redis v9 (bookworm: only "
                    f"gopkg.in/redis.v5): {failed}")
    binary = tmp_path_factory.mktemp("go-producer") / "producer"
    build = subprocess.run([go, "build", "-o", str(binary), "."], cwd=source, env=env,
                           capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert build.returncode == 0, build.stderr  # the modules are there: the code must build
    return [str(binary)]


@pytest.fixture(params=["node", "go"])
def producer(request: pytest.FixtureRequest) -> list[str]:
    command: list[str] = request.getfixturevalue(f"{request.param}_producer")
    return command


def producer_env(redis_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    # Only what the test gives: none of the developer's ORDERSTREAM_* or REDIS_URL.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDERSTREAM_") and k != "REDIS_URL"}
    return {**env, "REDIS_URL": redis_url, **extra}


Entry = tuple[str, dict[bytes, bytes]]


class Run(NamedTuple):
    code: int
    out: str
    err: str


async def answered(command: list[str], settings: Settings, r: aioredis.Redis,
                   *envs: Mapping[str, str]) -> tuple[list[Run], list[Entry], int]:
    """Runs the example once per env, then a worker once all their entries are published;
    returns the runs, the entries as published (read before the worker deletes what it
    answered) and how many orders reached the broker."""
    url = settings.redis.url
    # Run apart from this event loop, in which the worker serves.
    procs = [await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=producer_env(url, env)) for env in envs]
    for _ in range(600):
        if await r.xlen(K.pending) == len(envs) or any(p.returncode is not None for p in procs):
            break
        await asyncio.sleep(0.05)
    published: Any = await r.xrange(K.pending)
    entries = [(entry_id.decode(), fields) for entry_id, fields in published]
    async with running(settings) as worker:
        runs = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode is not None
            runs.append(Run(proc.returncode, out.decode(), err.decode()))
        count: int = await worker.brokers["default"].received_count()  # type: ignore[attr-defined]
    assert len(entries) == len(envs), [run.err for run in runs]
    return runs, entries, count


def check_answered(run: Run, entries: list[Entry]) -> dict[str, Any]:
    """The result the example printed answers the entry it published, a BTCUSDT market buy
    of the decimal string 0.01, and names its client_order_id."""
    assert run.code == 0, run.err
    result: dict[str, Any] = json.loads(run.out)
    (fields,) = [fields for entry_id, fields in entries if entry_id == result["request_id"]]
    request = json.loads(fields[b"data"])
    assert request["quantity"] == "0.01"  # a string: no float on the wire
    assert (request["symbol"], request["side"], request["type"]) == ("BTCUSDT", "buy", "market")
    assert result["client_order_id"] == request["client_order_id"]
    return result


async def test_each_example_publishes_an_order_and_prints_its_result(
    producer: list[str], redis_url: str, redis_client: aioredis.Redis
) -> None:
    (run,), entries, received = await answered(producer, settings_for(redis_url), redis_client,
                                               {})
    assert received == 1
    result = check_answered(run, entries)
    assert (result["status"], result["filled_quantity"]) == ("filled", "0.01")
    assert set(entries[0][1]) == {b"data"}  # unsigned: no key_id, no sig
    assert await redis_client.exists(K.order(result["client_order_id"]))


@pytest.fixture
def signed_settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "desk").write_text(SECRET)
    path = tmp_path / "orderstream.toml"
    path.write_text('[accounts.default]\nbroker = "paper"\n'
                    f'[auth.keys.desk-1]\nsecret_file = "{tmp_path / "desk"}"\n')
    return load_settings(path, {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
                                "ORDERSTREAM_METRICS_PORT": "0",
                                "ORDERSTREAM_METRICS_HOST": "127.0.0.1"})


async def test_each_example_signs_what_it_publishes(
    producer: list[str], signed_settings: Settings, redis_client: aioredis.Redis
) -> None:
    key = {"ORDERSTREAM_KEY_ID": "desk-1"}
    (signed, forged), entries, received = await answered(
        producer, signed_settings, redis_client, {**key, "ORDERSTREAM_KEY_SECRET": SECRET},
        {**key, "ORDERSTREAM_KEY_SECRET": "another-secret-0123456789"})
    assert received == 1
    for _entry_id, fields in entries:
        assert fields[b"key_id"] == b"desk-1"
        assert re.fullmatch(rb"[0-9a-f]{64}", fields[b"sig"])
        assert isinstance(json.loads(fields[b"data"])["issued_at"], int)  # epoch ms
    assert check_answered(signed, entries)["status"] == "filled"
    refused = json.loads(forged.out)  # a result came, exit 0: the refusal
    assert forged.code == 0, forged.err
    assert (refused["status"], refused["reason_code"]) == ("failed", "unauthenticated")
    assert SECRET not in forged.out
    (forged_fields,) = [fields for entry_id, fields in entries
                        if entry_id == refused["request_id"]]
    forged_id = json.loads(forged_fields[b"data"])["client_order_id"]
    assert not await redis_client.exists(K.order(forged_id))


async def test_each_example_gives_up_when_no_result_comes(
    producer: list[str], redis_url: str, redis_client: aioredis.Redis
) -> None:
    # No worker: the request stays pending and the example exits non-zero after its timeout.
    proc = await asyncio.create_subprocess_exec(
        *producer, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=producer_env(redis_url, {"RESULT_TIMEOUT_MS": "300"}))
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err
    assert out == b""
    left: Any = await redis_client.xrange(K.pending)
    ((entry_id, _fields),) = left
    assert b"no result for " + entry_id in err


def test_the_go_example_is_gofmt_clean() -> None:
    # Needs Go alone, not go-redis: where the example cannot be built, its form is checked.
    gofmt = shutil.which("gofmt")
    if gofmt is None:
        pytest.skip("go is not installed (Debian: apt-get install golang-go)")
    found = subprocess.run([gofmt, "-l", "-e", str(EXAMPLES / "go")], capture_output=True,
                           text=True, timeout=60)
    assert (found.returncode, found.stdout, found.stderr) == (0, "", "")
