"""Broker-neutral rules of native contingent lists: an entry sent with its exit as one of the
broker's own order lists (Binance's OTO / OTOCO, binance/oto.py; Alpaca's bracket / oto,
alpaca/bracket.py; OANDA's orders on fill, oanda/on_fill.py), the broker then holding the
exit from the entry's fill.

The workers still publish the exit ``<entry>-x1`` (model/lists.py) once the entry has
ended. When it reaches the adapter, what the broker holds as the native exit is looked up
first and ``adoption`` says what becomes of it: one exit per position, never two. Pure: no
I/O, and no adapter imported (the adapters import this).
"""

from __future__ import annotations

import enum
from decimal import Decimal

from producer.contract import OrderSpec

from ..model.lists import exit_id


class Adoption(enum.Enum):
    """What becomes of the native exit when an exit of the list arrives."""

    PLACE = "place"      # none is working or traded: the workers' exit is placed as usual
    ADOPT = "adopt"      # it is this exit: taken as it, never sent a second time
    REPLACE = "replace"  # untraded, but not this exit: cancelled first, then ours placed
    REFUSE = "refuse"    # traded, and not this exit: nothing placed (never two exits)


def first_exit_id(entry_id: str) -> str:
    """The client id of the entry's first exit: the exit a native list stands for."""
    return exit_id(entry_id, 1)


def entry_of(order: OrderSpec) -> str | None:
    """The entry id when ``order`` is an exit of a contingent list (whose entry's native
    list may hold an exit already), else None."""
    metadata = order.metadata or {}
    entry = metadata.get("list_id")
    if not order.reduce_only or not isinstance(metadata.get("exit"), int) \
            or not isinstance(entry, str):
        return None
    return entry


def adoption(client_order_id: str, entry_id: str, quantity: Decimal | None, *,
             held: Decimal, traded: bool, ended: bool) -> Adoption:
    """What the native exit of ``entry_id`` (holding ``held``; ``traded``: any of it has
    filled; ``ended``: all its orders are final) becomes when the exit ``client_order_id``
    of ``quantity`` arrives.

    - ended untraded (never placed, or cancelled with its entry): the exit is placed;
    - this is the first exit, of the quantity held, or the native one has traded (it must
      never be cancelled into a second exit): adopted as it is;
    - traded, and this is a later exit: refused;
    - else (capped by the position, or a later exit): the native one is replaced."""
    if not traded and ended:
        return Adoption.PLACE
    if client_order_id == first_exit_id(entry_id) and (traded or held == quantity):
        return Adoption.ADOPT
    return Adoption.REFUSE if traded else Adoption.REPLACE
