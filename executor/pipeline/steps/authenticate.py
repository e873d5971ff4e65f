"""Signed requests. With producer keys configured (``[auth.keys.<key_id>]``), a request must
carry ``key_id`` and ``sig``, the lowercase hex HMAC-SHA256 of the exact ``data`` bytes of
its entry under that key; it must be fresh; and a key limited to accounts may use only
those. Anything else is ``unauthenticated`` and goes no further: no order record, no broker
call. With no keys configured, ``key_id`` and ``sig`` are ignored.

Two passes, so that nothing expensive happens for an entry its sender could not sign:

- ``signatures``, before decode: the HMAC over the raw ``data`` bytes (already bounded by
  ``max_request_bytes``), the only work an unknown sender can cause;
- ``__call__``, after decode, on what the request says: fresh (``issued_at``, or without
  one ``deadline``, close to the moment Redis added the entry, so that a captured entry
  cannot be replayed later: ``staleness``), and within what its key may do.

Messages name the field at fault and never show the secret or the expected signature.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from producer.contract import Action, ReasonCode, Request
from producer.signing import KEY_ID_PATTERN, SIG_HEX_LENGTH, SIG_PATTERN, signature_matches

from ...infra.secrets import ProducerSecret, producer_keys
from .. import results
from ..job import Job
from ..services import Services
from .decode import DEFAULT_ACCOUNT
from .guard import each

log = logging.getLogger(__name__)

_KEY_ID = re.compile(KEY_ID_PATTERN.encode())


def signature_refusal(fields: Mapping[bytes, bytes],
                      keys: Mapping[str, ProducerSecret]) -> str | None:
    """Why the entry is not signed over its exact ``data`` bytes by a configured key, or
    None. Pure, and reads nothing of ``data`` but its bytes."""
    raw_key_id = fields.get(b"key_id")
    if raw_key_id is None:
        return "entry has no `key_id` field: requests must be signed (`key_id` and `sig`)"
    if not _KEY_ID.fullmatch(raw_key_id):
        return f"`key_id` is not a key id (it must match {KEY_ID_PATTERN})"
    key_id = raw_key_id.decode()
    key = keys.get(key_id)
    if key is None:
        return f"`key_id` `{key_id}` names no configured key"
    sig = fields.get(b"sig")
    if sig is None:
        return "entry has no `sig` field: requests must be signed (HMAC-SHA256 of `data`)"
    if not SIG_PATTERN.fullmatch(sig):
        size = "" if len(sig) == SIG_HEX_LENGTH else f", it has {len(sig)} characters"
        return f"`sig` is not {SIG_HEX_LENGTH} lowercase hex digits{size}"
    if not signature_matches(key.secret, fields[b"data"], sig):
        return (f"`sig` does not match `data` under key `{key_id}` (it must be the "
                "HMAC-SHA256 of the exact `data` bytes)")
    return None


def staleness(request: Request, enqueued_at: int, max_age_ms: int,
              max_skew_ms: int) -> str | None:
    """Why a signed request is not fresh, or None. Its ``issued_at`` must lie at most
    ``max_age_ms`` before ``enqueued_at`` (the time of its entry id, set by Redis when the
    entry was added: a copy added later has a later one, a redelivery the same) and at
    most ``max_skew_ms`` after it (a producer clock ahead of Redis's). Without
    ``issued_at``, its ``deadline`` does: it must not have passed (beyond the skew) when the
    entry was added, nor lie more than ``max_age_ms`` (plus the skew) after. Pure."""
    if request.issued_at is not None:
        age = enqueued_at - request.issued_at
        if age > max_age_ms:
            return (f"`issued_at` {request.issued_at} is {age} ms before the entry was added, "
                    f"more than the {max_age_ms} ms a signed request may be old (stale or "
                    "replayed)")
        if -age > max_skew_ms:
            return (f"`issued_at` {request.issued_at} is {-age} ms after the entry was added, "
                    f"more than the {max_skew_ms} ms of clock skew allowed")
        return None
    deadline = request.deadline
    if deadline is None:
        return (f"`issued_at` is required in a signed request (epoch ms when it was made; or "
                f"a `deadline` at most {max_age_ms} ms after it is sent), so that a copy "
                "cannot be replayed later")
    if deadline < enqueued_at - max_skew_ms:
        return (f"`deadline` {deadline} had passed {enqueued_at - deadline} ms before the "
                "entry was added (stale or replayed)")
    if deadline - enqueued_at > max_age_ms + max_skew_ms:
        return (f"`deadline` {deadline} is {deadline - enqueued_at} ms after the entry was "
                f"added; without `issued_at`, a signed request's deadline may be at most "
                f"{max_age_ms} ms away (plus {max_skew_ms} ms of clock skew)")
    return None


def permission_refusal(key_id: str, key: ProducerSecret, request: Request) -> str | None:
    """Why a correctly signed request may not be made with its key, or None. Pure."""
    if request.action is Action.PLACE and request.client_order_id is None:
        # Signing does not stop a copy of the entry being added again; with its own client
        # id, such a replay is a `duplicate` and never a second order.
        return "`client_order_id` is required in a signed place (a replayed copy is then " \
               "a duplicate, not a new order)"
    return _account_refusal(key_id, key.accounts, request)


def _account_refusal(key_id: str, allowed: frozenset[str] | None,
                     request: Request) -> str | None:
    if allowed is None:
        return None
    names = ", ".join(sorted(allowed))
    account = request.account
    if account is None:
        if request.action is not Action.PLACE:
            # Without an account a cancel, amend or cancel_all reaches every account.
            return (f"`account` is required: key `{key_id}` may use only {names}, and a "
                    f"{request.action} without an account reaches every account")
        account = DEFAULT_ACCOUNT
    if account not in allowed:
        return f"`account` `{account}` may not be used with key `{key_id}` (it may use: {names})"
    return None


class Authenticate:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings = svc.settings.auth
        self.max_bytes = svc.settings.worker.max_request_bytes
        # Read once, at start: a missing secret stops the worker with a ConfigError.
        self.keys = producer_keys(svc.settings.auth)

    def signatures(self, jobs: Sequence[Job]) -> None:
        """Before decode: refuse every entry not signed by a configured key."""
        if self.keys:
            each(self.svc, "authenticate", jobs, self._signature)

    def __call__(self, jobs: Sequence[Job]) -> None:
        """After decode (the jobs whose signature passed): refuse stale requests and what
        their key may not do."""
        if self.keys:
            each(self.svc, "authorize", jobs, self._authorize)

    def _signature(self, job: Job) -> None:
        data = job.fields.get(b"data")
        if data is None or len(data) > self.max_bytes:
            return  # decode refuses it `invalid` without reading it
        reason = signature_refusal(job.fields, self.keys)
        if reason is not None:
            self._refuse(job, reason)

    def _authorize(self, job: Job) -> None:
        request = job.request
        assert request is not None  # decoded: the jobs without a result
        key_id = job.fields[b"key_id"].decode()
        reason = staleness(request, job.enqueued_at, self.settings.max_age_ms,
                           self.settings.max_clock_skew_ms) or permission_refusal(
            key_id, self.keys[key_id], request)
        if reason is not None:
            self._refuse(job, reason)

    def _refuse(self, job: Job, reason: str) -> None:
        log.warning("request %s unauthenticated: %s", job.request_id, reason)
        job.result = results.failure(job, ReasonCode.UNAUTHENTICATED, reason,
                                     self.svc.clock(), self.svc.worker)
