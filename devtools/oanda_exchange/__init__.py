"""A local OANDA-v20-compatible venue for tests and demos (``python -m
devtools.oanda_exchange --port N``). ``venue`` holds the instruments, prices, orders and
transactions and the matching model, ``server`` the v20 REST API and its fault switches."""

from .server import Fault, OandaExchangeServer, Received
from .venue import Rejected, Venue

__all__ = ["Fault", "OandaExchangeServer", "Received", "Rejected", "Venue"]
