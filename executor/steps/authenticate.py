"""Right after decode: signed requests. With producer keys configured (``[auth.keys.<key_id>]``), a
request must carry ``key_id`` and ``sig``, the lowercase hex HMAC-SHA256 of the exact
``data`` bytes of its entry under that key; a key limited to accounts may use only those.
Anything else is ``unauthenticated`` and goes no further: no order record, no broker call.
With no keys configured, ``key_id`` and ``sig`` are ignored.

Messages name the field at fault and never show the secret or the expected signature.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from producer.contract import Action, ReasonCode, Request
from producer.signing import KEY_ID_PATTERN, SIG_HEX_LENGTH, SIG_PATTERN, signature_matches

from .. import results
from ..job import Job
from ..secrets import ProducerSecret, producer_keys
from ..services import Services
from .decode import DEFAULT_ACCOUNT

log = logging.getLogger(__name__)

_KEY_ID = re.compile(KEY_ID_PATTERN.encode())


def refusal(fields: Mapping[bytes, bytes], request: Request,
            keys: Mapping[str, ProducerSecret]) -> str | None:
    """Why the entry is not an authentic request its key may make, or None. Pure."""
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
        # Read once, at start: a missing secret stops the worker with a ConfigError.
        self.keys = producer_keys(svc.settings.auth)

    def __call__(self, jobs: Sequence[Job]) -> None:
        if not self.keys:
            return
        now = self.svc.clock()
        for job in jobs:
            assert job.request is not None  # decoded: the jobs without a result
            reason = refusal(job.fields, job.request, self.keys)
            if reason is not None:
                log.warning("request %s unauthenticated: %s", job.request_id, reason)
                job.result = results.failure(job, ReasonCode.UNAUTHENTICATED, reason, now,
                                             self.svc.worker)
