"""Which adapter serves an account: the account config type names it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from producer.keys import Keys

from .base import Broker
from .binance.config import BinanceAccount
from .paper.config import PaperAccount
from .paper.exchange import PaperBroker

if TYPE_CHECKING:
    from ..metrics import Metrics

AccountConfig = PaperAccount | BinanceAccount


def create_broker(account: str, config: AccountConfig, redis: aioredis.Redis,
                  keys: Keys, metrics: Metrics | None = None) -> Broker:
    if isinstance(config, PaperAccount):
        return PaperBroker(account, config, redis, keys)
    if isinstance(config, BinanceAccount):
        # Imported here: python-binance is loaded only by workers that trade on Binance.
        from .binance.broker import BinanceBroker
        return BinanceBroker(account, config, redis, keys, metrics)
    raise ValueError(f"account {account}: unknown broker {type(config).__name__}")
