"""Our positions as an adapter's reconciliation reads them, to compare with what the
broker says the account holds (Binance's balances, OANDA's open positions): the net
quantity per symbol of one account, from the positions projection, once the projection has
folded the events written so far."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from producer.replies import text

from ..infra.batch_read import BatchReader, account_positions
from ..infra.streams import positions_caught_up
from ..model.positions import decode_position, split_key

if TYPE_CHECKING:
    from ..infra.store import Store

log = logging.getLogger(__name__)

SETTLE_S = 3.0  # the longest wait for the positions projection before they are read


async def folded(store: Store, what: str, timeout_s: float = SETTLE_S) -> None:
    """Wait (at most ``timeout_s``) until the positions projection has folded every event
    written so far; at start no projector may be running yet, so it does not wait longer.
    ``what``: "<broker> <account>", for the log."""
    if not await positions_caught_up(store.redis, store.keys, timeout_s):
        log.info("%s: positions not caught up with the events after %.0f s; compared with "
                 "them as they are", what, timeout_s)


async def net_positions(store: Store, account: str) -> dict[str, Decimal]:
    """Our net position per symbol of ``account`` (long > 0, short < 0)."""
    raw = await account_positions(BatchReader(store.redis), store.keys, account)
    out: dict[str, Decimal] = {}
    for key, value in raw.items():
        owner, symbol = split_key(text(key))
        if owner == account:
            out[symbol] = decode_position(value).quantity
    return out
