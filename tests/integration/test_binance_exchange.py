"""The local Binance exchange itself, driven by python-binance's AsyncClient: key and
signature checks with Binance's codes and statuses, weight headers on every reply, order
counts on accepted orders only, the OCO list endpoint and cancel-all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from devtools.binance_exchange import BinanceExchangeServer
from tests.fakes.binance import KEY, SECRET, exchange

__all__ = ["exchange"]  # fixture


async def client_for(server: BinanceExchangeServer, key: str = KEY,
                     secret: str = SECRET) -> AsyncClient:
    cls = type("Local", (AsyncClient,), {"API_URL": server.url + "/api"})
    client: AsyncClient = await cls.create(key, secret)
    return client


@pytest.fixture
async def bn(exchange: BinanceExchangeServer) -> AsyncIterator[AsyncClient]:
    client = await client_for(exchange)
    yield client
    await client.close_connection()


async def api_error(call: Any) -> BinanceAPIException:
    with pytest.raises(BinanceAPIException) as caught:
        await call
    return caught.value


async def test_unknown_key_bad_signature_and_missing_key(exchange: BinanceExchangeServer) -> None:
    wrong_key = await client_for(exchange, key="someone-else")
    err = await api_error(wrong_key.get_account())
    await wrong_key.close_connection()
    assert (err.status_code, err.code) == (401, -2015)
    wrong_secret = await client_for(exchange, secret="not-it")
    err = await api_error(wrong_secret.get_account())
    await wrong_secret.close_connection()
    assert (err.status_code, err.code) == (400, -1022)
    async with aiohttp.ClientSession() as http, http.get(
            f"{exchange.url}/api/v3/account?timestamp=1&signature=00") as reply:
        assert reply.status == 401
        assert await reply.json() == {"code": -2014, "msg": "API-key format invalid."}
        assert reply.headers["X-MBX-USED-WEIGHT-1M"].isdigit()


async def test_timestamps_outside_the_window(exchange: BinanceExchangeServer,
                                             bn: AsyncClient) -> None:
    exchange.exchange.offset_ms = -2_000  # our clock 2 s ahead of the exchange's
    err = await api_error(bn.get_account())
    assert (err.code, err.message) == (-1021, "Timestamp for this request was 1000ms ahead "
                                               "of the server's time.")
    exchange.exchange.offset_ms = 11_000  # behind by more than python-binance's 10 s window
    err = await api_error(bn.get_account())
    assert "outside of the recvWindow" in err.message


async def test_weight_on_every_reply_and_order_counts_on_accepted_orders(
        exchange: BinanceExchangeServer, bn: AsyncClient) -> None:
    before = int((await bn.get_exchange_info()) and bn.response.headers["X-MBX-USED-WEIGHT-1M"])
    await bn.get_open_orders(symbol="BTCUSDT")
    assert int(bn.response.headers["X-MBX-USED-WEIGHT-1M"]) == before + 6
    await bn.get_open_orders()
    assert int(bn.response.headers["X-MBX-USED-WEIGHT-1M"]) == before + 86
    await bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
    assert bn.response.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert bn.response.headers["X-MBX-ORDER-COUNT-1D"] == "1"
    err = await api_error(bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="0.0000001"))
    assert err.code == -1013
    assert "X-MBX-ORDER-COUNT-10S" not in err.response.headers
    assert "X-MBX-USED-WEIGHT-1M" in err.response.headers


async def test_the_order_count_limit(exchange: BinanceExchangeServer, bn: AsyncClient) -> None:
    exchange.orders_10s_limit = 2
    for _ in range(2):
        await bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
    err = await api_error(bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="0.001"))
    assert (err.status_code, err.code) == (429, -1015)
    assert 1 <= int(err.response.headers["Retry-After"]) <= 10


async def test_bad_numbers_and_ids_are_refused_as_binance_does(bn: AsyncClient) -> None:
    err = await api_error(bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="1e-05"))
    assert err.code == -1100 and "'quantity'" in err.message
    err = await api_error(bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                          quantity="0.001", newClientOrderId="a" * 37))
    assert err.code == -1100 and "newClientOrderId" in err.message
    err = await api_error(bn.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                          quantity="0.001", price="49000"))
    assert err.code == -1102 and "timeInForce" in err.message


async def test_quote_order_qty_buys_what_the_quote_amount_pays_for(bn: AsyncClient) -> None:
    reply = await bn.create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                  quoteOrderQty="100")
    assert reply["status"] == "FILLED"
    assert Decimal(reply["executedQty"]) == Decimal("0.002")
    assert Decimal(reply["origQuoteOrderQty"]) == Decimal(100)


async def test_oco_list_and_cancel_all(exchange: BinanceExchangeServer, bn: AsyncClient) -> None:
    reply = await bn.create_oco_order(
        symbol="BTCUSDT", side="SELL", quantity="0.01", aboveType="LIMIT_MAKER",
        abovePrice="55000", belowType="STOP_LOSS_LIMIT", belowPrice="44900",
        belowStopPrice="45000", belowTimeInForce="GTC", aboveClientOrderId="oco-up",
        belowClientOrderId="oco-down", listClientOrderId="oco-1")
    assert (reply["contingencyType"], reply["listClientOrderId"]) == ("OCO", "oco-1")
    assert [o["clientOrderId"] for o in reply["orders"]] == ["oco-up", "oco-down"]
    exchange.set_price("BTCUSDT", "55000")  # the upper leg fills, the lower one expires
    up = await bn.get_order(symbol="BTCUSDT", origClientOrderId="oco-up")
    down = await bn.get_order(symbol="BTCUSDT", origClientOrderId="oco-down")
    assert (up["status"], down["status"]) == ("FILLED", "EXPIRED")
    exchange.set_price("BTCUSDT", "50000")
    err = await api_error(bn.create_oco_order(
        symbol="BTCUSDT", side="SELL", quantity="0.01", aboveType="LIMIT_MAKER",
        abovePrice="49000", belowType="STOP_LOSS", belowStopPrice="45000"))
    assert err.code == -2010 and "immediately match" in err.message

    for price in ("40000", "41000"):
        await bn.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                              quantity="0.01", price=price)
    cancelled = await bn.cancel_all_open_orders(symbol="BTCUSDT")
    assert [o["status"] for o in cancelled] == ["CANCELED", "CANCELED"]
    assert await bn.get_open_orders(symbol="BTCUSDT") == []
    err = await api_error(bn.cancel_all_open_orders(symbol="BTCUSDT"))
    assert err.code == -2011


async def test_account_and_trades(exchange: BinanceExchangeServer, bn: AsyncClient) -> None:
    reply = await bn.create_order(symbol="ETHUSDT", side="SELL", type="MARKET",
                                  quantity="1", newClientOrderId="sell-1")
    trades = await bn.get_my_trades(symbol="ETHUSDT", orderId=reply["orderId"])
    assert [(t["price"], t["qty"], t["commissionAsset"]) for t in trades] == [
        ("3000.00000000", "1.00000000", "USDT")]
    balances = {b["asset"]: b for b in (await bn.get_account())["balances"]}
    assert balances["ETH"]["free"] == "999.00000000"
    assert balances["USDT"]["free"] == "1002997.00000000"  # 3000 less the 0.1% taker fee
