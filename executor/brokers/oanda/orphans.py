"""Reconciliation of an OANDA account at start and every ``reconcile_interval_ms`` (I/O
here, the comparison in reconcile.py): its pending entry orders against our records.
Orphans are logged and counted (``orderstream_broker_orphans_total``, by action), and
cancelled when the account's ``orphans = "cancel"``; an orphan reported and left open is
not told again by later passes of this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from redis.exceptions import RedisError

from ..base import BrokerError
from . import reconcile

if TYPE_CHECKING:
    from ...infra.metrics import Metrics
    from ...infra.store import Store

log = logging.getLogger(__name__)

Request = Callable[..., Awaitable[dict[str, Any]]]


class Reconciler:
    def __init__(self, account: str, orphans: str, request: Request,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.orphans = orphans  # "report" or "cancel"
        self.metrics = metrics
        self.drift: reconcile.Drift | None = None  # what the last pass found
        self._request = request  # the broker's REST call
        self._reported: set[str] = set()  # order ids reported and left open

    async def run(self, store: Store) -> reconcile.Drift:
        remote = reconcile.entry_orders(await self._request("GET", "/pendingOrders"))
        ids = sorted({cid for o in remote if (cid := reconcile.client_id(o)) is not None}
                     | set(await store.open_order_ids()))
        local = dict(zip(ids, await store.load_orders(ids), strict=True))
        drift = self.drift = reconcile.compare(remote, local, self.account)
        log.info("oanda %s: reconciled: %d pending at OANDA (%d ours), %d orphans, %d of ours "
                 "not pending there", self.account, len(remote), len(drift.known),
                 len(drift.orphans), len(drift.missing))
        # Those no longer pending are forgotten: the memory stays small.
        self._reported &= {str(o.get("id")) for o in drift.orphans}
        for orphan in drift.orphans:
            await self._orphan(orphan)
        return drift

    async def periodically(self, store: Store, interval_ms: int) -> None:
        """Orders placed on the account by others while we run are orphans too."""
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await self.run(store)
            except (BrokerError, RedisError) as exc:
                log.warning("oanda %s: reconciliation failed (%s); trying again in %d ms",
                            self.account, exc, interval_ms)
            except Exception:
                log.exception("oanda %s: reconciliation failed", self.account)

    async def _orphan(self, orphan: dict[str, Any]) -> None:
        order_id = str(orphan.get("id"))
        if order_id in self._reported:
            return  # reported by an earlier pass of this process, still pending
        cancel = self.orphans == "cancel"
        log.warning("oanda %s: orphan order %s is pending at OANDA with no record of ours; "
                    "%s", self.account, reconcile.describe(orphan),
                    "cancelling it" if cancel else "reported only")
        action = "report"
        if cancel:
            action = "cancel"
            try:
                spec = quote(reconcile.specifier(orphan), safe="@")
                await self._request("PUT", f"/orders/{spec}/cancel", sends=True)
            except BrokerError as exc:
                log.error("oanda %s: could not cancel orphan %s: %s", self.account,
                          order_id, exc)
                action = "cancel_failed"
        if action == "report":
            self._reported.add(order_id)
        if self.metrics is not None:
            self.metrics.broker_orphans.labels(self.account, action).inc()
