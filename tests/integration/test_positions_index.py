"""An account's risk checks read its own positions, not every account's: the positions
hash holds them all, and each position the fold writes joins its account's set of fields
(Keys.positions_of), which the batch's first read follows (infra/lua/reads.lua
POSITIONS). Where the sets are not complete (a projector from before them wrote a
position), the whole hash is read, as before, until the next fold page indexes it."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from executor.background.projector import Projector
from executor.infra.batch_read import BatchRead, BatchReader
from executor.model.positions import Position, decode_position, position_key
from executor.safety.risk.state import RiskState
from producer.contract import (
    WireDecimal,
    encode,
)
from producer.keys import Keys

from .conftest import filled

K = Keys()


async def _filled(r: aioredis.Redis, account: str, symbol: str, n: int) -> None:
    await filled(r, f"{account}-{symbol}-{n}", account=account, symbol=symbol,
                 quantity=str(n), price="100")


async def _fold(r: aioredis.Redis) -> None:
    projector = Projector(r, K, "p", quote_asset=lambda a, s: "USDT")
    while await projector.once():
        pass


async def _read(r: aioredis.Redis, account: str) -> dict[bytes, bytes]:
    batch = BatchRead()
    batch.positions(K.positions, K.positions_indexed, K.positions_of(account))
    (got,) = await BatchReader(r).execute(batch)
    assert isinstance(got, dict)
    return got


async def test_the_checks_read_their_account_s_positions_alone_and_all_of_them(
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    for i in range(30):
        await _filled(r, f"acct{i}", "BTCUSDT", 1)
    await _filled(r, "mine", "BTCUSDT", 2)
    await _filled(r, "mine", "ETHUSDT", 3)
    await _fold(r)
    assert await r.hlen(K.positions) == 32
    got = await _read(r, "mine")
    assert set(got) == {b"mine:BTCUSDT", b"mine:ETHUSDT"}
    assert decode_position(got[b"mine:ETHUSDT"]).quantity == WireDecimal("3")
    snap = await RiskState(r, K).snapshot("mine", "x")
    assert sorted((p.symbol, p.quantity) for p in snap.positions) == [
        ("BTCUSDT", WireDecimal("2")), ("ETHUSDT", WireDecimal("3"))]
    # An account with no positions reads none.
    assert await _read(r, "nobody") == {}


async def test_a_position_written_without_its_index_is_read_whole_until_the_fold_heals_it(
        redis_client: aioredis.Redis) -> None:
    """A projector from before the sets writes the hash alone: the sets are then short of
    it, so the checks read the whole hash (filtered to the account, never missing it), and
    the next fold page indexes every field again."""
    r = redis_client
    await _filled(r, "other", "BTCUSDT", 1)
    await _filled(r, "mine", "BTCUSDT", 2)
    await _fold(r)
    old = Position(account="mine", symbol="SOLUSDT", quantity=WireDecimal("5"))
    await r.hset(K.positions, position_key("mine", "SOLUSDT"), encode(old))
    whole = await _read(r, "mine")
    assert set(whole) == {b"other:BTCUSDT", b"mine:BTCUSDT", b"mine:SOLUSDT"}
    snap = await RiskState(r, K).snapshot("mine", "x")
    assert sorted(p.symbol for p in snap.positions) == ["BTCUSDT", "SOLUSDT"]
    # The next fold page (any, even one of another account's fill) indexes it.
    await _filled(r, "other", "ETHUSDT", 1)
    await _fold(r)
    assert set(await _read(r, "mine")) == {b"mine:BTCUSDT", b"mine:SOLUSDT"}
    assert await r.scard(K.positions_indexed) == await r.hlen(K.positions) == 4


async def test_a_wrong_type_in_place_of_the_hash_is_that_read_s_error_alone(
        redis_client: aioredis.Redis) -> None:
    r = redis_client
    await r.set(K.positions, "not a hash")
    batch = BatchRead()
    batch.get("cv")
    batch.positions(K.positions, K.positions_indexed, K.positions_of("mine"))
    got: list[Any] = await BatchReader(r).execute(batch)
    assert got[0] is None
    assert isinstance(got[1], Exception) and "WRONGTYPE" in str(got[1])
