"""The paper broker: a simulated exchange whose state lives in Redis, shared by every worker.

``config`` (settings), ``pricing`` (reference prices), ``matching`` (the matching model),
``records`` (the stored order), ``store`` (keys and Lua scripts), ``exchange`` (the
``Broker`` implementation).
"""

from .config import PaperAccount, SymbolConfig
from .exchange import PaperBroker

__all__ = ["PaperAccount", "PaperBroker", "SymbolConfig"]
