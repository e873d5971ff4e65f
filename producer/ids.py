"""Client order ids: unique across producers and workers, and readable by a person.

An id carries the symbol, the side and the time it was made, so that an order seen at a
broker can be traced back to its request without a lookup: ``BTCUSDT-B-m3x9k2a1-9f2k1c0d``.
An id derived from a decision (``client_order_id_for_key``) carries a digest of it instead
of the time: ``BTCUSDT-B-6359011ea0c25691``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from .contract import Side

_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9]")
_SYMBOL_PART = 12
_MAX_LENGTH = 36
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int) -> str:
    out = []
    while True:
        value, digit = divmod(value, 36)
        out.append(_DIGITS[digit])
        if value == 0:
            return "".join(reversed(out))


def _compose(symbol: str, side: Side | str, tail: str) -> str:
    # The symbol gives way to the tail, which is what makes the id unique.
    room = min(_SYMBOL_PART, _MAX_LENGTH - len(tail) - 2)
    symbol_part = _NOT_ID_CHARS.sub("", symbol)[: max(room, 1)] or "X"
    return f"{symbol_part}-{'B' if str(side) == 'buy' else 'S'}{tail}"[:_MAX_LENGTH]


def new_client_order_id(symbol: str, side: Side | str, now_ms: int | None = None) -> str:
    """A fresh id for a producer: milliseconds plus 40 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return _compose(symbol, side, f"-{_base36(ms)}-{secrets.token_hex(5)}")


def client_order_id_for_entry(symbol: str, side: Side | str, entry_id: str) -> str:
    """The id a worker gives a request that came without one.

    It is derived from the stream entry id, not drawn at random, so a request redelivered
    to another worker after a crash gets the same id and cannot become a second order.
    """
    ms, _, seq = entry_id.partition("-")
    return _compose(symbol, side, f"-{_base36(int(ms))}-{_base36(int(seq or 0))}-g")


def client_order_id_for_key(symbol: str, side: Side | str, key: str) -> str:
    """The id of the order decided by ``key`` (what made the decision, e.g. a component and
    the signal it acted on): the same key gives the same id, so the same decision
    published twice is one order and a ``duplicate``, never a second order."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return _compose(symbol, side, f"-{digest}")


def derived_id(base: str, tail: str, limit: int = 36) -> str:
    """The client id of an order a worker derives from another's (``base``): ``base`` with
    ``tail``; where that is longer than ``limit`` (what every broker takes), ``base`` cut
    short and joined with a digest of the whole, so two bases never derive the same id."""
    whole = f"{base}{tail}"
    if len(whole) <= limit:
        return whole
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    return f"{base[:limit - len(tail) - 11]}_{digest}{tail}"
