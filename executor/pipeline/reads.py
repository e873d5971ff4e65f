"""What a batch read in its first round trip (pipeline/steps/prefetch.py), for the steps
after it: idempotency's order records, the gate's breaker states, the risk checks' snapshots
and reference prices. Each step takes what it asked for from here and reads for itself
whatever is missing; a read that failed is kept as its error, for the step that needs it to
handle as it would its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..model.order import Order
from ..safety.risk.state import Read


@dataclass(slots=True, eq=False)
class Reads:
    day: str  # the trading day the snapshots are of
    orders: dict[str, Order | None] = field(default_factory=dict)  # client id -> record
    breakers: dict[str, Any] = field(default_factory=dict)  # account -> stored state / error
    snapshots: dict[str, Read] = field(default_factory=dict)  # account -> risk snapshot
    # (account, symbol) -> the broker's reference price, or the error that asking it raised
    prices: dict[tuple[str, str], Decimal | BaseException | None] = field(default_factory=dict)
