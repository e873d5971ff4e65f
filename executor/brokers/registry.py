"""Which adapter serves an account: the account config type names it. Every adapter is
wrapped in the rate limits its account shares with the other workers (limited.py)."""

from __future__ import annotations

import redis.asyncio as aioredis

from producer.keys import Keys

from ..limits import AccountLimits, Limiter, plan_for
from ..metrics import Metrics
from .base import Broker
from .limited import limited
from .paper.config import PaperAccount
from .paper.exchange import PaperBroker

AccountConfig = PaperAccount


def broker_type(config: AccountConfig) -> str:
    """The account's ``broker`` tag (``paper``, ``binance``, ...)."""
    return str(type(config).__struct_config__.tag)


def create_broker(account: str, config: AccountConfig, redis: aioredis.Redis, keys: Keys,
                  *, limits: AccountLimits | None = None,
                  metrics: Metrics | None = None) -> Broker:
    adapter: Broker
    if isinstance(config, PaperAccount):
        adapter = PaperBroker(account, config, redis, keys)
    else:
        raise ValueError(f"account {account}: unknown broker {type(config).__name__}")
    limiter = Limiter(redis, keys, account, plan_for(limits, broker_type(config)))
    return limited(adapter, limiter, metrics=metrics)
