"""Commissions at Binance through whole workers and the local exchange: a buy whose fee is
charged in the base asset (Binance's default without BNB) books the net quantity, so a
kill --flatten sells what the account holds; a fee in BNB is kept per asset, never in a
quote-asset amount; replay folds the log the way the projector did."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import redis.asyncio as aioredis

from devtools.binance_exchange import BinanceExchangeServer
from executor.infra.streams import positions_caught_up
from executor.model.positions import Position, decode_position, position_key
from executor.operations.control import kill
from executor.worker import Worker
from producer.client import OrderClient
from producer.contract import ResultStatus
from producer.keys import Keys
from tests.fakes.binance import exchange

from .conftest import running
from .test_binance_worker import binance_settings
from .test_operator_commands import cli_json

__all__ = ["exchange"]  # fixture

K = Keys()
D = Decimal


@contextlib.asynccontextmanager
async def worker_on(redis_url: str, server: BinanceExchangeServer) -> AsyncIterator[Worker]:
    async with running(binance_settings(redis_url, server)) as worker:
        yield worker


async def position(r: aioredis.Redis) -> Position:
    assert await positions_caught_up(r, K, 10)
    raw = await r.hget(K.positions, position_key("default", "BTCUSDT"))
    assert raw is not None
    return decode_position(raw)


async def test_a_buy_charged_in_the_base_asset_books_what_is_held_and_flatten_sells_it(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    exchange.exchange.balances["BTC"] = [D(0), D(0)]  # nothing held before
    async with worker_on(redis_url, exchange):
        sub = await client.place("BTCUSDT", "buy", "market", "1")
        bought = await client.wait_result(sub.request_id, 10)
        assert bought.status is ResultStatus.FILLED, bought
        # The order filled 1 BTC (its quantity); the fee came out of it.
        assert bought.filled_quantity == D("1")
        assert (bought.commission, bought.commission_asset) == (D("0.001"), "BTC")
        assert bought.commissions == {"BTC": D("0.001")}
        held = await position(redis_client)
        assert held.quantity == D("0.999") == exchange.exchange.balances["BTC"][0]
        assert held.commission == D("50")  # 0.001 BTC at the fill's 50000
        report = await kill(redis_client, K, client, account="default", flatten=True,
                            wait_s=10)
        [close] = report.close_results
        # Selling the gross 1 BTC was refused for insufficient balance: nothing closed.
        assert close.status is ResultStatus.FILLED, close
        assert close.filled_quantity == D("0.999") and report.ok
        assert exchange.exchange.balances["BTC"][0] == 0
        assert (await position(redis_client)).quantity == 0
    code, replayed = await cli_json(redis_url, "replay")
    assert (code, replayed["differences"]) == (0, [])


async def test_fees_in_bnb_are_kept_per_asset_and_out_of_the_quote_amounts(
        redis_url: str, redis_client: aioredis.Redis, exchange: BinanceExchangeServer,
        client: OrderClient) -> None:
    exchange.exchange.fee_asset = "BNB"  # the account pays its fees in BNB
    exchange.exchange.balances["BNB"] = [D(10), D(0)]
    async with worker_on(redis_url, exchange):
        results = []
        for side, quantity in (("buy", "1"), ("sell", "0.4")):
            sub = await client.place("BTCUSDT", side, "market", quantity)
            results.append(await client.wait_result(sub.request_id, 10))
        buy, sell = results
        # 50000 USDT x 0.1% at 600 USDT a BNB; 20000 x 0.1% / 600.
        assert (buy.commission, buy.commission_asset) == (D("0.08333333"), "BNB")
        assert sell.commissions == {"BNB": D("0.03333333")}
        held = await position(redis_client)
        assert held.quantity == D("0.6")  # the fees took no BTC
        assert held.commission == 0  # nor any USDT
        assert held.other_commissions == {"BNB": D("0.11666666")}
        assert held.realized_pnl == 0
    code, replayed = await cli_json(redis_url, "replay")
    assert (code, replayed["differences"]) == (0, [])
