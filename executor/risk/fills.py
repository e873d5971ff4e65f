"""What a page of order events does to the pre-trade risk state, computed by the positions
projector beside the positions and written in the same script (lua/positions.lua). Pure.

- A fill shrinks its order's reservation by the fill's quantity (gone at zero).
- An order's end (filled, cancelled, rejected, expired, denied) deletes its reservation.
- A fill adds what it realized, net of the commission counted in the position, to the
  realized PnL of its trading day (the day of the fill's time, else of the event's).
- Every account touched gets its version bumped, so a check decided on the old state is
  decided again.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import encode, wire
from producer.keys import Keys

from ..positions import Position
from .book import EXACT, ZERO, Reservation
from .state import day_key, open_key, version_key

Order = tuple[str, str]  # (account, client id)
Day = tuple[str, str]  # (account, YYYYMMDD)


@dataclass(slots=True)
class RiskFold:
    reservations: dict[Order, Reservation | None] = field(default_factory=dict)
    day_pnl: dict[Day, Decimal] = field(default_factory=dict)
    shrunk: set[Order] = field(default_factory=set)
    ended: set[Order] = field(default_factory=set)
    days: set[Day] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)

    def fill(self, account: str, cid: str, quantity: Decimal) -> None:
        self.accounts.add(account)
        held = self.reservations.get((account, cid))
        if held is None:
            return  # an order without a reservation (placed before risk checks existed)
        left = EXACT.subtract(held.quantity, quantity)
        if left <= 0:
            self.end(account, cid)
        else:
            self.reservations[(account, cid)] = msgspec.structs.replace(held,
                                                                        quantity=wire(left))
            self.shrunk.add((account, cid))

    def end(self, account: str, cid: str) -> None:
        self.accounts.add(account)
        self.reservations[(account, cid)] = None
        self.ended.add((account, cid))
        self.shrunk.discard((account, cid))

    def realized(self, account: str, day: str, before: Position, after: Position) -> None:
        """Count what one fill realized, net of the commission it added."""
        with decimal.localcontext(EXACT):
            amount = (after.realized_pnl - before.realized_pnl) - (
                after.commission - before.commission)
            self.day_pnl[(account, day)] = self.day_pnl.get((account, day), ZERO) + amount
        self.days.add((account, day))
        self.accounts.add(account)

    def script_args(self, keys: Keys, first_key: int) -> tuple[list[str], list[Any]]:
        """The extra KEYS (numbered from ``first_key``) and operations of positions.lua."""
        names: list[str] = []
        index: dict[str, int] = {}

        def at(key: str) -> int:
            if key not in index:
                index[key] = first_key + len(names)
                names.append(key)
            return index[key]

        ops: list[Any] = []
        for account, cid in sorted(self.shrunk):
            held = self.reservations[(account, cid)]
            assert held is not None
            ops += ["shrink", at(open_key(keys, account)), cid, encode(held)]
        for account, cid in sorted(self.ended):
            ops += ["drop", at(open_key(keys, account)), cid, ""]
        for account, day in sorted(self.days):
            pnl = self.day_pnl[(account, day)]
            ops += ["day", at(day_key(keys, account, day)), "pnl", format(pnl, "f")]
        for account in sorted(self.accounts):
            ops += ["bump", at(version_key(keys, account)), "", ""]
        return names, ops

