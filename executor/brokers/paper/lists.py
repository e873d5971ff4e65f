"""Native contingent lists at the paper exchange (``native_lists``): which entries it takes
with their exit, and the exit it places the moment such an entry has fully filled.

As at Binance (OTO / OTOCO, binance/oto.py) and Alpaca (bracket / oto): an entry goes
native only when its exit waits for its full fill (``oto_trigger`` ``full``; ``partial``
wants an exit per part: emulated), it is not ``reduce_only``, not an iceberg, not an oco,
not an algorithm's parent, and its exit passes the exchange's own check as the workers'
exit would (an account that leaves the conditional types to the emulator holds no native
``oco`` or ``stop``). Anything else keeps the workers' exits.

The exit is exactly the one the workers publish once the entry has ended
(``model.lists.exit_request`` for the whole quantity, exit 1) under its client id
``<entry>-x1``. The entry's record holds it until the entry's full fill places it, in the
same stored change as that fill (exchange.py; submit.lua / update.lua), so a crash never
leaves a filled entry without its exit, nor places it twice. An entry that ends otherwise
(cancelled, expired, after a part fill or none) places nothing: the workers' exit is
then placed for what it filled, as at any broker (Binance's OTO_PHASE_ONE_EXPIRED).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from producer.contract import ContractError, OrderSpec, OrderType, OtoTrigger

from ...model.lists import exit_request
from ...model.order import spec_from_request
from ..base import BrokerStatus
from ..native_lists import first_exit_id
from . import matching
from .config import PaperAccount, SymbolConfig
from .matching import Book
from .records import PaperOrder


def native_exit(entry_id: str, order: OrderSpec, config: PaperAccount,
                check: Callable[[OrderSpec], object]) -> OrderSpec | None:
    """The exit the exchange would hold for the entry ``order`` (``entry_id``), or None
    when it goes the workers' way (see the module's docstring). ``check``: the exchange's
    own check of an order, which the exit must pass."""
    if (not config.native_lists or order.oto_trigger is not OtoTrigger.FULL
            or (order.take_profit is None and order.stop_loss is None)
            or order.reduce_only or order.display_quantity is not None
            or order.algo is not None or order.type is OrderType.OCO
            or order.quantity is None):
        return None
    try:
        exit_ = spec_from_request(exit_request(entry_id, order, order.quantity, 1),
                                  order.account)
        check(exit_)
    except (ContractError, ArithmeticError, ValueError):
        # Levels the exchange would refuse as an order of their own: the workers' exit
        # meets that refusal where it is told (the lists watcher), not the entry here.
        return None
    return exit_


def placed_exit(before: PaperOrder | None, after: PaperOrder, broker_order_id: str,
                book: Book, sym: SymbolConfig, config: PaperAccount,
                now: int) -> PaperOrder | None:
    """The exit the exchange places with ``after``, an entry's new state: what a new
    order of it makes at ``book``, when this state is the entry's full fill (``before``:
    its stored state, None at submission), once; else None. ``ContractError`` when the
    stored exit is no order the exchange takes."""
    if after.exit is None or after.status is not BrokerStatus.FILLED:
        return None
    if before is not None and before.status is BrokerStatus.FILLED:
        return None
    matching.check(after.exit, config)  # as stored: a record's exit is checked again
    placed = matching.submit(first_exit_id(after.client_order_id), broker_order_id,
                             after.exit, book, sym, config, now, after.submission)
    placed.exit_of = after.client_order_id
    return placed
