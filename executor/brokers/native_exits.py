"""What an adapter that sends contingent lists natively (the entry with its exits, placed
by the broker on the entry's fill: binance/oto.py, alpaca/bracket.py, oanda/on_fill.py)
shares with the emulator in front of it: which orders are exits of a list, and the
adapter's hook that takes such an exit as what the broker already holds
(``adopt_native_exit``), asked before the emulator holds one (an exit type the adapter
cannot send itself, OANDA's ``oco``), so that the emulator never holds a copy of an exit
the broker holds. Broker-neutral: no broker package is imported here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from producer.contract import OrderSpec

from .base import Broker, BrokerOrder
from .native_lists import entry_of as entry_of  # which orders are exits of a list
from .wrapper import unwrap

if TYPE_CHECKING:
    from ..infra.store import Store

log = logging.getLogger(__name__)

Adopt = Callable[[str, OrderSpec], Awaitable[BrokerOrder | None]]


def adopter(broker: Broker) -> Adopt | None:
    """The adapter's ``adopt_native_exit`` (behind its guards), None when it has none."""
    own: Adopt | None = getattr(unwrap(broker), "adopt_native_exit", None)
    return own


async def sent_natively(native_lists: bool, store: Store | None, entry: str,
                        who: str) -> bool:
    """Whether the entry may have been sent with its exits natively: the account sends
    them (``native_lists``), or the entry's record says it was (sent before the setting
    was turned off). Without a readable record: yes (look, rather than risk a second
    exit)."""
    if native_lists or store is None:
        return True
    try:
        (record,) = await store.load_orders([entry])
    except Exception as exc:  # Redis down
        log.info("%s: record of %s not readable (%s)", who, entry, exc)
        return True
    return record is None or record.native_exits
