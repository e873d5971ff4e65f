"""The symbols the local exchange lists, with filters shaped like Binance's own
(``exchangeInfo`` of BTCUSDT as of 2026, an older-style ETHUSDT with MIN_NOTIONAL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
               "TAKE_PROFIT_LIMIT"]


class Listing(msgspec.Struct, kw_only=True):
    symbol: str
    base: str
    quote: str
    price: Decimal  # the last price, moved by tests (``Exchange.set_price``)
    filters: list[dict[str, Any]]
    allow_trailing: bool = True  # allowTrailingStop
    iceberg_allowed: bool = True  # icebergAllowed
    oto_allowed: bool = True  # otoAllowed: orderList/oto and /otoco

    def filter(self, name: str) -> dict[str, Any] | None:
        for f in self.filters:
            if f["filterType"] == name:
                return f
        return None

    def info(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "status": "TRADING", "baseAsset": self.base,
            "baseAssetPrecision": 8, "quoteAsset": self.quote, "quotePrecision": 8,
            "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8, "orderTypes": ORDER_TYPES,
            "icebergAllowed": self.iceberg_allowed,
            "ocoAllowed": True, "otoAllowed": self.oto_allowed, "opoAllowed": False,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": self.allow_trailing,
            "cancelReplaceAllowed": True, "amendAllowed": True,
            "pegInstructionsAllowed": False, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False, "filters": self.filters, "permissions": [],
            "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER",
                                                "EXPIRE_BOTH", "DECREMENT"],
        }


def default_listings() -> dict[str, Listing]:
    btc = Listing(symbol="BTCUSDT", base="BTC", quote="USDT", price=Decimal("50000"), filters=[
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
         "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
         "stepSize": "0.00001000"},
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
         "stepSize": "0.00000000"},
        {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
         "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
         "maxTrailingBelowDelta": 2000},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
         "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2",
         "avgPriceMins": 5},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ])
    eth = Listing(symbol="ETHUSDT", base="ETH", quote="USDT", price=Decimal("3000"), filters=[
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
         "maxPrice": "100000.00000000", "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "9000.00000000",
         "stepSize": "0.00010000"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00010000", "maxQty": "1000.00000000",
         "stepSize": "0.00010000"},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "1.2",
         "bidMultiplierDown": "0.8", "askMultiplierUp": "1.2", "askMultiplierDown": "0.8",
         "avgPriceMins": 5},
        {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000", "applyToMarket": True,
         "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 50},
    ])
    return {btc.symbol: btc, eth.symbol: eth}
