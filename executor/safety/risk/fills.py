"""What a page of order events does to the pre-trade risk state, computed by the positions
projector beside the positions and written in the same script (infra/lua/positions.lua). Pure.

- A fill shrinks its order's reservation by the fill's quantity (gone at zero), and adds
  that quantity, at the reservation's price, to the released totals of its symbol and side.
- An order's end (filled, cancelled, rejected, expired, denied) releases what is left of
  its reservation and deletes it.
- A fill adds what it realized, net of the commission counted in the position, to the
  realized PnL of its trading day (the day of the fill's time, else of the event's).
- Every account touched gets its version ``v`` bumped; not the checks' version ``cv``,
  which this page commutes with (safety/risk/state.py).

The script writes only if every reservation it changes is still the one read (``expect``):
the checks may have released one meanwhile, and a reservation is released once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import encode, wire
from producer.keys import Keys

from ...model.positions import Position
from .book import EXACT, ZERO, Reservation
from .state import Page, count_field, day_key, open_key, released, sums_key, version_key

Order = tuple[str, str]  # (account, client id)
Day = tuple[str, str]  # (account, YYYYMMDD)


@dataclass(slots=True)
class RiskFold:
    # As read: the stored JSON and the reservation, None where there is none.
    stored: dict[Order, tuple[bytes, Reservation] | None] = field(default_factory=dict)
    sums: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # account -> as read
    day_pnl: dict[Day, Decimal] = field(default_factory=dict)
    current: dict[Order, Reservation | None] = field(default_factory=dict)
    totals: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # new '-' fields
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    days: set[Day] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)

    def _held(self, account: str, cid: str) -> Reservation | None:
        self.accounts.add(account)
        if (account, cid) in self.current:
            return self.current[(account, cid)]
        stored = self.stored.get((account, cid))
        return None if stored is None else stored[1]

    def _release(self, account: str, held: Reservation, quantity: Decimal) -> None:
        released(self.sums.get(account, {}), held, quantity,
                 self.totals.setdefault(account, {}))

    def fill(self, account: str, cid: str, quantity: Decimal) -> None:
        held = self._held(account, cid)
        if held is None:
            return  # no reservation (the order predates the checks, or it is released)
        taken = min(quantity, held.quantity)
        self._release(account, held, taken)
        left = EXACT.subtract(held.quantity, taken)
        if left <= 0:
            self._drop(account, cid, held)
        else:
            self.current[(account, cid)] = msgspec.structs.replace(held, quantity=wire(left))

    def end(self, account: str, cid: str) -> None:
        held = self._held(account, cid)
        if held is not None:
            self._release(account, held, held.quantity)
            self._drop(account, cid, held)

    def _drop(self, account: str, cid: str, held: Reservation) -> None:
        self.current[(account, cid)] = None
        counts = self.counts.setdefault(account, {})
        name = count_field(held.symbol)
        counts[name] = counts.get(name, 0) - 1

    def realized(self, account: str, day: str, before: Position, after: Position) -> None:
        """Count what one fill realized, net of the commission it added."""
        # Context methods rather than localcontext(): the same exact arithmetic, for less.
        amount = EXACT.subtract(EXACT.subtract(after.realized_pnl, before.realized_pnl),
                                EXACT.subtract(after.commission, before.commission))
        self.day_pnl[(account, day)] = EXACT.add(self.day_pnl.get((account, day), ZERO),
                                                 amount)
        self.days.add((account, day))
        self.accounts.add(account)

    def page(self, account: str, full: int, positions: Iterable[Position]) -> Page:
        """What the page writes of ``account`` (``positions``: every position it writes),
        once written with the account's version left at ``full``."""
        return Page(
            full=str(full),
            positions=[p for p in positions if p.account == account],
            reservations={cid: now for (owner, cid), now in self.current.items()
                          if owner == account},
            totals=dict(self.totals.get(account, {})),
            counts=dict(self.counts.get(account, {})),
            day_pnl={day: self.day_pnl[(owner, day)] for owner, day in self.days
                     if owner == account})

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
        changed = sorted(self.current)
        for account, cid in changed:
            stored = self.stored.get((account, cid))
            assert stored is not None
            ops += ["expect", at(open_key(keys, account)), cid, stored[0]]
        for account, cid in changed:
            now = self.current[(account, cid)]
            ops += (["drop", at(open_key(keys, account)), cid, ""] if now is None else
                    ["set", at(open_key(keys, account)), cid, encode(now)])
        for account, totals in sorted(self.totals.items()):
            for name, value in sorted(totals.items()):
                ops += ["set", at(sums_key(keys, account)), name, format(value, "f")]
        for account, counts in sorted(self.counts.items()):
            for name, delta in sorted(counts.items()):
                ops += ["count", at(sums_key(keys, account)), name, delta]
        for account, day in sorted(self.days):
            pnl = self.day_pnl[(account, day)]
            ops += ["day", at(day_key(keys, account, day)), "pnl", format(pnl, "f")]
        for account in sorted(self.accounts):
            ops += ["bump", at(version_key(keys, account)), "", ""]
        return names, ops
