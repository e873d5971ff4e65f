"""Binance's request signatures, checked the way the exchange checks them.

REST: the HMAC-SHA256 payload is the raw query string concatenated (no separator) with the
raw request body, each without its ``signature`` parameter, exactly as the bytes arrived
(percent-encoding included). WebSocket API: every parameter but ``signature``, sorted by
name, ``k=v`` joined with ``&`` (urlencoded). Hex signatures compare case-insensitively.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def without_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` (a query string or form body) minus its ``signature=...`` part, and that
    signature (None when absent)."""
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


def rest_payload(query: str, body: str) -> tuple[str, str | None]:
    """The text Binance signs for a REST request, and the signature sent with it."""
    q, sig_q = without_signature(query)
    b, sig_b = without_signature(body)
    return q + b, sig_q if sig_q is not None else sig_b


def verify(secret: str, payload: str, signature: str) -> bool:
    return hmac.compare_digest(hmac_hex(secret, payload), signature.lower())


def ws_payload(params: Mapping[str, object]) -> str:
    return urlencode(sorted((k, str(v)) for k, v in params.items() if k != "signature"))
