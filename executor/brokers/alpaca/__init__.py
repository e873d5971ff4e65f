"""The Alpaca trading API v2 broker: ``config`` (the account settings), ``wire`` (order
JSON, reports, client ids and errors; pure), ``broker`` (the ``Broker`` over our own thin
aiohttp client, imported only where used)."""

from .config import AlpacaAccount

__all__ = ["AlpacaAccount"]
