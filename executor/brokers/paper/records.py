"""The exchange's record of one order, as stored in Redis, and the report made of it.

Pure data and codecs. The record's first field is ``version``: the Lua scripts read it from
the head of the JSON (``{"version":N,...``) to compare-and-set an order's new state.
"""

from __future__ import annotations

import msgspec

from producer.contract import Fill, OrderSpec, WireDecimal, decoder, encode, zero

from ...model.triggers import TrailState
from ..base import FINAL_BROKER_STATUSES, BrokerOrder, BrokerStatus

OPEN_STATUSES = frozenset({BrokerStatus.NEW, BrokerStatus.PARTIALLY_FILLED})


class PaperOrder(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One order at the paper exchange; ``version`` grows by one with every change."""

    version: int  # must stay the first field (see the module docstring)
    client_order_id: str
    broker_order_id: str
    spec: OrderSpec
    status: BrokerStatus
    filled_quantity: WireDecimal = msgspec.field(default_factory=zero)
    fills: list[Fill] = []
    triggered: bool = False  # stop / take-profit orders: the trigger was hit
    # A trailing stop's water mark and trigger, advanced on every match pass; in the record
    # (in Redis), so any worker, and one started after a restart, goes on from it.
    trail: TrailState | None = None
    # A triggered trailing_stop_limit's limit price (its spec has none: it is computed).
    limit_price: WireDecimal | None = None
    reason: str | None = None
    created_at: int = 0
    updated_at: int = 0
    # The submit call that created the order (worker token and sequence number): a script
    # call that redis-py resends after a lost reply finds its own record, not a duplicate.
    submission: str = ""
    # Native lists (lists.py): on an entry, the exit the exchange places the moment it has
    # fully filled; on that exit, the entry whose fill placed it (what adoption looks for).
    exit: OrderSpec | None = None
    exit_of: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_BROKER_STATUSES


_decoder = decoder(PaperOrder)


def encode_order(order: PaperOrder) -> bytes:
    return encode(order)


def decode_order(data: bytes | str) -> PaperOrder:
    order: PaperOrder = _decoder.decode(data)
    return order


def report(order: PaperOrder) -> BrokerOrder:
    """What the exchange tells a client about the order."""
    quantity = order.spec.quantity
    assert quantity is not None  # the paper exchange takes base quantities only (check)
    return BrokerOrder(
        client_order_id=order.client_order_id,
        broker_order_id=order.broker_order_id,
        symbol=order.spec.symbol,
        status=order.status,
        quantity=quantity,
        filled_quantity=order.filled_quantity,
        fills=list(order.fills),
        reason=order.reason,
        updated_at=order.updated_at,
        native_exits=order.exit is not None,
    )
