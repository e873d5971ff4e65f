"""Signed requests on a real worker: with producer keys configured, a correctly signed
request executes and every other one gets exactly one `unauthenticated` result and nothing
else happens (no order record, no event, nothing at the exchange); keys limited to an
account use only that account; without keys, unsigned requests pass."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from executor.config import Settings, load_settings
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import (
    Action,
    OrderType,
    Request,
    ResultStatus,
    Side,
    decode_result,
    encode,
    parse_decimal,
)
from producer.keys import Keys
from producer.signing import sign

from .conftest import running

K = Keys()
SECRET = b"test-secret-0123456789abcdef"
ALPHA_SECRET = b"alpha-secret-0123456789abcdef"


@pytest.fixture
def signed_settings(redis_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "k1").write_bytes(SECRET + b"\n")
    (tmp_path / "alpha").write_bytes(ALPHA_SECRET)
    path = tmp_path / "orderstream.toml"
    path.write_text(
        '[accounts.default]\nbroker = "paper"\n'
        '[accounts.alpha]\nbroker = "paper"\n'
        '[accounts.beta]\nbroker = "paper"\n'
        f'[auth.keys.k1]\nsecret_file = "{tmp_path / "k1"}"\n'
        f'[auth.keys.alpha-desk]\nsecret_file = "{tmp_path / "alpha"}"\n'
        'accounts = ["alpha"]\n')
    return load_settings(path, {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
                                "ORDERSTREAM_METRICS_PORT": "0",
                                "ORDERSTREAM_METRICS_HOST": "127.0.0.1"})


def now_ms() -> int:
    return int(time.time() * 1000)


def place(cid: str, account: str | None = None, quantity: str = "0.010") -> bytes:
    body: dict[str, Any] = {"client_order_id": cid, "symbol": "BTCUSDT", "side": "buy",
                            "type": "market", "quantity": quantity, "issued_at": now_ms()}
    if account is not None:
        body["account"] = account
    return json.dumps(body, separators=(",", ":")).encode()


def signed(data: bytes, key_id: str = "k1", secret: bytes = SECRET) -> dict[str, bytes]:
    return {"data": data, "key_id": key_id.encode(), "sig": sign(secret, data).encode()}


async def received(worker: Worker) -> int:
    total = 0
    for broker in worker.brokers.values():
        total += await broker.received_count()  # type: ignore[attr-defined]
    return total


async def results_of(r: aioredis.Redis, request_id: str) -> list[dict[str, Any]]:
    found = []
    for stream in (K.completed, K.failed):
        for _id, fields in await r.xrange(stream):
            if fields[b"request_id"].decode() == request_id:
                found.append(json.loads(fields[b"data"]))
    return found


async def test_a_correctly_signed_request_executes(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    async with running(signed_settings) as worker:
        rid = (await redis_client.xadd(K.pending, signed(place("ok-1")))).decode()
        result = await client.wait_result(rid, 10)
        assert result.status is ResultStatus.FILLED and result.reason_code is None
        assert await received(worker) == 1
    assert await redis_client.exists(K.order("ok-1"))


async def test_every_bad_signature_is_unauthenticated_and_changes_nothing(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    good = signed(place("c-0"))["sig"]
    cases: dict[str, tuple[dict[str, bytes], str]] = {
        "unsigned": ({"data": place("c-1")}, "no `key_id` field"),
        "no sig": ({"data": place("c-2"), "key_id": b"k1"}, "no `sig` field"),
        "unknown key": (signed(place("c-3"), key_id="k9"), "`key_id` `k9` names no"),
        "upper-case hex": ({**signed(place("c-4")), "sig": signed(place("c-4"))["sig"].upper()},
                           "64 lowercase hex digits"),
        "short hex": ({**signed(place("c-5")), "sig": signed(place("c-5"))["sig"][:40]},
                      "it has 40 characters"),
        "another entry's sig": ({"data": place("c-6"), "key_id": b"k1", "sig": good},
                                "`sig` does not match `data` under key `k1`"),
        "wrong secret": (signed(place("c-7"), secret=ALPHA_SECRET), "does not match"),
        "tampered data": ({**signed(place("c-8")), "data": place("c-8", quantity="5")},
                          "does not match"),
        "other key's account": (signed(place("c-9", account="beta"), "alpha-desk",
                                       ALPHA_SECRET),
                                "`account` `beta` may not be used with key `alpha-desk`"),
        "limited key, no account": (signed(place("c-10"), "alpha-desk", ALPHA_SECRET),
                                    "`account` `default` may not be used"),
    }
    async with running(signed_settings) as worker:
        ids = {name: (await redis_client.xadd(K.pending, fields)).decode()
               for name, (fields, _) in cases.items()}
        await client.wait_results(ids.values(), 15)
        for name, (fields, needle) in cases.items():
            answers = await results_of(redis_client, ids[name])
            assert len(answers) == 1, name
            (result,) = answers
            assert result["status"] == "failed", name
            assert result["reason_code"] == "unauthenticated", name
            assert needle in result["reason"], (name, result["reason"])
            for secret in (SECRET, ALPHA_SECRET):
                assert secret.decode() not in result["reason"]
                assert sign(secret, fields["data"]) not in result["reason"]
            cid = json.loads(fields["data"])["client_order_id"]
            assert not await redis_client.exists(K.order(cid)), name
        assert await received(worker) == 0
    assert await redis_client.xlen(K.events) == 0
    assert await redis_client.xlen(K.completed) == 0
    assert await redis_client.xlen(K.failed) == len(cases)
    assert (await redis_client.xinfo_groups(K.pending))[0]["pending"] == 0


async def test_a_key_limited_to_an_account_cannot_reach_another(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    def limited(data: bytes) -> dict[str, bytes]:
        return signed(data, "alpha-desk", ALPHA_SECRET)

    resting = json.dumps({"client_order_id": "beta-1", "account": "beta", "symbol": "BTCUSDT",
                          "side": "buy", "type": "limit", "quantity": "0.010",
                          "price": "40000", "issued_at": now_ms()}).encode()
    async with running(signed_settings) as worker:
        on_alpha = (await redis_client.xadd(K.pending, limited(place("a-1", "alpha")))).decode()
        on_beta = (await redis_client.xadd(K.pending, limited(place("b-1", "beta")))).decode()
        # An unlimited key rests an order on beta; the alpha key may not cancel it, neither
        # naming beta nor naming no account (which would reach every account).
        rest = (await redis_client.xadd(K.pending, signed(resting))).decode()
        await client.wait_results([on_alpha, on_beta, rest], 10)
        cancels = [
            (await redis_client.xadd(K.pending, limited(json.dumps(
                {**body, "issued_at": now_ms()}).encode()))).decode()
            for body in ({"action": "cancel", "client_order_id": "beta-1", "account": "beta"},
                         {"action": "cancel", "client_order_id": "beta-1"},
                         {"action": "cancel_all"},
                         {"action": "cancel_all", "account": "beta"})
        ]
        refused = await client.wait_results(cancels, 10)
        results = await client.wait_results([on_alpha, on_beta, rest], 10)
        assert await worker.brokers["alpha"].received_count() == 1  # type: ignore[attr-defined]
        assert await worker.brokers["beta"].received_count() == 1  # type: ignore[attr-defined]
    assert results[on_alpha].status is ResultStatus.FILLED
    assert results[on_alpha].account == "alpha"
    assert results[on_beta].reason_code == "unauthenticated"
    assert results[rest].status is ResultStatus.ACCEPTED
    assert {r.reason_code for r in refused.values()} == {"unauthenticated"}
    assert not await redis_client.exists(K.order("b-1"))
    assert (await redis_client.hget(K.order("beta-1"), "state")) == b"accepted"


async def test_without_keys_unsigned_requests_pass_and_sig_is_ignored(
    make_settings: Any, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    async with running(make_settings()) as worker:
        plain = (await redis_client.xadd(K.pending, {"data": place("u-1")})).decode()
        junk = (await redis_client.xadd(
            K.pending, {"data": place("u-2"), "key_id": b"nobody", "sig": b"zz"})).decode()
        results = await client.wait_results([plain, junk], 10)
        assert await received(worker) == 2
    assert {r.status for r in results.values()} == {ResultStatus.FILLED}


async def test_the_client_and_the_cli_sign_what_they_publish(
    signed_settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    async with running(signed_settings), OrderClient.from_url(
            redis_url, key_id="alpha-desk", secret=ALPHA_SECRET) as signer:
        placed = await signer.place("BTCUSDT", "buy", "limit", "0.010", price="40000",
                                    account="alpha")
        assert (await signer.wait_result(placed.request_id, 10)).status is ResultStatus.ACCEPTED
        assert placed.client_order_id is not None
        cancel = await signer.cancel(placed.client_order_id, account="alpha")
        assert (await signer.wait_result(cancel.request_id, 10)).status is \
            ResultStatus.CANCELLED
        (tmp_path / "key").write_bytes(SECRET + b"\n")
        cli = [str(Path(sys.executable).parent / "orderstream"), "submit", "--redis-url",
               redis_url, "--symbol", "ETHUSDT", "--side", "sell", "--quantity", "0.5",
               "--json", "--timeout", "10"]
        env = {**os.environ, "ORDERSTREAM_KEY_SECRET": SECRET.decode()}
        env.pop("ORDERSTREAM_KEY_ID", None)
        outputs = []
        for extra in (["--key-id", "k1"], ["--key-id", "k1", "--key-file", str(tmp_path / "key")],
                      []):
            proc = await asyncio.create_subprocess_exec(
                *cli, *extra, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, _err = await asyncio.wait_for(proc.communicate(), 30)
            outputs.append((proc.returncode, json.loads(out)))
    assert [(code, r["status"]) for code, r in outputs[:2]] == [(0, "filled"), (0, "filled")]
    code, unsigned = outputs[2]
    assert code == 1 and unsigned["reason_code"] == "unauthenticated"


# -- freshness: a captured signed entry cannot be replayed later ---------------------------

def captured(signer: OrderClient, request: Request) -> dict[str, bytes]:
    """A signed entry as it is written, and as anyone who can read the stream sees it."""
    fresh = msgspec.structs.replace(request, issued_at=now_ms())
    return signer.entry(encode(fresh))


REPLAYED = {
    "place": Request(client_order_id="p-1", symbol="BTCUSDT", side=Side.BUY,
                     type=OrderType.MARKET, quantity=parse_decimal("0.001")),
    "cancel": Request(action=Action.CANCEL, client_order_id="t-1"),
    "cancel_all": Request(action=Action.CANCEL_ALL, symbol="ETHUSDT"),
    "amend": Request(action=Action.AMEND, client_order_id="t-1", price=parse_decimal("2001")),
}


@pytest.mark.parametrize("action", sorted(REPLAYED))
async def test_a_signed_request_added_again_after_its_window_is_refused(
    action: str, signed_settings: Settings, redis_url: str, redis_client: aioredis.Redis
) -> None:
    signed_settings.auth.max_age_ms = 1_000
    signed_settings.auth.max_clock_skew_ms = 200
    async with running(signed_settings) as worker, OrderClient.from_url(
            redis_url, key_id="k1", secret=SECRET) as signer:
        rest = await signer.place("ETHUSDT", "buy", "limit", "0.01", price="2000",
                                  client_order_id="t-1")
        assert (await signer.wait_result(rest.request_id, 10)).status is \
            ResultStatus.ACCEPTED
        old = captured(signer, REPLAYED[action])
        await asyncio.sleep(1.3)  # past max_age_ms and the skew
        late = (await redis_client.xadd(K.pending, old)).decode()  # type: ignore[arg-type]
        refused = await signer.wait_result(late, 10)
        assert refused.reason_code == "unauthenticated"
        assert "`issued_at`" in (refused.reason or "") and "1000 ms" in (refused.reason or "")
        # Nothing happened: the resting order is untouched, no order was placed.
        assert (await redis_client.hget(K.order("t-1"), "state")) == b"accepted"
        assert not await redis_client.exists(K.order("p-1"))
        assert await received(worker) == 1
        # Inside the window a signed entry passes, and so does a copy of it (whatever the
        # copy then meets: a duplicate, an order already cancelled...).
        new = captured(signer, REPLAYED[action])
        first = (await redis_client.xadd(K.pending, new)).decode()  # type: ignore[arg-type]
        assert (await signer.wait_result(first, 10)).reason_code is None
        again = (await redis_client.xadd(K.pending, new)).decode()  # type: ignore[arg-type]
        assert (await signer.wait_result(again, 10)).reason_code != "unauthenticated"


async def test_unsigned_hostile_entries_are_refused_before_they_are_read(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    deep = b'{"client_order_id":"d-1","metadata":' + b"[" * 50_000 + b"}"
    huge = b'{"client_order_id":"h-1","quantity":1e9999999999}'
    async with running(signed_settings):
        ids = [(await redis_client.xadd(K.pending, fields)).decode()  # type: ignore[arg-type]
               for fields in ({"data": deep}, {"data": huge}, signed(deep), signed(huge))]
        results = await client.wait_results(ids, 15)
    codes = [(results[i].reason_code, results[i].client_order_id) for i in ids]
    # Unsigned: refused on the signature alone, without a look inside (no client id read);
    # signed: read, and refused as invalid.
    assert codes == [("unauthenticated", None), ("unauthenticated", None),
                     ("invalid", None), ("invalid", "h-1")]


async def test_the_kill_switch_signs_fresh_requests(
    signed_settings: Settings, redis_url: str, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    from .test_operator_commands import cli

    (tmp_path / "key").write_bytes(SECRET)
    async with running(signed_settings), OrderClient.from_url(
            redis_url, key_id="k1", secret=SECRET) as signer:
        held = await signer.place("BTCUSDT", "buy", "market", "0.002", client_order_id="k-1")
        resting = await signer.place("ETHUSDT", "buy", "limit", "0.01", price="2000",
                                     client_order_id="k-2")
        await signer.wait_results([held.request_id, resting.request_id], 10)
        code, out = await cli(redis_url, "kill", "--flatten", "--wait", "20", "--key-id", "k1",
                              "--key-file", str(tmp_path / "key"))
    assert code == 0, out
    assert "cancelled 1 open orders" in out and "close default BTCUSDT sell 0.002: filled" in out
    assert (await redis_client.hget(K.order("k-2"), "state")) == b"cancelled"
    failed = [json.loads(f[b"data"]) for _, f in await redis_client.xrange(K.failed)]
    assert failed == []


def readme_block(language: str) -> str:
    """The example of the "Signed requests" section of docs/wire-contract.md in
    ``language``."""
    page = (Path(__file__).parents[2] / "docs" / "wire-contract.md").read_text()
    section = page.split("## Signed requests", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


async def test_the_readme_examples_of_signed_requests_work_as_written(
    tmp_path: Path, redis_url: str, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    (tmp_path / "desk").write_bytes(SECRET)
    path = tmp_path / "orderstream.toml"
    path.write_text('[accounts.alpha]\nbroker = "paper"\n'
                    + readme_block("toml").replace('secret_env = "ORDERSTREAM_KEY_DESK1"',
                                                   f'secret_file = "{tmp_path / "desk"}"'))
    settings = load_settings(path, {"REDIS_URL": redis_url, "ORDERSTREAM_CONSUMER": "w1",
                                    "ORDERSTREAM_METRICS_PORT": "0",
                                    "ORDERSTREAM_METRICS_HOST": "127.0.0.1"})
    env = {**os.environ, "ORDERSTREAM_KEY_SECRET": SECRET.decode(), "REDIS_URL": redis_url}
    # Run as written; only the connection is pointed at the test's server.
    shell = 'redis-cli() { command redis-cli -u "$REDIS_URL" "$@"; }\n' + readme_block("sh")
    python = ("import os, redis\nsecret = os.environ['ORDERSTREAM_KEY_SECRET'].encode()\n"
              "_Redis = redis.Redis\n"
              "redis.Redis = lambda: _Redis.from_url(os.environ['REDIS_URL'])\n"
              + readme_block("python"))
    async with running(settings):
        for argv in (["bash", "-c", shell], [sys.executable, "-c", python]):
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
        # Answered requests leave orders:pending: their results say what became of them.
        for _ in range(200):
            results = [decode_result(f[b"data"]) for stream in (K.completed, K.failed)
                       for _, f in await redis_client.xrange(stream)]
            if len(results) >= 2:
                break
            await asyncio.sleep(0.05)
    answers = sorted((r.client_order_id, r.status, r.reason_code) for r in results)
    # The shell's order fills; the Python one, the same client id, is its duplicate.
    assert answers == [("s1-0002", ResultStatus.FAILED, "duplicate"),
                       ("s1-0002", ResultStatus.FILLED, None)]


async def test_a_list_entry_is_refused_where_requests_are_signed(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    """A worker cannot sign the exits it would place: the entry is refused, naming the
    field, and nothing reaches the broker."""
    body = json.loads(place("tp-1"))
    body["take_profit"] = "60000"
    data = json.dumps(body, separators=(",", ":")).encode()
    async with running(signed_settings) as worker:
        rid = (await redis_client.xadd(K.pending, signed(data))).decode()
        result = await client.wait_result(rid, 10)
        assert result.reason_code == "invalid" and "take_profit" in (result.reason or "")
        assert await received(worker) == 0
    assert not await redis_client.exists(K.order("tp-1"))
    assert not await redis_client.hexists(K.lists("default"), "tp-1")


async def test_an_algo_is_refused_where_requests_are_signed(
    signed_settings: Settings, client: OrderClient, redis_client: aioredis.Redis
) -> None:
    """A worker cannot sign the child orders it would send: the parent is refused, naming
    the field, and nothing is written."""
    body = json.loads(place("twap-1"))
    body["algo"] = {"strategy": "twap", "horizon_ms": 60000, "slices": 6}
    data = json.dumps(body, separators=(",", ":")).encode()
    async with running(signed_settings) as worker:
        rid = (await redis_client.xadd(K.pending, signed(data))).decode()
        result = await client.wait_result(rid, 10)
        assert result.reason_code == "invalid" and "algo" in (result.reason or "")
        assert await received(worker) == 0
    assert not await redis_client.exists(K.order("twap-1"))
    assert not await redis_client.exists(K.algos("default"))
