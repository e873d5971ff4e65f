"""Step 1: decode and validate. Anything malformed becomes an ``invalid`` result naming the
field; nothing here touches Redis or a broker."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from producer.contract import (
    CLIENT_ORDER_ID_PATTERN,
    Action,
    ContractError,
    ReasonCode,
    check_depth,
    decode_request,
)
from producer.ids import client_order_id_for_entry
from producer.partitions import WrongPartition, partition_prefix
from producer.validation import check_request

from ...brokers.base import Broker, NeedsSlicing
from ...brokers.emulating import reports_volume, step_of
from ...model.order import spec_from_request
from ...model.schedules import check_parent, iceberg_parent
from .. import results
from ..job import Job
from ..services import Services
from .guard import internal_error

DEFAULT_ACCOUNT = "default"
_CLIENT_ID = re.compile(CLIENT_ORDER_ID_PATTERN)
# Numbers kept as their text: never expanded, never out of range.
_loose = msgspec.json.Decoder(float_hook=str)


class Decode:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.max_bytes = svc.settings.worker.max_request_bytes

    def __call__(self, jobs: Sequence[Job]) -> None:
        now = self.svc.clock()
        for job in jobs:
            try:
                self._decode(job, now)
            except ContractError as exc:
                job.result = results.failure(job, ReasonCode.INVALID, str(exc), now,
                                             self.svc.worker)
            except WrongPartition as exc:
                job.result = results.failure(job, ReasonCode.WRONG_PARTITION, str(exc), now,
                                             self.svc.worker)
            except Exception as exc:
                # Input is refused above with a ContractError; anything else is our bug.
                internal_error(self.svc, job, "decode", exc)

    def _decode(self, job: Job, now: int) -> None:
        data = job.fields.get(b"data")
        if data is None:
            names = ", ".join(sorted(k.decode(errors="replace") for k in job.fields)) or "none"
            raise ContractError(f"entry has no `data` field (fields: {names})", "data")
        if len(data) > self.max_bytes:
            raise ContractError(
                f"`data` is {len(data)} bytes, over the limit of {self.max_bytes}", "data"
            )
        try:
            request = decode_request(data)
        except ContractError:
            self._salvage_ids(job, data)
            raise
        job.request = request
        job.action = request.action
        job.client_order_id = request.client_order_id
        check_request(request, now)
        account = request.account or DEFAULT_ACCOUNT
        if request.action is Action.CANCEL_ALL:
            if request.account is not None:
                self._broker(account)
            return
        if request.action is Action.SL_TP:
            self._broker(account)  # an unknown account is refused, naming it
            return
        broker = self._broker(account)
        if request.action in (Action.CANCEL, Action.AMEND):
            return  # an amend's new order is built from the old one (pipeline/steps/amend.py)
        assert request.symbol and request.side and request.type
        if (request.take_profit or request.stop_loss) and self.svc.settings.auth.keys:
            raise ContractError(
                "take_profit / stop_loss are not supported where requests must be signed "
                "([auth] keys): a worker cannot sign the exits it would place",
                "take_profit" if request.take_profit else "stop_loss")
        if request.algo is not None and self.svc.settings.auth.keys:
            raise ContractError("algo is not supported where requests must be signed "
                                "([auth] keys): a worker cannot sign the child orders it "
                                "would place", "algo")
        if (request.algo is not None and request.algo.max_participation is not None
                and not reports_volume(broker)):
            raise ContractError(f"algo.max_participation needs the market's traded volume, "
                                f"which account {account}'s broker does not report",
                                "algo.max_participation")
        if job.client_order_id is None:
            job.client_order_id = client_order_id_for_entry(
                request.symbol, request.side, job.request_id
            )
        spec = spec_from_request(request, account)
        if spec.algo is not None:
            job.spec = check_parent(broker.check, spec, step_of(broker, spec.symbol)) or spec
            return
        try:
            job.spec = broker.check(spec) or spec
        except NeedsSlicing:
            # No icebergs at this broker: the worker shows display_quantity at a time.
            if self.svc.settings.auth.keys:
                raise ContractError("display_quantity is emulated at this broker, which is "
                                    "not supported where requests must be signed ([auth] "
                                    "keys): a worker cannot sign the orders it would place",
                                    "display_quantity") from None
            job.spec = iceberg_parent(broker.check, spec, step_of(broker, spec.symbol))

    def _broker(self, account: str) -> Broker:
        broker = self.svc.brokers.get(account)
        if broker is None:
            partitions = self.svc.settings.partitions
            if account in partitions.accounts:  # configured, served by another partition
                home = partition_prefix(self.svc.settings.redis.prefix,
                                        partitions.accounts[account])
                raise WrongPartition(
                    f"account `{account}` is in partition {partitions.accounts[account]}: "
                    f"publish its requests to {home}:pending, not "
                    f"{self.svc.store.keys.pending}")
            known = ", ".join(sorted(self.svc.brokers))
            raise ContractError(f"account `{account}` is not configured (known: {known})",
                                "account")
        return broker

    @staticmethod
    def _salvage_ids(job: Job, data: bytes) -> None:
        """Copy action and client id from a request that failed to decode, when they are
        readable, so its producer can match the ``invalid`` result to what it sent."""
        try:
            check_depth(data)  # too deep for the strict decoder is too deep here
            loose = _loose.decode(data)
        except (ContractError, msgspec.DecodeError, UnicodeDecodeError):
            return
        if not isinstance(loose, dict):
            return
        cid = loose.get("client_order_id")
        if isinstance(cid, str) and _CLIENT_ID.fullmatch(cid):
            job.client_order_id = cid
        action = loose.get("action")
        if isinstance(action, str) and action in Action._value2member_map_:
            job.action = Action(action)
