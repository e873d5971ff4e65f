"""Reading redis-py replies, which are bytes unless a client was made with decode_responses."""

from __future__ import annotations


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
