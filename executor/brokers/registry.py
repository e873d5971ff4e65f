"""Which adapter serves an account: the account config type names it."""

from __future__ import annotations

import redis.asyncio as aioredis

from producer.keys import Keys

from .base import Broker
from .paper.config import PaperAccount
from .paper.exchange import PaperBroker

AccountConfig = PaperAccount


def create_broker(account: str, config: AccountConfig, redis: aioredis.Redis,
                  keys: Keys) -> Broker:
    if isinstance(config, PaperAccount):
        return PaperBroker(account, config, redis, keys)
    raise ValueError(f"account {account}: unknown broker {type(config).__name__}")
