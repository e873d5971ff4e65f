"""When the tracker must next look at an open order: pure rules over the order's record.

Every open order is indexed by that time, per account (``<prefix>:due:<account>``, a zset
client id -> epoch ms), written by the scripts that write the records (infra/lua/begin.lua,
infra/lua/finish.lua) with the record, so a tracking pass loads the orders that are due rather
than every open order (tracker.py). An order needs attention at the earliest of:

- its next reconcile lookup, ``reconcile_ms`` after it last changed or was looked up: a
  broker's push feed reports the changes as they happen, and the lookup catches what a
  feed missed (a broker without a live feed has every order looked up every pass anyway);
- a market-like order's ``market_timeout_ms`` after its creation, a GTD order's
  ``expire_at``: overdue, it is cancelled at the broker;
- for an order in ``pending_cancel`` or still being submitted, the end of the hands-off
  time (``hands_off_ms`` after its last change): until then its request owns it;
- a ``submitted`` order, sent with its outcome unknown (pipeline/steps/submit.py): every pass, until
  the broker shows it (or it is given up, tracker.py).

A failed lookup is retried the next pass (the tracker writes that time itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer.contract import OrderState, OrderType, TimeInForce

from ..model.order import Order
from ..model.states import is_terminal

if TYPE_CHECKING:  # the configuration sits above infra/: its type only
    from ..config import WorkerSettings

RECONCILE_EVERY = 30  # track intervals between lookups of orders whose broker pushes changes
HANDS_OFF_TIMEOUTS = 2  # visibility timeouts an order's own request keeps it


def market_like(order: Order) -> bool:
    """Meant to be done at once, so cancelled when still open after market_timeout_ms; an
    opening or closing auction order waits for its auction, hours maybe."""
    spec = order.spec
    if spec.time_in_force in (TimeInForce.OPG, TimeInForce.CLS):
        return False
    return spec.type is OrderType.MARKET or spec.time_in_force in (TimeInForce.IOC,
                                                                   TimeInForce.FOK)


@dataclass(frozen=True, slots=True)
class Attention:
    market_timeout_ms: int = 300_000
    reconcile_ms: int = RECONCILE_EVERY * 1_000
    hands_off_ms: int = HANDS_OFF_TIMEOUTS * 30_000

    @classmethod
    def of(cls, w: WorkerSettings) -> Attention:
        return cls(market_timeout_ms=w.market_timeout_ms,
                   reconcile_ms=RECONCILE_EVERY * w.track_interval_ms,
                   hands_off_ms=HANDS_OFF_TIMEOUTS * w.visibility_timeout_ms)

    def deadline(self, order: Order) -> int | None:
        """When an open order becomes overdue (tracker.overdue), None if never."""
        times = [order.spec.expire_at] if order.spec.expire_at is not None else []
        if market_like(order):
            times.append(order.created_at + self.market_timeout_ms)
        return min(times, default=None)

    def due(self, order: Order, now: int) -> int | None:
        """When the tracker must next look at ``order``, as of ``now`` (the time it was
        written or looked up); None for a final order, which leaves the index."""
        if is_terminal(order.state):
            return None
        # A look is never earlier than the record it read: a tracker pass's clock, read
        # when the pass began, can precede a record written while it loaded it.
        now = max(now, order.updated_at)
        if order.state is OrderState.SUBMITTED:
            return now
        if order.state in (OrderState.CREATED, OrderState.PENDING_SUBMIT,
                           OrderState.PENDING_CANCEL):
            released = order.updated_at + self.hands_off_ms
            if released > now:
                return released
            if order.state is not OrderState.PENDING_CANCEL:
                return now + self.hands_off_ms  # its request (or reclaim) still owns it
            return now + self.reconcile_ms  # taken back: followed like any open order
        deadline = self.deadline(order)
        later = now + self.reconcile_ms
        return later if deadline is None else min(later, deadline)
