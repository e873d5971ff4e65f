"""The sl_tp action: set (or, without any level, clear) the stop-loss / take-profit of a
position from a request, as ``orderstream sl-tp`` does from the command line; the worker
emulating the account fires it (background/exits.py).

The result: ``accepted`` once set, ``cancelled`` once cleared (or there was none), with the
account and symbol. Refused, nothing written: no position (``not_found``), and requests
that must be signed (``invalid``: a worker cannot sign the closing order). Each change is
audited as the operator's are, ``by`` the request (``request:<entry id>``, and its key).
"""

from __future__ import annotations

from collections.abc import Sequence

from producer.contract import (
    Action,
    ContractError,
    OrderType,
    ReasonCode,
    ResultStatus,
    TrailingOffsetType,
)

from ...infra.store import Outcome
from ...model.exits import UNSIGNABLE, Exit
from ...safety.exits import remove_exit, store_exit
from .. import results
from ..job import Job
from ..services import Services
from .decode import DEFAULT_ACCOUNT


class SetExits:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, jobs: Sequence[Job]) -> list[Outcome]:
        for job in jobs:
            if job.request is not None and job.result is None and job.action is Action.SL_TP:
                await self._one(job)
        return []

    async def _one(self, job: Job) -> None:
        svc = self.svc
        req = job.request
        assert req is not None and req.symbol is not None
        account = req.account or DEFAULT_ACCOUNT
        now = svc.clock()
        key = job.fields.get(b"key_id")
        by = f"request:{job.request_id}" + (f" key {key.decode()}" if key else "")
        if req.stop_loss is None and req.take_profit is None and req.trailing_offset is None:
            removed = await remove_exit(svc.store.redis, svc.store.keys, account, req.symbol,
                                        by)
            job.result = results.summary(job, ResultStatus.CANCELLED, now, svc.worker)
            job.result.reason = ("stop-loss / take-profit removed" if removed
                                 else "none was set")
            return
        if svc.settings.auth.keys:
            job.result = results.failure(job, ReasonCode.INVALID, UNSIGNABLE, now, svc.worker)
            return
        exit = Exit(stop_loss=req.stop_loss, take_profit=req.take_profit,
                    trailing_offset=req.trailing_offset,
                    trailing_offset_type=req.trailing_offset_type or TrailingOffsetType.PRICE,
                    close="limit" if req.type is OrderType.LIMIT else "market",
                    set_at=now, set_by=by)
        try:
            await store_exit(svc.store.redis, svc.store.keys, account, req.symbol, exit)
        except ContractError as exc:
            job.result = results.failure(job, ReasonCode.NOT_FOUND, str(exc), now, svc.worker)
            return
        job.result = results.summary(job, ResultStatus.ACCEPTED, now, svc.worker)
