"""The streams of an OANDA v20 account, as pure logic (no I/O): the broker (broker.py
``updates``) reads ``GET {stream host}/v3/accounts/{id}/transactions/stream`` line by line
and hands each line here; the pricing stream (pricing.py) reads its lines with
``parse_line`` too.

A line is one JSON object: a transaction, or a ``HEARTBEAT`` (every 5 s at OANDA) naming
the account's ``lastTransactionID``. ``Cursor`` remembers the last transaction id seen, so
that a transaction told twice (by the stream and by ``transactions/sinceid``, which heals
the gap after a reconnect) is handled once, and a heartbeat ahead of it shows a gap.
Only ORDER_FILL and ORDER_CANCEL transactions carrying a ``clientOrderID`` change our
orders; everything else only moves the cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

ORDER_CHANGES = frozenset({"ORDER_FILL", "ORDER_CANCEL"})
HEARTBEAT = "HEARTBEAT"

# A number in a line becomes a Decimal, never a float (v20 sends prices and units as
# strings; this keeps it exact should a number ever come).
_decode = msgspec.json.Decoder(float_hook=Decimal)


def tx_id(value: Any) -> int | None:
    """A v20 transaction id (a string of an integer) as a number; None when it is not one."""
    try:
        return int(str(value))
    except ValueError:
        return None


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One line of the stream: its object, or None for a blank or unreadable line (one bad
    line must not end the feed: the heartbeat's id shows what it skipped)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        message = _decode.decode(raw)
    except msgspec.DecodeError:
        return None
    return message if isinstance(message, dict) else None


def client_change(tx: Mapping[str, Any]) -> str | None:
    """The client id of an order a transaction fills or cancels, None for any other."""
    if tx.get("type") not in ORDER_CHANGES:
        return None
    cid = tx.get("clientOrderID")
    return str(cid) if cid else None


@dataclass
class Cursor:
    """The last transaction id the feed has handled (None: not known yet)."""

    last: int | None = None

    def fresh(self, tx: Mapping[str, Any]) -> bool:
        """Whether ``tx`` is new (its id above the last one handled); moves the cursor."""
        number = tx_id(tx.get("id"))
        if number is None:
            return False
        if self.last is not None and number <= self.last:
            return False
        self.last = number
        return True

    def behind(self, heartbeat: Mapping[str, Any]) -> bool:
        """Whether a heartbeat names a transaction the feed has not seen (a gap to heal)."""
        number = tx_id(heartbeat.get("lastTransactionID"))
        if number is None:
            return False
        if self.last is None:
            self.last = number  # the starting point: nothing before it is ours to tell
            return False
        return number > self.last

    def start(self, last_transaction_id: Any) -> None:
        """Start from a reply's ``lastTransactionID`` unless the cursor is already set."""
        if self.last is None:
            self.last = tx_id(last_transaction_id)
