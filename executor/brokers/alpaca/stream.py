"""The trade_updates stream's messages (pure: no I/O), as alpaca-py's ``TradingStream``
speaks them.

- We send ``{"action": "authenticate", "data": {"key_id", "secret_key"}}``; Alpaca answers
  ``{"stream": "authorization", "data": {"action": "authenticate", "status":
  "authorized"}}`` (``"unauthorized"``, with a ``message`` at times, when refused).
- Then ``{"action": "listen", "data": {"streams": ["trade_updates"]}}``; Alpaca answers
  ``{"stream": "listening", "data": {"streams": ["trade_updates"]}}``.
- Then ``{"stream": "trade_updates", "data": {"event": "fill", "order": {...}, ...}}`` per
  change of an order: ``new``, ``fill``, ``partial_fill``, ``canceled``, ``expired``,
  ``rejected``, ``replaced``, ``pending_*``... The order object is the REST one (cumulative
  ``filled_qty`` and ``filled_avg_price``), so a report is made from it as from a lookup.

Frames may come as text or binary; both carry JSON. There is no replay: what happened while
the stream was down is read over REST after each (re)connect (broker.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRADE_UPDATES = "trade_updates"
LISTEN = json.dumps({"action": "listen", "data": {"streams": [TRADE_UPDATES]}})
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
_REFUSAL_CHARS = 200


def auth_message(key_id: str, secret: str) -> str:
    return json.dumps({"action": "authenticate",
                       "data": {"key_id": key_id, "secret_key": secret}})


def parse(raw: str | bytes) -> tuple[str, Mapping[str, Any]]:
    """A frame's stream name and data; ``("", {})`` for what is not such a message."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "", {}
    if not isinstance(msg, dict):
        return "", {}
    data = msg.get("data")
    return str(msg.get("stream", "")), data if isinstance(data, dict) else {}


def authorized(stream: str, data: Mapping[str, Any]) -> bool:
    return stream == "authorization" and data.get("status") == "authorized"


def refusal(stream: str, data: Mapping[str, Any]) -> str:
    """What Alpaca said instead of authorizing: its status and message only (never our
    request, which holds the secret)."""
    if stream != "authorization":
        return f"answered {stream or 'something unreadable'} instead of authorization"
    said = " ".join(str(data.get(k, "")) for k in ("status", "message")).strip()
    return said[:_REFUSAL_CHARS] or "refused"


def listening(stream: str, data: Mapping[str, Any]) -> bool:
    streams = data.get("streams")
    return stream == "listening" and isinstance(streams, list) and TRADE_UPDATES in streams


def update_order(stream: str, data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The order object of a trade update; None for anything else, or an update without a
    readable order."""
    if stream != TRADE_UPDATES:
        return None
    order = data.get("order")
    if not isinstance(order, dict) or "id" not in order or not order.get("client_order_id"):
        return None
    return order


def backoff_s(failures: int, base_s: float = BACKOFF_BASE_S,
              cap_s: float = BACKOFF_CAP_S) -> float:
    """How long to wait before a connection attempt after ``failures`` in a row: none after
    a success, then ``base_s`` doubling up to ``cap_s``."""
    if failures <= 0:
        return 0.0
    return float(min(cap_s, base_s * 2 ** min(failures - 1, 30)))
