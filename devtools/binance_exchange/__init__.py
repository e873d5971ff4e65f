"""A local Binance-Spot-compatible exchange for tests and demos (``python -m
devtools.binance_exchange --port N``). ``engine`` holds the books and the matching model,
``klines`` the market's klines, ``server`` the REST + WebSocket API, ``signing`` Binance's
HMAC rules, ``symbols`` the listings and their filters."""

from .engine import ApiError, Exchange
from .server import BinanceExchangeServer, Fault, Received

__all__ = ["ApiError", "BinanceExchangeServer", "Exchange", "Fault", "Received"]
