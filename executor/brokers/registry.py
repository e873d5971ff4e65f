"""Which adapter serves an account: the account config type names it. Every adapter is
wrapped in the send-token guard (sending.py), that in its account's circuit breaker
(circuit.py), and that in the rate limits the account shares with the other workers
(limited.py): the breaker counts only real broker calls, never a call our own limiter held
back, and a send token is taken only once the call is about to go."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from producer.keys import Keys

from ..infra.metrics import Metrics
from ..safety.breaker import Breaker
from ..safety.limits import AccountLimits, Limiter, plan_for
from .alpaca.config import AlpacaAccount
from .base import Broker
from .binance.config import BinanceAccount
from .circuit import CircuitBroker
from .limited import limited
from .oanda.config import OandaAccount
from .paper.config import PaperAccount
from .paper.exchange import PaperBroker
from .sending import SendGuard, TakeTokens

if TYPE_CHECKING:
    from ..infra.metrics import Metrics

AccountConfig = PaperAccount | BinanceAccount | OandaAccount | AlpacaAccount


def broker_type(config: AccountConfig) -> str:
    """The account's ``broker`` tag (``paper``, ``binance``, ...)."""
    return str(type(config).__struct_config__.tag)


def create_broker(account: str, config: AccountConfig, redis: aioredis.Redis, keys: Keys,
                  *, limits: AccountLimits | None = None, breaker: Breaker | None = None,
                  metrics: Metrics | None = None,
                  visibility_timeout_ms: int | None = None,
                  take_tokens: TakeTokens | None = None,
                  tokens_at_door: bool = False) -> Broker:
    adapter: Broker
    if isinstance(config, PaperAccount):
        adapter = PaperBroker(account, config, redis, keys)
    elif isinstance(config, BinanceAccount):
        # Imported here: python-binance is loaded only by workers that trade on Binance.
        from .binance.broker import BinanceBroker
        adapter = BinanceBroker(account, config, redis, keys, metrics)
    elif isinstance(config, AlpacaAccount):
        from .alpaca.broker import AlpacaBroker
        adapter = AlpacaBroker(account, config, redis, keys, metrics)
    elif isinstance(config, OandaAccount):
        # Imported here, like Binance's: aiohttp's client is loaded only where it is used.
        from .oanda.broker import OandaBroker
        adapter = OandaBroker(account, config, redis, keys, metrics)
    else:
        raise ValueError(f"account {account}: unknown broker {type(config).__name__}")
    if take_tokens is not None:
        # Innermost: the token is taken right before the call, after any wait of the
        # limiter or the breaker (brokers/sending.py).
        adapter = SendGuard(adapter, take_tokens, at_door=tokens_at_door)
    if breaker is not None:
        adapter = CircuitBroker(adapter, breaker, metrics=metrics)
    plan = plan_for(limits, broker_type(config), visibility_timeout_ms=visibility_timeout_ms)
    if (isinstance(config, PaperAccount) and not plan.windows and plan.rate is None
            and plan.max_in_flight == 0):
        # Nothing to count, and the paper exchange never answers 429 or 418, so no pause or
        # ban can ever be shared: the limiter would only ask Redis, at every call, about
        # one. Limits configured for a paper account put it back.
        return adapter
    return limited(adapter, Limiter(redis, keys, account, plan), metrics=metrics)
