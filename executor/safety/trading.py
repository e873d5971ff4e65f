"""Trading states, shared by every worker through one Redis hash (``Keys.trading``).

A scope is ``global`` or an account name. The effective state of an account is the stricter
of its own and the global one: a global halt stops every account, whatever each says.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

GLOBAL = "global"


class TradingState(enum.StrEnum):
    ACTIVE = "active"  # every order that passes the risk checks may go
    REDUCING = "reducing"  # only orders that reduce a position (and cancels) may go
    HALTED = "halted"  # nothing new goes; cancels still do

    @property
    def code(self) -> int:
        """The metric value: 0 active, 1 reducing, 2 halted (stricter is higher)."""
        return _CODES[self]


_CODES = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def parse(value: bytes | str | None) -> TradingState:
    """A stored state; anything unreadable counts as halted (fail safe), absent as active."""
    if value is None:
        return TradingState.ACTIVE
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return TradingState(text)
    except ValueError:
        return TradingState.HALTED


def stored(states: Mapping[bytes | str, bytes | str], scope: str) -> bytes | str | None:
    """The value of ``scope`` in the hash as read from Redis (None: absent)."""
    return states.get(scope, states.get(scope.encode()))


def effective(states: Mapping[bytes | str, bytes | str], account: str) -> TradingState:
    """The state that applies to ``account``, given the whole hash as read from Redis."""
    own, everyone = parse(stored(states, account)), parse(stored(states, GLOBAL))
    return own if own.code >= everyone.code else everyone
