"""deploy/redis-users.acl on a real redis-server: the producer user publishes requests and
reads results and nothing else; a worker connected as the worker user runs every kind of
request end to end without a single command refused (the server's ACL LOG stays empty)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from devtools.redis_server import RedisServer, find_redis_server
from executor.brokers.paper import PaperAccount
from executor.model.positions import decode_position
from executor.operations.exit_commands import exit_of, set_exit
from producer.client import OrderClient
from producer.contract import Algo, AlgoStrategy, OrderState, ResultStatus
from producer.keys import GROUP, Keys

from .conftest import replace, running, settings_for, until

K = Keys()
ACL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "redis-users.acl"
PLACEHOLDER = "#" + "0" * 64
PASSWORDS = {"orderstream-producer": "producer-pw-0123456789",
             "orderstream-worker": "worker-pw-0123456789"}
ADMIN_PASSWORD = "admin-pw-0123456789"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def acl_with_test_passwords(text: str) -> str:
    """The deploy file with this test's passwords for its users, plus an admin (the
    default user, with a password) for the test's own checks."""
    lines = []
    for line in text.splitlines():
        user = line.split()[1]
        assert PLACEHOLDER in line, f"{user}: the shipped file holds no real password hash"
        lines.append(line.replace(PLACEHOLDER, "#" + _sha256(PASSWORDS[user])))
    assert {line.split()[1] for line in lines} == set(PASSWORDS)
    lines.append(f"user default on #{_sha256(ADMIN_PASSWORD)} ~* &* +@all")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    d = tmp_path_factory.mktemp("acl")
    (d / "users.acl").write_text(acl_with_test_passwords(ACL_FILE.read_text()))
    server = RedisServer(binary=find_redis_server(), data_dir=d,
                         extra_args=["--aclfile", str(d / "users.acl")],
                         password=ADMIN_PASSWORD)
    with server:
        yield server


def url_as(server: RedisServer, user: str) -> str:
    password = ADMIN_PASSWORD if user == "default" else PASSWORDS[user]
    return server.url.replace("redis://", f"redis://{user}:{password}@")


