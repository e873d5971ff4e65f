"""The producer client on fakeredis: what it publishes, how it refuses bad requests before
sending, and how it finds a request's result among others."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakeredis import FakeAsyncRedis

from producer.client import OrderClient
from producer.contract import (
    Action,
    ContractError,
    Result,
    ResultStatus,
    decode_request,
    encode,
)
from producer.keys import Keys

K = Keys()


@pytest.fixture
async def client() -> AsyncIterator[OrderClient]:
    c = OrderClient(FakeAsyncRedis())
    yield c
    await c.aclose()


async def test_place_publishes_one_data_field_with_a_traceable_generated_id(
    client: OrderClient,
) -> None:
    sub = await client.place("BTCUSDT", "buy", "limit", "0.010", price="50000")
    ((entry_id, fields),) = await client.redis.xrange(K.pending)
    assert entry_id.decode() == sub.request_id
    assert set(fields) == {b"data"}
    req = decode_request(fields[b"data"])
    assert req.client_order_id == sub.client_order_id
    assert sub.client_order_id and sub.client_order_id.startswith("BTCUSDT-B-")
    assert json.loads(fields[b"data"])["quantity"] == "0.010"


async def test_bad_requests_are_refused_before_sending(client: OrderClient) -> None:
    with pytest.raises(ContractError, match="price"):
        await client.place("BTCUSDT", "buy", "limit", "1")
    with pytest.raises(ValueError, match="decimal"):
        await client.place("BTCUSDT", "buy", "market", "1e3")
    assert await client.redis.xlen(K.pending) == 0


async def test_cancel_and_cancel_all(client: OrderClient) -> None:
    await client.cancel("abc", account="main")
    await client.cancel_all(symbol="ETHUSDT")
    entries = await client.redis.xrange(K.pending)
    reqs = [decode_request(f[b"data"]) for _, f in entries]
    assert (reqs[0].action, reqs[0].client_order_id, reqs[0].account) == (
        Action.CANCEL, "abc", "main")
    assert (reqs[1].action, reqs[1].symbol) == (Action.CANCEL_ALL, "ETHUSDT")


async def test_wait_results_picks_its_own_results_from_both_streams(
    client: OrderClient,
) -> None:
    a = await client.place("BTCUSDT", "buy", "market", "1")
    b = await client.place("BTCUSDT", "sell", "market", "1")
    other = Result(request_id="1-1", action=Action.PLACE, status=ResultStatus.FILLED)
    ra = Result(request_id=a.request_id, action=Action.PLACE, status=ResultStatus.FILLED)
    rb = Result(request_id=b.request_id, action=Action.PLACE, status=ResultStatus.FAILED,
                reason_code="invalid", reason="x")
    await client.redis.xadd(K.completed, {"data": encode(other), "request_id": "1-1"})
    await client.redis.xadd(K.completed, {"data": encode(ra), "request_id": a.request_id})
    await client.redis.xadd(K.failed, {"data": encode(rb), "request_id": b.request_id})
    found = await client.wait_results([a.request_id, b.request_id], timeout=2)
    assert found == {a.request_id: ra, b.request_id: rb}


async def test_wait_result_times_out_with_a_clear_message(client: OrderClient) -> None:
    sub = await client.place("BTCUSDT", "buy", "market", "1")
    with pytest.raises(TimeoutError, match="1 of 1 results"):
        await client.wait_result(sub.request_id, timeout=0.2)


async def test_amend_publishes_only_the_changes_and_refuses_an_empty_one(
    client: OrderClient,
) -> None:
    await client.amend("abc", price="101.5", quantity="2")
    ((_, fields),) = await client.redis.xrange(K.pending)
    req = decode_request(fields[b"data"])
    assert (req.action, req.client_order_id, req.price, req.quantity, req.side) == (
        Action.AMEND, "abc", Decimal("101.5"), Decimal("2"), None)
    with pytest.raises(ContractError, match="at least one of price") as info:
        await client.amend("abc")
    assert info.value.field == "quantity"
    with pytest.raises(ContractError, match="price must be positive"):
        await client.amend("abc", price="0")
    assert await client.redis.xlen(K.pending) == 1


async def test_a_client_with_a_key_signs_the_exact_data_it_writes() -> None:
    from producer.signing import sign, signature_matches

    secret = b"producer-secret-0123456789"
    async with OrderClient(FakeAsyncRedis(), key_id="desk-1", secret=secret) as signer:
        await signer.place("BTCUSDT", "buy", "market", "0.010")
        await signer.cancel("c-1", account="default")
        for entry_id, fields in await signer.redis.xrange(K.pending):
            assert set(fields) == {b"data", b"key_id", b"sig"}
            assert fields[b"key_id"] == b"desk-1"
            assert fields[b"sig"] == sign(secret, fields[b"data"]).encode()
            assert signature_matches(secret, fields[b"data"], fields[b"sig"])
            # Stamped when made, so the workers can tell it from a copy added later.
            issued = decode_request(fields[b"data"]).issued_at
            assert issued is not None
            assert abs(issued - int(entry_id.split(b"-")[0])) < 5_000
        assert "producer-secret" not in repr(signer)
        # A place without its own client id could be replayed as a new order: refused here,
        # as the workers would.
        with pytest.raises(ContractError, match="client_order_id"):
            await signer.publish(decode_request(
                b'{"symbol":"BTCUSDT","side":"buy","type":"market","quantity":"1"}'))


def test_key_id_and_secret_go_together() -> None:
    with pytest.raises(ValueError, match="together"):
        OrderClient(FakeAsyncRedis(), key_id="k")
    with pytest.raises(ValueError, match="together"):
        OrderClient(FakeAsyncRedis(), secret=b"s" * 16)


async def test_an_unsigned_client_adds_no_issued_at() -> None:
    async with OrderClient(FakeAsyncRedis()) as client:
        await client.cancel("c-1")
        ((_id, fields),) = await client.redis.xrange(K.pending)
        assert decode_request(fields[b"data"]).issued_at is None
