"""Following open orders after submission: fills and status changes from the broker reach
the order records and ``orders:events`` (so ``orderstream watch`` shows them), and orders
open too long are cancelled.

Ownership: every live worker (liveness.py) takes the open orders that rendezvous hashing
of (worker, client id) gives it. No ownership is stored, so when a worker dies its orders
move to the others as soon as its heartbeat expires, and a worker that joins takes its
share. For a moment around such a change two workers may follow the same order; that is
harmless, since every write is a compare-and-set on the order's seq and a report applied
twice adds nothing (fills are known by id).

Sources: a broker with a push feed (``PushFeed``: the paper exchange's executions stream,
Binance's user data stream) is followed live, and each owned open order is looked up
(``get_order``) only every ``RECONCILE_EVERY`` track intervals, to catch what a feed missed
(and every one of an account at the first pass and after its feed broke: the gap is
unknown). Orders at a broker without a feed, or whose feed is broken, are looked up every
pass (``track_interval_ms``). Orders in ``pending_submit`` are left to the request that is
submitting them (or to its reclaim).

Cost: open orders are indexed by when they next need attention (attention.py: the next
reconcile lookup, a market timeout, an ``expire_at``, the end of a hands-off time, a failed
lookup's retry), per account, by the scripts that write their records. A pass at an
account with a live feed loads only the orders due, so it costs what is due, not what
rests; one without a feed loads them all, as it looks them all up.
``submitted`` orders (unconfirmed: the broker's answer was lost, or their request was
dead-lettered; nothing says a feed told their changes) are due on every pass.

Deferred cancels: a cancel that came while its order was still being submitted is kept in
``<prefix>:cancels``; once the order is working, its owner sends the cancel (the events
carry the cancel's request id), again every pass while the broker cannot take it. A flag
is dropped only once its order is final, or its record gone.

Hands off: an order in ``pending_cancel`` belongs to the request cancelling it (the cancel,
amend or cancel_all that wrote that state before asking the broker), which writes the
outcome itself; the tracker takes it back only if it stays so for two visibility timeouts
(that request's worker died and it was dead-lettered), and then cancels it at the broker.

Outcome unknown: an order recorded ``submitted`` was sent and the broker has not shown it
(pipeline/steps/submit.py): it is looked up by client id on every pass, push feed or not, and moves
as soon as the broker shows it; still unknown to the broker ``unknown_resolve_ms`` after it
was recorded so, it never reached the broker: it ends ``rejected`` with reason code
``not_found``, which releases its risk reservation.

Timeouts: a market-like order (market, IOC, FOK) still open ``market_timeout_ms`` after it
was created, and a GTD order past its ``expire_at`` (the broker normally expires it
itself), are cancelled at the broker; the order ends in the state the broker reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from redis.exceptions import RedisError

from producer.contract import Event, OrderState, ReasonCode

from ..brokers.base import Broker, BrokerError, BrokerOrder, OrderNotFound, get_all
from ..infra.attention import market_like
from ..infra.logs import about
from ..infra.store import Outcome, Reindex
from ..infra.tasks import Slices, cancel_and_wait
from ..model.order import Context, Order, apply_report, transition
from ..model.states import IllegalTransition, is_terminal
from ..pipeline.services import Services
from ..pipeline.steps.cancel import WORKING, CancelFailed, cancel_at_broker

log = logging.getLogger(__name__)

# Orders the tracker moves: submitted and beyond, not yet final.
TRACKED = frozenset({OrderState.SUBMITTED, OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED,
                     OrderState.PENDING_CANCEL})
_LOOKUPS_AT_ONCE = 50  # broker lookups in flight per pass (real brokers rate-limit)
_INDEXED_AT_ONCE = 1_000  # open orders checked per call when indexing those missing
# Due orders a pass loads, looks up and reindexes at a time: with thousands due at once (a
# reconcile of orders placed together, an account's sweep), one load decoded them all in a
# single turn of the event loop (104-106 ms for 10,000 on the 2-core bench machine, every
# request of the worker waiting), and one reindex held redis-server as long.
_LOADED_AT_ONCE = 100


@runtime_checkable
class PushFeed(Protocol):
    """A broker that pushes order changes as they happen."""

    account: str

    def updates(self) -> AsyncIterator[BrokerOrder]:
        """Reports of orders that changed, from now on, until cancelled. Raises when the
        feed breaks; the tracker reconnects and polls meanwhile."""
        ...


def owner(client_order_id: str, peers: Sequence[str]) -> str:
    """The live worker that follows an order: rendezvous (highest random weight) hashing,
    so when a worker leaves only its own orders move. Stable across processes (not
    Python's randomized ``hash``)."""
    def weight(peer: str) -> bytes:
        return hashlib.blake2b(f"{peer}\0{client_order_id}".encode(), digest_size=8).digest()
    return max(peers, key=weight)


def overdue(order: Order, now: int, market_timeout_ms: int) -> str | None:
    """Why an open order should be cancelled now, or None."""
    if market_like(order) and now - order.created_at >= market_timeout_ms:
        return f"open longer than market_timeout_ms ({market_timeout_ms} ms)"
    expire_at = order.spec.expire_at
    if expire_at is not None and now >= expire_at:
        return f"past its expire_at ({expire_at})"
    return None


class Tracker:
    def __init__(self, svc: Services, peers: Callable[[], Awaitable[list[str]]] | None,
                 *, interval_ms: int, market_timeout_ms: int) -> None:
        self.svc = svc
        self.store = svc.store
        self._peers = peers
        self.interval_s = interval_ms / 1000
        self.market_timeout_ms = market_timeout_ms
        self.unknown_resolve_ms = svc.settings.worker.unknown_resolve_ms
        self.peers: list[str] = [svc.worker]
        self.hands_off_ms = 2 * svc.settings.worker.visibility_timeout_ms
        self.live_feeds: set[str] = set()  # accounts whose push feed is connected
        # Accounts whose every order the next pass looks up: all at the start, and one
        # whose feed broke (what it missed meanwhile is unknown).
        self._sweep: set[str] = set(svc.brokers)
        self._indexed = False  # open orders missing from the index added (once per start)
        self.slices = Slices()  # hands the event loop back between a long pass's chunks

    def mine(self, client_order_id: str) -> bool:
        return owner(client_order_id, self.peers) == self.svc.worker

    def followed(self, order: Order, now: int) -> bool:
        """Whether the tracker moves this order now (see "Hands off"). Never an algorithm's
        parent: it is at no broker, and its schedule's owner moves it (algos.py)."""
        if order.spec.algo is not None:
            return False
        if order.state is OrderState.PENDING_CANCEL:
            return now - order.updated_at >= self.hands_off_ms
        return order.state in TRACKED

    async def refresh_peers(self) -> None:
        if self._peers is not None:
            self.peers = await self._peers()

    # -- polling -----------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Send the deferred cancels of owned orders that have landed; look up the owned
        open orders that are due (all of them at an account without a live feed) at their
        broker and record what changed; cancel the overdue ones. Returns how many orders
        changed."""
        await self.refresh_peers()
        changed = await self.cancel_deferred()
        if not self._indexed:
            await self.index_open_orders()
            self._indexed = True
        for account in self.svc.brokers:
            changed += await self._pass(account)
        return changed

    async def _pass(self, account: str) -> int:
        """Look up the account's owned orders that are due (every one after a sweep or
        without a live feed), and set when each is due next."""
        everything = account in self._sweep or account not in self.live_feeds
        self._sweep.discard(account)
        now = self.svc.clock()
        due = await self.store.due_ids(account, None if everything else now)
        changed = 0
        slices = self.slices
        slices.start()
        for start in range(0, len(due), _LOADED_AT_ONCE):
            await slices.pause()
            ids = [cid for cid in due[start:start + _LOADED_AT_ONCE] if self.mine(cid)]
            if ids:
                changed += await self._pass_over(account, ids, now)
        return changed

    async def _pass_over(self, account: str, ids: list[str], now: int) -> int:
        """``_pass`` over some of the due orders (``_LOADED_AT_ONCE`` at most)."""
        attention = self.store.attention
        later: list[Reindex] = []  # (client id, account, seq read, due next)
        orders: list[Order] = []
        for cid, order in zip(ids, await self.store.load_orders(ids), strict=True):
            if order is None:
                later.append((cid, account, 0, None))  # its record is gone
            elif self.followed(order, now):
                orders.append(order)
            else:
                later.append((cid, account, order.seq, attention.due(order, now)))
        changed = 0
        for start in range(0, len(orders), _LOOKUPS_AT_ONCE):
            chunk = orders[start:start + _LOOKUPS_AT_ONCE]
            # Due next as of now, read before a report moves the order; a record written
            # for a change carries its own time (the seq check skips this one).
            plan = [(o.client_order_id, account, o.seq, attention.due(o, now))
                    for o in chunk]
            reports = await self._look(account, chunk)
            changed += await self._record([(o, r) for o, r in zip(chunk, reports, strict=True)
                                           if r is not None])
            retry = self.svc.clock() + int(self.interval_s * 1000)
            later += [(cid, account, seq,
                       due if r is not None or due is None else min(due, retry))
                      for (cid, account, seq, due), r in zip(plan, reports, strict=True)]
        await self.store.reindex(later)
        return changed

    async def index_open_orders(self) -> int:
        """Add the open orders missing from the attention index (written before it
        existed): once per start, so that no open order goes unfollowed. Returns how many
        were added."""
        ids = await self.store.open_order_ids()
        keys = [self.store.keys.due(account) for account in self.svc.brokers]
        added = 0
        now = self.svc.clock()
        for start in range(0, len(ids), _INDEXED_AT_ONCE):
            chunk = ids[start:start + _INDEXED_AT_ONCE]
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zmscore(key, chunk)
                scores = await pipe.execute()
            missing = [cid for n, cid in enumerate(chunk)
                       if all(found[n] is None for found in scores)]
            orders = [o for o in await self.store.load_orders(missing) if o is not None]
            await self.store.reindex(
                [(o.client_order_id, o.spec.account, o.seq, self.store.attention.due(o, now))
                 for o in orders], only_new=True)
            added += len(orders)
        if added:
            log.info("tracker: %d open orders added to the attention index", added)
        return added

    async def _look(self, account: str, orders: Sequence[Order]
                    ) -> list[BrokerOrder | Event | None]:
        """Each order's report from the broker; or the event that ends an order of unknown
        outcome the broker never showed; None: nothing learnt this pass. An overdue order
        is cancelled, each alone; the others are looked up together, in one call where the
        account's broker can (brokers/base.py ``get_all``: the paper exchange's one read,
        where one command per order was most of a reconcile's cost)."""
        broker = self.svc.brokers.get(account)
        if broker is None:
            return [None] * len(orders)
        now = self.svc.clock()
        cancels: list[int] = []
        looked: list[int] = []
        for k, order in enumerate(orders):
            why = overdue(order, now, self.market_timeout_ms)
            if order.state is OrderState.PENDING_CANCEL:
                # Followed only once hands off has passed: whoever wrote it died before
                # the broker answered. Someone meant it cancelled, so it is.
                why = f"left pending_cancel for over {self.hands_off_ms} ms"
            if why is None:
                looked.append(k)
                continue
            log.warning("order %s %s: cancelling it", order.client_order_id, why,
                        extra=about(order.client_order_id, order.request_id))
            cancels.append(k)

        async def cancel(order: Order) -> BrokerOrder:
            with self.svc.metrics.broker_call(account, "cancel"):
                return await _cancel_or_look(broker, order)

        async def look_up() -> list[BrokerOrder | BaseException]:
            if not looked:
                return []
            # One call, as a batched submit is (docs/metrics.md).
            with self.svc.metrics.broker_call(account, "get_order"):
                return await get_all(broker, [(orders[k].client_order_id, orders[k].spec)
                                              for k in looked])

        cancelled, found = await asyncio.gather(
            asyncio.gather(*(cancel(orders[k]) for k in cancels), return_exceptions=True),
            look_up())
        answers = dict(zip(cancels, cancelled, strict=True))
        answers.update(zip(looked, found, strict=True))
        return [self._learnt(order, answers[k]) for k, order in enumerate(orders)]

    def _learnt(self, order: Order, answer: BrokerOrder | BaseException
                ) -> BrokerOrder | Event | None:
        """What a lookup's (or a cancel's) answer tells of the order (``_look``)."""
        if isinstance(answer, OrderNotFound):
            lost = self._never_arrived(order)
            if lost is not None:
                return lost
            log.info("order %s: not at the broker (%s); next pass", order.client_order_id,
                     answer, extra=about(order.client_order_id, order.request_id))
            return None
        if isinstance(answer, BrokerError):
            log.info("order %s: lookup failed (%s); next pass", order.client_order_id,
                     answer, extra=about(order.client_order_id, order.request_id))
            return None
        if isinstance(answer, BaseException):
            raise answer  # a bug, or Redis failing under a guard: the pass stops, as before
        return answer

    def _never_arrived(self, order: Order) -> Event | None:
        """An order of unknown outcome (submitted) the broker has not shown for
        ``unknown_resolve_ms``: it ends rejected, not_found. None while it may still come."""
        now = self.svc.clock()
        if order.state is not OrderState.SUBMITTED or (
                now - order.updated_at < self.unknown_resolve_ms):
            return None
        log.warning("order %s: the broker has not shown it in %d ms of lookups by client id; "
                    "it never reached the broker", order.client_order_id,
                    self.unknown_resolve_ms,
                    extra=about(order.client_order_id, order.request_id))
        return transition(
            order, OrderState.REJECTED,
            Context(now=now, worker=self.svc.worker, request_id=order.request_id),
            reason_code=ReasonCode.NOT_FOUND,
            reason=f"the broker never showed the order in {self.unknown_resolve_ms} ms of "
                   "lookups by client id after its answer was lost: it did not reach it")

    async def cancel_deferred(self) -> int:
        """Send the deferred cancels of owned orders that are working. A flag is kept until
        its order is final (or its record gone): whatever the broker answers short of that
        (unavailable, retries exhausted, held back by the rate limiter, refused, or the
        order moved under us), the cancel is sent again next pass. Returns how many orders
        changed."""
        mine = {cid: rid for cid, rid in (await self.store.deferred_cancels()).items()
                if self.mine(cid)}
        if not mine:
            return 0
        orders = await self.store.load_orders(list(mine))
        outcomes: list[Outcome] = []
        drop: list[str] = []
        for cid, order in zip(mine, orders, strict=True):
            if order is None or is_terminal(order.state):
                drop.append(cid)
                continue
            if order.state not in WORKING:
                # Still being submitted, or pending_cancel (its request is cancelling it,
                # or "Hands off" takes it back): next pass, until it is final.
                continue
            try:
                events = await cancel_at_broker(self.svc, order, mine[cid])
            except CancelFailed as exc:
                events = exc.events  # what was learnt on the way (a fill, or back to working)
                if not is_terminal(order.state):
                    log.info("deferred cancel of %s failed (%s: %s); next pass", cid,
                             exc.code, exc, extra=about(cid, mine[cid]))
            if events:
                outcomes.append(Outcome(cid, None, order, order.seq - len(events), events))
        conflicts = set(await self.store.finish(outcomes)) if outcomes else set()
        # Dropped once the order's end is written; a conflict is read again next pass.
        drop += [o.request_id for o in outcomes if o.request_id not in conflicts
                 and o.order is not None and is_terminal(o.order.state)]
        await self.store.drop_deferred_cancels(drop)
        return len(outcomes) - len(conflicts)

    # -- push --------------------------------------------------------------------------------

    async def on_report(self, report: BrokerOrder) -> int:
        """A change pushed by a broker: recorded if the order is ours and open."""
        if not self.mine(report.client_order_id):
            return 0
        (order,) = await self.store.load_orders([report.client_order_id])
        if order is None or not self.followed(order, self.svc.clock()):
            return 0
        return await self._record([(order, report)])

    async def follow(self, feed: PushFeed, running: Callable[[], bool]) -> None:
        """Apply a broker's pushed changes until stopped; reconnect when the feed breaks
        (the polling pass covers what was missed meanwhile)."""
        account = feed.account
        while running():
            try:
                self.live_feeds.add(account)
                async for report in feed.updates():
                    await self.on_report(report)
                    if not running():
                        return
            except (RedisError, BrokerError, OSError) as exc:
                # A broker that tells a lost feed itself (once, then at a low rate) is not
                # told again at every reconnect attempt here.
                level = logging.DEBUG if getattr(exc, "logged", False) else logging.WARNING
                log.log(level, "push feed of %s broke (%s); polling covers the gap", account,
                        exc)
            finally:
                self.live_feeds.discard(account)
            self._sweep.add(account)  # the next pass looks everything up: the gap is unknown
            await asyncio.sleep(self.interval_s)

    # -- writing -----------------------------------------------------------------------------

    async def _record(self, pairs: Sequence[tuple[Order, BrokerOrder | Event]]) -> int:
        outcomes: list[Outcome] = []
        for order, report in pairs:
            if isinstance(report, Event):  # already applied to the order (_never_arrived)
                outcomes.append(Outcome(order.client_order_id, None, order, order.seq - 1,
                                        [report]))
                continue
            seq = order.seq
            ctx = Context(now=self.svc.clock(), worker=self.svc.worker,
                          request_id=order.request_id)
            try:
                events = apply_report(order, report, ctx)
            except IllegalTransition as exc:
                self.svc.metrics.illegal_transition(exc)
                log.error("order %s: %s (broker reports %s); left as it was",
                          order.client_order_id, exc, report.status,
                          extra=about(order.client_order_id, order.request_id))
                continue
            except ValueError as exc:
                # Fills the record cannot hold (more than the order's quantity: both legs
                # of an oco filled in a fast market): this order is an operator's to
                # reconcile; the batch's other orders are recorded all the same.
                self.svc.metrics.internal_errors.labels("tracker").inc()
                log.error("order %s: %s (broker reports %s, filled %s); left as it was",
                          order.client_order_id, exc, report.status,
                          report.filled_quantity,
                          extra=about(order.client_order_id, order.request_id))
                continue
            if events:
                # Keyed by client id: conflicts come back by this id.
                outcomes.append(Outcome(order.client_order_id, None, order, seq, events))
        if not outcomes:
            return 0
        conflicts = set(await self.store.finish(outcomes))
        changed = 0
        for outcome in outcomes:
            if outcome.request_id in conflicts:
                continue  # moved meanwhile (its request, or another tracker): next pass
            changed += 1
            assert outcome.order is not None
            self.svc.metrics.tracked_changes.labels(outcome.order.state.value).inc()
        return changed

    async def run(self, running: Callable[[], bool],
                  sleep: Callable[[float], Awaitable[None]]) -> None:
        feeds = [asyncio.create_task(self.follow(b, running), name=f"feed-{b.account}")
                 for b in self.svc.brokers.values() if isinstance(b, PushFeed)]
        try:
            while running():
                try:
                    await self.poll_once()
                except RedisError as exc:
                    log.warning("tracking pass failed: %s", exc)
                await sleep(self.interval_s)
        finally:
            await cancel_and_wait(feeds, "push feeds")


async def _cancel_or_look(broker: Broker, order: Order) -> BrokerOrder:
    """Cancel an overdue order; if it is already final at the broker, its report says how."""
    try:
        return await broker.cancel(order.client_order_id, order.spec.symbol)
    except BrokerError:
        return await broker.get_order(order.client_order_id, order.spec.symbol)

