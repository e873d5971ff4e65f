"""Reconciliation of an OANDA account at start and every ``reconcile_interval_ms`` (I/O
here, the comparison in reconcile.py): its pending entry orders and open positions against
our records. Orphans are logged and counted (``orderstream_broker_orphans_total``, by
action), and cancelled when the account's ``orphans = "cancel"``; an orphan reported and
left open is not told again by later passes of this process.

Open positions are compared with our positions once the positions projection has folded
the events written so far (brokers/recorded.py). The first pass takes what OANDA holds
beyond them as it is; a later pass that finds it changed reads both again after
``RECHECK_S`` (a fill OANDA shows before we have recorded it is not drift) and warns of
the instruments still changed, once per change, counted in
``orderstream_broker_position_drift_total``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from redis.exceptions import RedisError

from .. import recorded
from ..base import BrokerError
from . import reconcile

if TYPE_CHECKING:
    from ...infra.metrics import Metrics
    from ...infra.store import Store

log = logging.getLogger(__name__)

Request = Callable[..., Awaitable[dict[str, Any]]]
RECHECK_S = 1.0  # a position drift is read again this much later before it is told


class Reconciler:
    def __init__(self, account: str, orphans: str, request: Request,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.orphans = orphans  # "report" or "cancel"
        self.metrics = metrics
        self.drift: reconcile.Drift | None = None  # what the last pass found
        self._request = request  # the broker's REST call
        self._reported: set[str] = set()  # order ids reported and left open
        # Per instrument, what OANDA held beyond our positions at this process's first pass
        # (reconcile.beyond); None until then.
        self.start: dict[str, Decimal] | None = None
        self._told: dict[str, Decimal] = {}  # instrument -> the drift last warned of (beyond)

    async def run(self, store: Store) -> reconcile.Drift:
        reply = await self._request("GET", "/pendingOrders")
        remote = reconcile.entry_orders(reply)
        ids = sorted({cid for o in remote if (cid := reconcile.client_id(o)) is not None}
                     | set(await store.open_order_ids()))
        local = dict(zip(ids, await store.load_orders(ids), strict=True))
        drift = reconcile.compare(remote, local, self.account, reconcile.held(reply))
        log.info("oanda %s: reconciled: %d pending at OANDA (%d ours), %d orphans, %d of ours "
                 "not pending there", self.account, len(remote), len(drift.known),
                 len(drift.orphans), len(drift.missing))
        # Those no longer pending are forgotten: the memory stays small.
        self._reported &= {str(o.get("id")) for o in drift.orphans}
        for orphan in drift.orphans:
            await self._orphan(orphan)
        drift.positions = await self._positions(store)
        self.drift = drift  # once whole
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

    async def _positions(self, store: Store) -> list[reconcile.PositionDrift]:
        """OANDA's open positions against ours (``reconcile.position_drift``)."""
        what = f"oanda {self.account}"
        if self.start is None:
            # What is held beyond our positions is taken once: from positions that have
            # folded every fill written so far, or a fill in flight would stay in it.
            await recorded.folded(store, what)
        held, ours = await self._read_positions(store)
        found = reconcile.position_drift(held, ours, self.start)
        if found:
            await asyncio.sleep(RECHECK_S)
            await recorded.folded(store, what)
            held, ours = await self._read_positions(store)
            again = {d.instrument for d in found}
            found = [d for d in reconcile.position_drift(held, ours, self.start)
                     if d.instrument in again]
        if self.start is None:
            self.start = reconcile.beyond(held, ours)
            if self.start:
                log.info("oanda %s: at start, OANDA holds beyond our positions: %s (from "
                         "before orderstream, or trades made outside it); later changes are "
                         "reported", self.account,
                         ", ".join(f"{name} {reconcile.units(amount)}"
                                   for name, amount in self.start.items()))
        self._tell(found)
        return found

    async def _read_positions(self, store: Store
                              ) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """OANDA's net units per instrument, then our net position per symbol."""
        held = reconcile.net_units(await self._request("GET", "/openPositions"))
        return held, await recorded.net_positions(store, self.account)

    def _tell(self, found: list[reconcile.PositionDrift]) -> None:
        """Warn of (and count) each drift once per change; say when one has gone."""
        now = {d.instrument: d.beyond for d in found}
        for d in found:
            if self._told.get(d.instrument) == d.beyond:
                continue  # told by an earlier pass of this process, unchanged
            log.warning("oanda %s: position drift: %s: fills recorded that did not happen, "
                        "or trades made outside orderstream; check before trading",
                        self.account, reconcile.describe_drift(d))
            if self.metrics is not None:
                self.metrics.broker_position_drift.labels(self.account, d.instrument).inc()
        for name in sorted(set(self._told) - set(now)):
            log.info("oanda %s: %s: OANDA's position is again what it was against ours at "
                     "this worker's start", self.account, name)
        self._told = now

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