@pytest.fixture
async def admin(acl_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(url_as(acl_server, "default"))
    await r.flushall()
    await r.execute_command("ACL", "LOG", "RESET")
    yield r
    await r.aclose()


@pytest.fixture
async def producer(acl_server: RedisServer, admin: aioredis.Redis
                   ) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(url_as(acl_server, "orderstream-producer"))
    yield r
    await r.aclose()


async def test_the_producer_publishes_and_reads_results(
    producer: aioredis.Redis, admin: aioredis.Redis
) -> None:
    entry = await producer.xadd(K.pending, {"data": "{}"})
    assert await admin.xlen(K.pending) == 1
    for stream in (K.completed, K.failed, K.events):
        await admin.xadd(stream, {"data": "{}"})
        assert len(await producer.xrange(stream)) == 1
        assert len(await producer.xrevrange(stream, count=1)) == 1
        assert await producer.xread({stream: "0-0"}, count=1, block=10)
    assert await producer.ping()
    assert entry


@pytest.mark.parametrize(
    ("what", "command"),
    [
        ("write a result", ("XADD", K.completed, "*", "data", "{}")),
        ("write a failure", ("XADD", K.failed, "*", "data", "{}")),
        ("write an event", ("XADD", K.events, "*", "data", "{}")),
        ("delete the stream", ("DEL", K.pending)),
        ("unlink the stream", ("UNLINK", K.pending)),
        ("trim the stream", ("XTRIM", K.pending, "MAXLEN", "0")),
        ("delete a request", ("XDEL", K.pending, "1-0")),
        ("read others' requests", ("XRANGE", K.pending, "-", "+")),
        ("read others' requests (XREAD)", ("XREAD", "STREAMS", K.pending, "0")),
        ("take requests as a consumer", ("XREADGROUP", "GROUP", GROUP, "c", "STREAMS",
                                         K.pending, ">")),
        ("ack requests", ("XACK", K.pending, GROUP, "1-0")),
        ("drop the group", ("XGROUP", "DESTROY", K.pending, GROUP)),
        ("read all of an order record", ("HGETALL", K.order("c-1"))),
        ("write an order record", ("HSET", K.order("c-1"), "state", "filled")),
        ("read another hash", ("HGET", K.trading, "global")),
        ("read the paper exchange", ("XRANGE", K.paper("default", "received"), "-", "+")),
        ("run a script", ("EVAL", "return 1", "0")),
        ("run a loaded script", ("EVALSHA", "0" * 40, "0")),
        ("load a script", ("SCRIPT", "LOAD", "return 1")),
        ("list keys", ("KEYS", "*")),
        ("scan keys", ("SCAN", "0")),
        ("flush", ("FLUSHALL",)),
        ("reconfigure", ("CONFIG", "SET", "appendonly", "no")),
        ("change users", ("ACL", "SETUSER", "orderstream-producer", "+@all")),
        ("publish on a channel", ("PUBLISH", "orders", "x")),
        ("write outside the prefix", ("XADD", "other:pending", "*", "data", "{}")),
    ],
)
async def test_the_producer_can_do_nothing_else(
    producer: aioredis.Redis, admin: aioredis.Redis, what: str, command: tuple[str, ...]
) -> None:
    await admin.xadd(K.pending, {"data": "{}"}, id="1-0")
    await admin.xgroup_create(K.pending, GROUP, id="0")
    with pytest.raises(NoPermissionError):
        await producer.execute_command(*command)
    assert await admin.xlen(K.pending) == 1, what
    assert await admin.xlen(K.completed) == 0, what


async def test_a_full_round_trip_as_worker_and_producer_users(
    acl_server: RedisServer, admin: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "worker.pw").write_text(PASSWORDS["orderstream-worker"])
    settings = settings_for(acl_server.url, redis_username="orderstream-worker",
                            redis_password_file=str(tmp_path / "worker.pw"),
                            visibility_timeout_ms=1000, heartbeat_ms=200,
                            track_interval_ms=100)
    producer_url = url_as(acl_server, "orderstream-producer")
    async with running(settings), OrderClient.from_url(producer_url) as client:
        market = await client.place("BTCUSDT", "buy", "market", "0.010")
        resting = await client.place("BTCUSDT", "buy", "limit", "0.010", price="40000")
        other = await client.place("ETHUSDT", "sell", "limit", "0.5", price="9000")
        first = await client.wait_results([market.request_id, resting.request_id,
                                           other.request_id], 10)
        assert resting.client_order_id and other.client_order_id
        amend = await client.amend(resting.client_order_id, price="41000")
        cancel = await client.cancel(other.client_order_id)
        bad: Any = await client.redis.xadd(K.pending, {"data": "{not json"})
        second = await client.wait_results([amend.request_id, cancel.request_id,
                                            bad.decode()], 10)
        cancel_all = await client.cancel_all(symbol="BTCUSDT")
        last = await client.wait_result(cancel_all.request_id, 10)
        read = await client.order(market.client_order_id or "")
        await asyncio.sleep(1.5)  # tracker, heartbeats, reclaimer and projector passes
    # The refusals first: they are the cause of any result below that is not as expected.
    refused = await admin.execute_command("ACL", "LOG")
    assert refused == [], json.dumps([_text_log(e) for e in refused], indent=1)
    assert first[market.request_id].status is ResultStatus.FILLED
    assert first[resting.request_id].status is ResultStatus.ACCEPTED
    assert second[amend.request_id].status is ResultStatus.ACCEPTED
    assert second[cancel.request_id].status is ResultStatus.CANCELLED
    assert second[bad.decode()].reason_code == "invalid"
    assert last.status is ResultStatus.CANCELLED and len(last.cancelled) == 1
    assert read is not None and read.state is OrderState.FILLED
    assert await admin.hget(K.positions, "default:BTCUSDT")  # the projector ran


async def test_the_worker_may_wait_for_replicas(acl_server: RedisServer) -> None:
    """``[redis] durability = "wait"`` sends WAIT after taking the send tokens."""
    worker = aioredis.Redis.from_url(url_as(acl_server, "orderstream-worker"))
    try:
        assert await worker.execute_command("WAIT", 0, 0) == 0
    finally:
        await worker.aclose()


def _text_log(entry: Any) -> dict[str, str]:
    pairs = dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) \
        else entry
    return {str(k): str(v) for k, v in pairs.items()}


