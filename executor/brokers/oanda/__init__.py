"""The OANDA v20 broker: ``config`` (the account settings), ``instruments`` (the
instruments endpoint's precision and size rules, checked before sending), ``wire`` (order
requests, reports and errors), ``broker`` (the ``Broker`` over aiohttp, imported only
where used)."""

from .config import OandaAccount

__all__ = ["OandaAccount"]
