"""The Binance spot broker: ``config`` (the account settings), ``filters`` (exchangeInfo
rules, checked before sending), ``wire`` (parameters, reports and errors), ``reconcile``
(open orders at start), ``broker`` (the ``Broker`` over python-binance's AsyncClient,
imported only where used: python-binance is slow to import)."""

from .config import BinanceAccount

__all__ = ["BinanceAccount"]
