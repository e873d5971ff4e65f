"""The producer client on a partitioned deployment, on fakeredis: every action goes to the
partition of its account and nowhere else, an account in no partition is refused before
anything is written, and results are found per partition by the Submitted (request ids are
unique per partition only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis

from producer.client import OrderClient, Submitted
from producer.contract import (
    Action,
    ContractError,
    OrderSpec,
    OrderState,
    OrderStatus,
    OrderType,
    Request,
    Result,
    ResultStatus,
    Side,
    decode_request,
    encode,
    parse_decimal,
)
from producer.keys import Keys
from producer.partitions import Deployment, Partitions

DEPLOYMENT = Deployment("orders", Partitions(count=2, accounts={"default": 0, "alpha": 1}))
P0, P1 = Keys("{orders-0}"), Keys("{orders-1}")


@pytest.fixture
async def client() -> AsyncIterator[OrderClient]:
    c = OrderClient(FakeAsyncRedis(), DEPLOYMENT)
    yield c
    await c.aclose()


async def requests_in(client: OrderClient, keys: Keys) -> list[Request]:
    return [decode_request(f[b"data"]) for _, f in await client.redis.xrange(keys.pending)]


Action_ = Callable[[OrderClient, str | None], Awaitable[Submitted]]
ACTIONS: dict[str, Action_] = {
    "place": lambda c, a: c.place("BTCUSDT", "buy", "limit", "0.010", price="50000",
                                  account=a),
    "cancel": lambda c, a: c.cancel("c-1", account=a),
    "amend": lambda c, a: c.amend("c-1", price="101", account=a),
    "cancel_all": lambda c, a: c.cancel_all(symbol="BTCUSDT", account=a),
    "publish": lambda c, a: c.publish(Request(action=Action.CANCEL, client_order_id="c-2",
                                              account=a)),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_each_action_goes_to_the_partition_of_its_account(
    client: OrderClient, action: str
) -> None:
    to_alpha = await ACTIONS[action](client, "alpha")
    to_default = await ACTIONS[action](client, None)  # no account: the default account's
    assert to_alpha.prefix == "{orders-1}" and to_default.prefix == "{orders-0}"
    ((alpha_id, _),) = await client.redis.xrange(P1.pending)
    ((default_id, _),) = await client.redis.xrange(P0.pending)
    assert (alpha_id.decode(), default_id.decode()) == (to_alpha.request_id,
                                                        to_default.request_id)
    assert [r.account for r in await requests_in(client, P1)] == ["alpha"]
    assert [r.account for r in await requests_in(client, P0)] == [None]
    assert not await client.redis.exists("orders:pending")


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_an_account_in_no_partition_is_refused_before_anything_is_written(
    client: OrderClient, action: str
) -> None:
    with pytest.raises(ContractError, match="account `beta` is in no partition") as info:
        await ACTIONS[action](client, "beta")
    assert info.value.field == "account"
    assert await client.redis.keys("*") == []


async def test_without_a_default_account_a_request_naming_none_is_refused() -> None:
    only_alpha = Deployment("orders", Partitions(count=2, accounts={"alpha": 1}))
    async with OrderClient(FakeAsyncRedis(), only_alpha) as client:
        with pytest.raises(ContractError, match="account `default` is in no partition"):
            await client.cancel("c-1")
        assert await client.redis.keys("*") == []


async def test_submitted_still_unpacks_and_compares_as_before_by_its_first_two_fields(
    client: OrderClient,
) -> None:
    sub = await client.cancel("c-1", account="alpha")
    assert sub[:2] == (sub.request_id, "c-1")
    assert Submitted("1-1", "c").prefix is None  # made by hand, as callers do


def result(request_id: str, status: ResultStatus, cid: str) -> Result:
    return Result(request_id=request_id, action=Action.PLACE, status=status,
                  client_order_id=cid)


async def answer(client: OrderClient, stream: str, entry_id: str, r: Result) -> None:
    await client.redis.xadd(stream, {"data": encode(r), "request_id": r.request_id},
                            id=entry_id)


async def test_the_same_request_id_in_two_partitions_gets_each_its_own_result(
    client: OrderClient,
) -> None:
    # Each partition's stream hands out its own ids: both can be 1000-0.
    in_p0, in_p1 = Submitted("1000-0", "a-1", P0.prefix), Submitted("1000-0", "b-1", P1.prefix)
    r0 = result("1000-0", ResultStatus.FILLED, "a-1")
    r1 = result("1000-0", ResultStatus.CANCELLED, "b-1")
    await answer(client, P0.completed, "1001-0", r0)
    await answer(client, P1.completed, "1001-0", r1)
    assert await client.wait_results([in_p0, in_p1], timeout=2) == {in_p0: r0, in_p1: r1}
    assert await client.wait_result(in_p1, timeout=2) == r1


async def test_each_partition_is_read_on_its_own_and_both_result_streams_are_read(
    client: OrderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One XREAD per partition: on a Redis Cluster one across partitions is CROSSSLOT."""
    a = await client.place("BTCUSDT", "buy", "market", "1", account="alpha")
    d = await client.place("BTCUSDT", "buy", "market", "1")
    ra = result(a.request_id, ResultStatus.FILLED, str(a.client_order_id))
    rd = result(d.request_id, ResultStatus.FAILED, str(d.client_order_id))
    streams: list[set[str]] = []
    xread = client.redis.xread

    async def spy(cursors: dict[str, str], **kwargs: Any) -> Any:
        streams.append(set(cursors))
        return await xread(cursors, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client.redis, "xread", spy)
    waiting = asyncio.ensure_future(client.wait_results([a, d], timeout=5))
    await asyncio.sleep(0.05)
    await answer(client, P1.completed, "*", ra)
    await answer(client, P0.failed, "*", rd)
    assert await waiting == {a: ra, d: rd}
    assert {P0.completed, P0.failed} in streams and {P1.completed, P1.failed} in streams
    assert all(read in ({P0.completed, P0.failed}, {P1.completed, P1.failed})
               for read in streams)


