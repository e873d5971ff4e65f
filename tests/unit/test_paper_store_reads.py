"""The paper exchange's reference price read survives the pooled connections a Redis
restart closed (each fails its next command once), and still fails when Redis is down."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from executor.brokers.paper.store import READ_ATTEMPTS, ExchangeStore
from producer.keys import Keys


class Flaky:
    """A client whose next ``fails`` HGETs raise as a closed connection does."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0

    def register_script(self, _: str) -> object:
        return object()

    async def hget(self, _key: str, _field: str) -> Any:
        self.calls += 1
        if self.fails:
            self.fails -= 1
            raise RedisConnectionError("Connection closed by server.")
        return b"50123.5"


async def test_a_closed_connection_is_read_through() -> None:
    redis = Flaky(READ_ATTEMPTS - 1)
    store = ExchangeStore(redis, Keys(), "default")  # type: ignore[arg-type]
    assert await store.override("BTCUSDT") == Decimal("50123.5")
    assert redis.calls == READ_ATTEMPTS


async def test_a_redis_that_stays_down_still_fails() -> None:
    store = ExchangeStore(Flaky(READ_ATTEMPTS), Keys(), "default")  # type: ignore[arg-type]
    with pytest.raises(RedisConnectionError):
        await store.override("BTCUSDT")
