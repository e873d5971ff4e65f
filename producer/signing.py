"""Signed requests: the entry field ``sig`` is the lowercase hex HMAC-SHA256 of the exact
bytes of the field ``data`` under the producer's key, and ``key_id`` names that key.

The signature covers the bytes as written to Redis, not a re-encoding of the JSON: a
producer in any language signs the very string it puts in ``data``.
"""

from __future__ import annotations

import hashlib
import hmac
import re

KEY_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SIG_FIELD = "sig"
KEY_ID_FIELD = "key_id"
SIG_HEX_LENGTH = 64  # SHA-256: 32 bytes
SIG_PATTERN = re.compile(rb"[0-9a-f]{64}")
# A short HMAC key is guessable offline from one signed request.
MIN_SECRET_BYTES = 16


def sign(secret: bytes, data: bytes) -> str:
    """The ``sig`` of ``data`` under ``secret``."""
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def signature_matches(secret: bytes, data: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is the signature of ``data``, compared in constant time."""
    return hmac.compare_digest(sign(secret, data).encode(), sig)


def key_file_secret(raw: bytes) -> bytes:
    """The secret held in a key file: trailing blanks and newlines (``echo s > file``) are
    not part of it."""
    return raw.rstrip(b" \t\r\n")