async def test_a_timeout_counts_the_missing_results_over_every_partition(
    client: OrderClient,
) -> None:
    a = await client.cancel("c-1", account="alpha")
    d = await client.cancel("c-2")
    await answer(client, P1.completed, "*", result(a.request_id, ResultStatus.CANCELLED, "c-1"))
    with pytest.raises(TimeoutError, match=r"^1 of 2 results not seen in 0.3s$"):
        await client.wait_results([a, d], timeout=0.3)


async def test_a_bare_request_id_is_refused_when_partitioned(client: OrderClient) -> None:
    sub = await client.cancel("c-1", account="alpha")
    with pytest.raises(ValueError, match=r"ambiguous.*pass the Submitted"):
        await client.wait_result(sub.request_id, timeout=1)
    with pytest.raises(ValueError, match=r"ambiguous.*pass the Submitted"):
        await client.wait_results([sub.request_id], timeout=1)
    with pytest.raises(ValueError, match="names no partition"):
        await client.wait_result(Submitted(sub.request_id, "c-1"), timeout=1)
    with pytest.raises(ValueError, match=r"went to 'orders'.*not a prefix"):
        await client.wait_result(Submitted(sub.request_id, "c-1", "orders"), timeout=1)


async def test_an_unpartitioned_client_waits_by_id_or_by_submitted() -> None:
    async with OrderClient(FakeAsyncRedis(), "{desk}") as client:
        sub = await client.cancel("c-1", account="anyone")
        assert sub.prefix == "{desk}"
        r = result(sub.request_id, ResultStatus.CANCELLED, "c-1")
        await answer(client, Keys("{desk}").completed, "*", r)
        assert await client.wait_results([sub], timeout=2) == {sub: r}
        assert await client.wait_results([sub.request_id], timeout=2) == {sub.request_id: r}
        by_hand = Submitted(sub.request_id, None)
        assert await client.wait_result(by_hand, timeout=2) == r
        assert client.keys.prefix == "{desk}" == client.keys_for("anyone").prefix


async def test_keys_name_the_partition_and_the_flat_keys_are_refused(
    client: OrderClient,
) -> None:
    with pytest.raises(ValueError, match=r"2 partitions.*keys_for"):
        _ = client.keys
    assert client.keys_for("alpha").pending == "{orders-1}:pending"
    assert client.keys_for(None).pending == "{orders-0}:pending"
    with pytest.raises(ContractError, match="beta"):
        client.keys_for("beta")
    assert "partitions=2" in repr(client)


async def test_order_reads_the_record_in_the_accounts_partition(client: OrderClient) -> None:
    status = OrderStatus(client_order_id="c-1", request_id="1-1", state=OrderState.ACCEPTED,
                         seq=2, spec=OrderSpec(account="alpha", symbol="BTCUSDT",
                                               side=Side.BUY, type=OrderType.MARKET,
                                               quantity=parse_decimal("1")))
    await client.redis.hset(P1.order("c-1"), "record", encode(status))
    assert await client.order("c-1", "alpha") == status
    assert await client.order("c-1") is None  # the default account's partition has none
    with pytest.raises(ContractError, match="beta"):
        await client.order("c-1", "beta")


async def test_follow_takes_one_partition(client: OrderClient) -> None:
    with pytest.raises(ValueError, match="2 partitions: name one"):
        await anext(client.follow())
    with pytest.raises(ValueError, match="numbered 0 to 1"):
        await anext(client.follow(partition=2))
    with pytest.raises(ValueError, match="not both"):
        await anext(client.follow(account="alpha", partition=1))
    r = result("1-1", ResultStatus.FILLED, "c-1")
    await answer(client, P0.completed, "*", result("1-1", ResultStatus.FAILED, "c-0"))
    await answer(client, P1.completed, "*", r)
    for by_account in (client.follow(since="0-0", account="alpha"),
                       client.follow(since="0-0", partition=1)):
        assert await anext(by_account) == (P1.completed, r)


def test_a_deployment_made_by_hand_is_checked() -> None:
    with pytest.raises(ValueError, match="no braces"):
        OrderClient(FakeAsyncRedis(), Deployment("{orders}", Partitions(count=2)))
    with pytest.raises(ValueError, match="numbered 0 to 1"):
        OrderClient(FakeAsyncRedis(), Deployment("orders", Partitions(count=2,
                                                                      accounts={"a": 3})))


def test_on_a_cluster_partitions_are_hash_tagged_by_construction() -> None:
    # No braces in a partitioned prefix, yet each partition's keys share one slot.
    OrderClient.from_url("redis://127.0.0.1:1", DEPLOYMENT, cluster=True)
    with pytest.raises(ValueError, match="no hash tag"):
        OrderClient.from_url("redis://127.0.0.1:1", Deployment("orders"), cluster=True)
