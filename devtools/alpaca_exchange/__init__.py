"""A local server speaking Alpaca's trading API v2, for tests and demos (``python -m
devtools.alpaca_exchange --port N``). ``engine`` holds the orders and the matching model,
``server`` the REST API (auth headers, rate-limit headers, Alpaca's error bodies, faults)."""

from .engine import AlpacaError, Engine
from .server import AlpacaExchangeServer, Fault, Received

__all__ = ["AlpacaError", "AlpacaExchangeServer", "Engine", "Fault", "Received"]