@pytest.mark.parametrize(
    "command",
    [
        ("XADD", "other:pending", "*", "data", "{}"),
        ("GET", "other:order:c-1"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("ACL", "SETUSER", "orderstream-worker", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
    ],
)
async def test_the_worker_stays_inside_its_prefix(
    acl_server: RedisServer, admin: aioredis.Redis, command: tuple[str, ...]
) -> None:
    worker = aioredis.Redis.from_url(url_as(acl_server, "orderstream-worker"))
    try:
        with pytest.raises(NoPermissionError):
            await worker.execute_command(*command)
        # Scripts run with the worker's rights, not more.
        with pytest.raises(NoPermissionError):
            await worker.eval("return redis.call('GET', KEYS[1])", 1, "other:x")
    finally:
        await worker.aclose()


def test_the_readme_shows_the_rules_of_the_shipped_file() -> None:
    page = (ACL_FILE.parents[1] / "docs" / "security.md").read_text()
    for line in ACL_FILE.read_text().splitlines():
        assert line.replace(PLACEHOLDER, "#<sha256>") in page, line.split()[1]


async def test_the_emulator_and_the_exits_run_as_the_worker_user(
    acl_server: RedisServer, admin: aioredis.Redis, tmp_path: Path
) -> None:
    """An emulated order held, fired and filled, a stop-loss closing a position, a
    bracket whose exit is placed, then cancelled with its entry, and a TWAP cancelled
    after its first child, with the worker connected as the worker user: no command
    refused."""
    (tmp_path / "worker.pw").write_text(PASSWORDS["orderstream-worker"])
    settings = replace(
        settings_for(acl_server.url, redis_username="orderstream-worker",
                     redis_password_file=str(tmp_path / "worker.pw"), track_interval_ms=100,
                     emulator_interval_ms=100, emulator_lease_ms=1000),
        accounts={"default": PaperAccount(emulate_conditional=True)})
    prices = K.paper("default", "prices")
    await admin.hset(prices, "BTCUSDT", "50000")
    async with running(settings), OrderClient.from_url(
            url_as(acl_server, "orderstream-producer")) as client:
        touched = await client.place("BTCUSDT", "buy", "market_if_touched", "0.5",
                                     stop_price="49900", client_order_id="acl-mit-1")
        assert (await client.wait_result(touched.request_id, 10)).emulated
        await admin.hset(prices, "BTCUSDT", "49900")

        async def position_of(quantity: str) -> bool:
            raw = await admin.hget(K.positions, "default:BTCUSDT")
            return raw is not None and decode_position(raw).quantity == Decimal(quantity)
        await until(lambda: position_of("0.5"), 10)
        await set_exit(admin, K, settings, "default", "BTCUSDT",
                       exit_of("49800", None, None, "price", "market", now=1, by="test"))
        await admin.hset(prices, "BTCUSDT", "49800")
        await until(lambda: position_of("0"), 10)
        bracket = await client.place("BTCUSDT", "buy", "market", "0.5",
                                     client_order_id="acl-br-1", take_profit="51000",
                                     stop_loss="48000")
        await client.wait_result(bracket.request_id, 10)

        async def state_of(cid: str, state: OrderState) -> bool:
            status = await client.order(cid)
            return status is not None and status.state is state
        await until(lambda: state_of("acl-br-1-x1", OrderState.ACCEPTED), 10)
        await client.wait_result((await client.cancel("acl-br-1")).request_id, 10)
        await until(lambda: state_of("acl-br-1-x1", OrderState.CANCELLED), 10)
        twap = await client.place("BTCUSDT", "buy", "market", "0.2", client_order_id="acl-tw-1",
                                  algo=Algo(strategy=AlgoStrategy.TWAP, horizon_ms=2_000,
                                            slices=2))
        await until(lambda: state_of("acl-tw-1-E1", OrderState.FILLED), 10)
        await client.wait_result((await client.cancel("acl-tw-1")).request_id, 10)
        await until(lambda: state_of("acl-tw-1", OrderState.CANCELLED), 10)
        # Its one result, written when the schedule ended, by the worker user.
        assert (await client.wait_result(twap.request_id, 10)).status is \
            ResultStatus.CANCELLED
    refused = await admin.execute_command("ACL", "LOG")
    assert refused == [], json.dumps([_text_log(e) for e in refused], indent=1)
