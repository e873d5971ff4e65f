"""``BinanceBroker``: the ``Broker`` protocol over python-binance's ``AsyncClient``.

One client per account, created in ``start`` (which pings, reads the server's clock and
loads exchangeInfo, refreshed every ``exchange_info_refresh_ms``) and closed in ``close``.
Every call goes through ``_call``, which records Binance's usage headers for the shared
rate limiter, resynchronises the clock and retries once on -1021, and maps every failure
into the broker taxonomy (wire.py). Our client id is Binance's newClientOrderId, so an
order whose outcome is unknown is looked up by it.

Push: the user data stream (WebSocket API subscription, python-binance's
``BinanceSocketManager.user_socket``). A report is pushed as the event says when the fill
quantities add up to the cumulative quantity Binance states; an event older than what a
reply already told is dropped; after a gap (a missed event, a restart) the order is looked
up over REST instead, so a report never skips a fill.

Prices: the last trade of a symbol, from its market stream (market.py) while that stream
vouches for it, started with the broker unless ``price_stream = false``; else from
``GET /api/v3/ticker/price``, reused for ``price_cache_ms``.

OCO (type ``oco``): one order list per request, its listClientOrderId our client id and
its legs' ids derived from it (``wire.leg_ids``); lookups, cancels and the legs' events
are told as one ``BrokerOrder`` of the list (``wire.combine``). Whether a client id is a
list is known from memory or from our record; without either both are tried.

Quirks of python-binance 1.0.37 worked around here:
- no base-URL argument: a subclass sets ``API_URL`` and the WebSocket API client is
  replaced (``WebsocketAPI(url=...)``);
- ``recvWindow`` is always overwritten with the class attribute ``REQUEST_RECVWINDOW``
  (10000), so the instance attribute is set from the config;
- the server time offset is measured only once in ``create``; -1021 resyncs it here;
- aiohttp errors and timeouts are not wrapped; ``str()`` of its API errors carries the
  signed request, so messages are built from code and text only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import redis.asyncio as aioredis
from binance import AsyncClient, BinanceSocketManager
from binance.base_client import BaseClient
from binance.exceptions import BinanceAPIException, BinanceRequestException
from binance.ws.constants import WSListenerState
from binance.ws.websocket_api import WebsocketAPI
from redis.exceptions import RedisError

from producer.contract import ContractError, Fill, OrderSpec, OrderType
from producer.keys import Keys

from ...infra.store import NewOrder, Store
from ...infra.tasks import cancel_and_wait
from ...model.order import Context
from .. import native_lists, recorded
from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    DuplicateClientId,
    FeedBroken,
    InconsistentRead,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    UnknownOutcome,
    Volume,
)
from ..native_exits import sent_natively
from ..native_lists import Adoption
from ..prices import PriceCache
from ..stream_health import StreamHealth
from . import filters, oto, reconcile, wire
from . import stream as user_stream
from .config import BinanceAccount
from .market import MarketStream
from .reconcile import Drift
from .stream import QuietConnectLog

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

# Request weight of each method as Binance publishes it (rest-api.md).
WEIGHTS: Mapping[str, int] = {
    "submit": 1, "cancel": 1, "cancel_all": 1, "get_order": 4, "my_trades": 5,
    "open_orders": 6, "open_orders_all": 80, "account": 20, "exchange_info": 20,
    "reference_price": 2, "reference_prices": 4, "ping": 1, "server_time": 1,
    "get_order_list": 4, "traded_volume": 2,
}
_TRANSPORT_ERRORS = (BinanceRequestException, aiohttp.ClientError, asyncio.TimeoutError,
                     OSError)
_USAGE_HEADERS = {"X-MBX-USED-WEIGHT-1M": "weight_1m", "X-MBX-ORDER-COUNT-10S": "orders_10s",
                  "X-MBX-ORDER-COUNT-1D": "orders_1d"}
_STREAM_CLOSE_S = 3.0
_STREAM_CHECK_S = 1.0  # how often a silent user data stream is checked for a lost connection
STREAMING = WSListenerState.STREAMING
_FILLED_MEMORY = 10_000  # orders whose reported fill quantity is remembered
# Reads of an order and its trades before a lookup of an order that keeps trading between
# the two gives up for now, and the pause before the second (doubled before the third).
_READS = 3
_REREAD_PAUSE_S = 0.05
_TRADES_PAGE = 1000  # myTrades' largest page
_KLINES_PAGE = 1000  # klines' largest page: a call reaches at most 1000 s past its start
_RECHECK_S = 1.0  # a shortfall is read again this much later before it is reported


@dataclass(slots=True)
class _OcoList:
    """What we know of one open OCO list: its legs' latest reports (without fills), so that
    an event of one leg can be told as the state of the whole list."""

    list_id: Any  # None until Binance has answered
    symbol: str
    quantity: Decimal
    legs: dict[str, BrokerOrder]  # leg client id -> its latest report

    def report(self, cid: str, leg: BrokerOrder | None = None) -> BrokerOrder:
        legs = [leg if leg is not None and c == leg.client_order_id else known
                for c, known in self.legs.items()]
        return wire.combine(cid, self.list_id, self.symbol, self.quantity, legs)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BinanceBroker:
    weights: Mapping[str, int] = WEIGHTS

    def __init__(self, account: str, config: BinanceAccount,
                 redis: aioredis.Redis | None = None, keys: Keys | None = None,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.config = config
        self.metrics = metrics
        self.store = None if redis is None else Store(redis, keys or Keys(), results_maxlen=1,
                                                      order_ttl_ms=1)
        self.client: AsyncClient | None = None
        self.rules: dict[str, filters.Rules] = {}
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}  # asset -> (free, locked)
        self.drift: reconcile.Drift | None = None  # what the last reconciliation found
        # Per asset, what the account held beyond our positions at this process's first
        # reconciliation (reconcile.baseline); None until then.
        self._start_balances: dict[str, Decimal] | None = None
        self._usage: dict[str, int] = {}
        self._prices = PriceCache(f"binance {account}", config.price_cache_ms)
        self.market = MarketStream(account, config.price_stream_timeout_ms, self._prices,
                                   metrics)
        self._market_session: aiohttp.ClientSession | None = None
        # For MAX_NUM_ORDERS: what the open records (every worker's) add up to, per client
        # id, as last read; the orphans the last reconciliation left open, per symbol.
        self._open_seen: dict[str, reconcile.Counted] = {}
        self._orphans_open: dict[str, int] = {}
        self._filled: dict[str, Decimal] = {}  # client id -> quantity of fills reported
        self._lists: dict[str, _OcoList] = {}  # our client id -> an open OCO list
        self._leg_owner: dict[str, str] = {}  # leg client id -> the list's (our) client id
        # Pending orders of entries this process sent as native lists (oto.py) -> the entry:
        # their events before the exit's record exists are no order of ours yet.
        self._pending_of: dict[str, str] = {}
        self._ws_url = ""
        self.stream = StreamHealth(account, metrics, logger=user_stream.log,
                                   what=f"binance {account}: user data stream")
        self._refresh: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Task[None] | None = None
        self._closing = False
        # Orphans this process reported and left open ((symbol, orderId)): a later pass
        # does not count or log them again.
        self._reported: set[tuple[str, Any]] = set()

    @property
    def lookup_window_ms(self) -> int:
        """How long after an ambiguous send the order may still appear at Binance (read by
        the submit step, see base.Broker): the account's ``lookup_window_ms``."""
        return self.config.lookup_window_ms

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        try:
            key, secret = cfg.credentials()
        except ValueError as exc:
            raise AuthenticationFailed(f"binance account {self.account}: {exc}") from None
        rest = cfg.rest_url()
        cls: type[AsyncClient] = AsyncClient
        if rest is not None:
            cls = type("LocalBinanceClient", (AsyncClient,), {"API_URL": rest})
        testnet = cfg.testnet and rest is None
        try:
            self.client = await cls.create(key, secret, testnet=testnet)
        except (BinanceAPIException, *_TRANSPORT_ERRORS) as exc:
            raise wire.map_error(exc, sends=False) from None
        self.client.REQUEST_RECVWINDOW = cfg.recv_window_ms
        self._ws_url = cfg.ws_url() or (BaseClient.WS_API_TESTNET_URL if testnet
                                        else BaseClient.WS_API_URL.format("com"))
        try:
            await self.load_rules()
            if self.store is not None:
                await self.reconcile(self.store)
        except BaseException:
            await self.close()  # no session left open by a start that failed
            raise
        self._refresh = asyncio.create_task(self._refresh_rules(),
                                            name=f"binance-rules:{self.account}")
        self._closing = False
        if cfg.price_stream:
            # Its own session: market streams are public, so it carries no key at all.
            self._market_session = aiohttp.ClientSession()
            self.market.start(self._market_session, cfg.market_url())
        if self.store is not None and cfg.reconcile_interval_ms > 0:
            self._reconciling = asyncio.create_task(
                self._reconcile_periodically(self.store),
                name=f"binance-reconcile:{self.account}")
        log.info("binance %s: ready (%s, %d symbols)", self.account,
                 rest or ("testnet" if testnet else "mainnet"), len(self.rules))

    async def close(self) -> None:
        # The flag as well as the cancel: redis-py can swallow a cancel that lands inside a
        # command (redis-py issue 2028), and the loop must end all the same. Never waited
        # for without a bound: a close must not hang.
        self._closing = True
        await self.market.close()
        if self._market_session is not None:
            session, self._market_session = self._market_session, None
            await session.close()
        tasks = [t for t in (self._refresh, self._reconciling) if t is not None]
        # Cancelled again until they end (a cancel inside a Redis command can be lost),
        # within the same _STREAM_CLOSE_S as before.
        await cancel_and_wait(tasks, f"binance {self.account} background", wait_s=0.5,
                              rounds=int(_STREAM_CLOSE_S / 0.5))
        self._refresh = self._reconciling = None
        if self.client is not None:
            client, self.client = self.client, None
            await self._close_ws(client.ws_api)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close_connection(), _STREAM_CLOSE_S)

    async def load_rules(self) -> None:
        info = await self._call("exchange_info", self._client().get_exchange_info)
        self.rules = filters.parse(info)

    async def _refresh_rules(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.config.exchange_info_refresh_ms / 1000)
            try:
                await self.load_rules()
            except BrokerError as exc:
                log.warning("binance %s: exchangeInfo refresh failed (%s); keeping the old "
                            "filters", self.account, exc)

    # -- the Broker protocol ----------------------------------------------------------------

    def check(self, order: OrderSpec) -> OrderSpec:
        """The filters that depend on the order alone. A redelivered request is checked
        again before its order is found to exist, so this must answer the same every time:
        the filters that depend on the market or on open orders wait for ``submit``."""
        return filters.check(order, self._rules(order.symbol),
                             round_quantity=self.config.round_quantity)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        entry = native_lists.entry_of(order)
        if entry is not None:
            # Before any check: an exit Binance already holds (the native list of its
            # entry) is taken as it is, and must never be refused into a second one.
            adopted = await self._adopt(client_order_id, entry, order)
            if adopted is not None:
                return adopted
        try:
            rules = self._rules(order.symbol)
            open_orders = await self._open_orders_of(client_order_id, order,
                                                     rules.max_num_orders)
            reference = self._prices.last(order.symbol)
            filters.check(order, rules, reference=reference, open_orders=open_orders)
        except ContractError as exc:
            raise PermanentError(f"refused before sending to Binance: {exc}") from None
        if order.type is OrderType.OCO:
            return await self._submit_oco(client_order_id, order)
        exit_ = (oto.native_exit(client_order_id, order, rules, reference=reference,
                                 open_orders=open_orders)
                 if self.config.native_lists else None)
        if exit_ is not None:
            native = await self._submit_native(client_order_id, order, exit_)
            if native is not None:
                return native
        params = wire.order_params(client_order_id, order)
        reply = await self._call("submit", self._client().create_order, sends=True, **params)
        fills = wire.response_fills(reply)
        self._filled[client_order_id] = sum((f.quantity for f in fills), Decimal(0))
        return self._track(wire.report(reply, fills, client_order_id))

    async def _open_orders_of(self, client_order_id: str, order: OrderSpec,
                              limit: int | None) -> int | None:
        """How many orders are open at Binance on the order's symbol (MAX_NUM_ORDERS): our
        open records of it, every worker's (the order itself left out), plus the orphans
        the last reconciliation left open there. While the open set of every account holds
        fewer orders than the limit, that bound is all it reads; else the open set, and the
        records not seen before (``reconcile.counted``). None when it cannot tell (no record
        store, Redis unavailable): the filter is then Binance's to check."""
        if limit is None or self.store is None:
            return None
        orphans = self._orphans_open.get(order.symbol, 0)
        try:
            everywhere = int(await self.store.redis.scard(self.store.keys.open))
            if everywhere + orphans < limit:
                return everywhere + orphans  # the filter passes whatever the symbol's part
            ids = await self.store.open_order_ids()
            still = set(ids)
            seen = {cid: c for cid, c in self._open_seen.items() if cid in still}
            again = [cid for cid in ids if cid not in seen or not seen[cid].settled]
            for cid, record in zip(again, await self.store.load_orders(again), strict=True):
                seen[cid] = reconcile.counted(record, self.account)
            self._open_seen = seen
        except RedisError as exc:
            log.info("binance %s: open orders not counted (%s); MAX_NUM_ORDERS left to "
                     "Binance", self.account, exc)
            return None
        return orphans + sum(c.orders for cid, c in seen.items()
                             if c.symbol == order.symbol and cid != client_order_id)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        try:
            is_list = await self._is_list(client_order_id)
            if is_list:
                return await self._cancel_list(client_order_id, symbol)
            try:
                reply = await self._call("cancel", self._client().cancel_order, sends=True,
                                         symbol=symbol, origClientOrderId=client_order_id)
            except OrderNotFound:
                if is_list is not None:
                    raise
                # Binance knows an OCO by its list's client id only.
                return await self._cancel_list(client_order_id, symbol)
        except OrderNotFound:
            # -2011 "Unknown order sent." also answers a cancel of a final order.
            found = await self.get_order(client_order_id, symbol)
            if found.status in FINAL_BROKER_STATUSES:
                raise NotCancellable(f"order {client_order_id} is {found.status} at "
                                     "Binance") from None
            raise RetryableError(f"binance refused to cancel the open order "
                                 f"{client_order_id}; try again") from None
        return self._track(await self._with_fills(reply, client_order_id))

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        is_list = await self._is_list(client_order_id)
        if is_list:
            return await self._get_list(origClientOrderId=client_order_id)
        try:
            reply = await self._call("get_order", self._client().get_order, symbol=symbol,
                                     origClientOrderId=client_order_id)
        except OrderNotFound:
            if is_list is None:  # it may be an OCO, which Binance knows by its list's id
                return await self._get_list(origClientOrderId=client_order_id)
            raise
        return self._track(await self._with_fills(reply, client_order_id))

    async def _is_list(self, client_order_id: str) -> bool | None:
        """Whether our order is an OCO (an order list at Binance), from memory or from its
        record; None when neither can tell (no record: an orphan; no record store)."""
        if client_order_id in self._lists:
            return True
        if self.store is None:
            return None
        try:
            (record,) = await self.store.load_orders([client_order_id])
        except Exception as exc:  # Redis down: both lookups rather than a wrong answer
            log.info("binance %s: record of %s not readable (%s)", self.account,
                     client_order_id, exc)
            return None
        return None if record is None else record.spec.type is OrderType.OCO

    # -- native lists: an entry and its exits, one order list at Binance (oto.py) ------------

    async def _submit_native(self, client_order_id: str, order: OrderSpec,
                             exit_: OrderSpec) -> BrokerOrder | None:
        """The entry ``order`` sent with its exit ``exit_`` as one OTOCO / OTO list; the
        entry's own report (the working order's), marked ``native_exits``. None when Binance
        refused the list outright (nothing was placed): the caller sends the entry as a
        plain order, its exits then placed by the workers as anywhere else."""
        kind, params = oto.list_params(client_order_id, order, exit_)
        client = self._client()
        method = (client.v3_post_order_list_otoco if kind == "otoco"
                  else client.v3_post_order_list_oto)
        pending = oto.pending_ids(client_order_id)
        # Known before sending: the pending orders' events can overtake the reply.
        self._pending_of.update(dict.fromkeys(pending, client_order_id))
        try:
            reply = await self._call("submit", method, sends=True, **params)
        except (UnknownOutcome, DuplicateClientId):
            raise  # the entry is looked up by its client id, as any order's
        except PermanentError as exc:
            for cid in pending:
                self._pending_of.pop(cid, None)
            log.warning("binance %s: the entry %s was refused as an order list (%s); sent "
                        "as a plain order, its exits placed by the workers", self.account,
                        client_order_id, exc)
            return None
        while len(self._pending_of) > _FILLED_MEMORY:
            del self._pending_of[next(iter(self._pending_of))]
        working = next((r for r in reply.get("orderReports", [])
                        if r.get("clientOrderId") == client_order_id and "status" in r), None)
        if working is None:  # not a RESULT/FULL report: ask
            found = await self.get_order(client_order_id, order.symbol)
        else:
            fills = wire.response_fills(working)
            self._filled[client_order_id] = sum((f.quantity for f in fills), Decimal(0))
            found = self._track(wire.report(working, fills, client_order_id))
        log.info("binance %s: entry %s sent as orderList/%s (list %s): Binance places its "
                 "exit %s once it has fully filled", self.account, client_order_id, kind,
                 reply.get("orderListId"), oto.first_exit_id(client_order_id))
        return msgspec.structs.replace(found, native_exits=True)

    async def _sent_natively(self, entry: str) -> bool:
        """Whether the entry may have been sent as a native list (native_exits.py)."""
        return await sent_natively(self.config.native_lists, self.store, entry,
                                   f"binance {self.account}")

    async def _native_exit_of(self, entry: str, symbol: str, oco: bool
                              ) -> tuple[Mapping[str, Any], list[Any], Any] | None:
        """What Binance holds as the native exit of ``entry`` (an oco's pair, else the
        single order ``<entry>-x1``): the list (or order) object, its orders' objects and
        the list's id; None when there is no native list under those ids."""
        first = oto.first_exit_id(entry)
        client = self._client()
        try:
            if oco:
                found = await self._call("get_order_list", client.v3_get_order_list,
                                         origClientOrderId=first)
                if found.get("contingencyType") != "OTO":
                    return None  # an OCO of ours under that id: not a native list
                replies = [await self._call("get_order", client.get_order, symbol=o["symbol"],
                                            orderId=o["orderId"])
                           for o in oto.exit_orders(found)]
                return (found, replies, found.get("orderListId")) if replies else None
            found = await self._call("get_order", client.get_order, symbol=symbol,
                                     origClientOrderId=first)
        except OrderNotFound:
            return None
        list_id = found.get("orderListId", -1)
        if list_id in (-1, None):
            return None  # a plain order of ours under that id
        return found, [found], list_id

    async def end_native_exits(self, entry: str, symbol: str, oco: bool) -> bool:
        """Called by the lists watcher before it ends the list of an entry sent natively
        whose exit was never taken as an order of ours (the list was cancelled, or no
        position is left to protect): the native exit's orders still open at Binance are
        cancelled, so that none is left there untracked. Whether none is open now (False:
        Binance could not tell or refused; the watcher asks again at its next pass)."""
        try:
            native = await self._native_exit_of(entry, symbol, oco)
            if native is None:
                return True
            _, replies, list_id = native
            if all(r.get("status") not in ("NEW", "PARTIALLY_FILLED", "PENDING_NEW")
                   for r in replies):
                return True
            cancelled = await self._call("cancel", self._client().v3_delete_order_list,
                                         sends=True, symbol=symbol, orderListId=list_id)
        except OrderNotFound:
            return True  # ended between the lookup and the cancel
        except BrokerError as exc:
            log.warning("binance %s: the native exit of %s could not be cancelled (%s); "
                        "tried again at the next pass", self.account, entry, exc)
            return False
        traded = [r for r in cancelled.get("orderReports", [])
                  if Decimal(r.get("executedQty", "0")) > 0
                  and (r.get("origClientOrderId") or r.get("clientOrderId")) != entry]
        if traded:
            log.error("binance %s: the native exit of %s traded (%s) and is not an order of "
                      "ours: check the position", self.account, entry,
                      ", ".join(f"{r.get('origClientOrderId')} {r.get('executedQty')}"
                                for r in traded))
        for cid in oto.pending_ids(entry):
            self._pending_of.pop(cid, None)
        log.warning("binance %s: the native exit of %s cancelled: its list ended without "
                    "an exit of ours", self.account, entry)
        return True

    async def _adopt(self, client_order_id: str, entry: str,
                     order: OrderSpec) -> BrokerOrder | None:
        """An exit of ``entry``'s list arriving to be placed: what Binance holds under the
        ids of the entry's native exit (``<entry>-x1``), looked up first.

        - nothing there (not sent natively, or its pending orders ended unplaced: the entry
          was cancelled or expired after a part fill): None, the exit is placed as usual;
        - working or traded, and this is that exit (``<entry>-x1``) for the same quantity
          (or it has traded already: never cancelled into a second exit): taken as this
          exit's report, never sent again;
        - more (or less) than this exit's quantity and untraded (the workers capped the exit
          by the position), or this is a later exit (``-x2``...: the first was refused
          before it reached Binance): the native orders are cancelled first, and None:
          never two exits for one position."""
        if not await self._sent_natively(entry):
            return None
        first = oto.first_exit_id(entry)
        client = self._client()
        native = await self._native_exit_of(entry, order.symbol,
                                            order.type is OrderType.OCO)
        if native is None:
            return None
        found, replies, list_id = native
        if any(r.get("status") == "PENDING_NEW" for r in replies):
            # Its entry has not fully filled, yet its exit is due: not for a full trigger.
            raise RetryableError(f"binance: the native exit of {entry} is not placed yet")
        legs = [await self._with_fills(r, r["clientOrderId"]) for r in replies]
        traded = any(leg.filled_quantity > 0 for leg in legs)
        held = legs[0].quantity
        verdict = native_lists.adoption(
            client_order_id, entry, order.quantity, held=held, traded=traded,
            ended=all(leg.status in FINAL_BROKER_STATUSES for leg in legs))
        if verdict is Adoption.PLACE:
            log.info("binance %s: the native exit of %s ended unplaced or unfilled (%s); %s "
                     "is placed", self.account, entry, legs[0].status, client_order_id)
            return None
        if verdict is Adoption.ADOPT:
            if held != order.quantity:
                log.warning("binance %s: the native exit of %s holds %s and has traded; taken "
                            "as %s for %s as it is", self.account, entry, held,
                            client_order_id, order.quantity)
            log.info("binance %s: exit %s is the native exit Binance placed for %s: taken as "
                     "it, not sent again", self.account, client_order_id, entry)
            for cid in oto.pending_ids(entry):
                self._pending_of.pop(cid, None)  # its events are this exit's now
            if order.type is OrderType.OCO:
                return msgspec.structs.replace(self._remember_list(first, found, legs),
                                               client_order_id=client_order_id)
            return legs[0]
        if verdict is Adoption.REFUSE:
            log.error("binance %s: the native exit of %s has traded, and %s is not it: not "
                      "placed; check the position", self.account, entry, client_order_id)
            raise PermanentError(f"the native exit of {entry} at Binance has traded: "
                                 f"{client_order_id} is not placed")
        cancelled = await self._call("cancel", client.v3_delete_order_list, sends=True,
                                     symbol=order.symbol, orderListId=list_id)
        if any(Decimal(r.get("executedQty", "0")) > 0
               for r in cancelled.get("orderReports", [])
               if (r.get("origClientOrderId") or r.get("clientOrderId")) != entry):
            raise PermanentError(f"the native exit of {entry} traded while being replaced: "
                                 f"{client_order_id} is not placed")
        for cid in oto.pending_ids(entry):
            self._pending_of.pop(cid, None)
        log.warning("binance %s: the native exit of %s (%s) cancelled: %s for %s is placed "
                    "instead", self.account, entry, held, client_order_id, order.quantity)
        return None

    # -- OCO lists: one order of ours, two legs at Binance ----------------------------------

    async def _submit_oco(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        params = wire.oco_params(client_order_id, order)
        assert order.quantity is not None
        # Known before sending: the legs' events can overtake the reply.
        pending = _OcoList(None, order.symbol, order.quantity, {
            cid: BrokerOrder(client_order_id=cid, broker_order_id="", symbol=order.symbol,
                             status=BrokerStatus.NEW, quantity=order.quantity)
            for cid in wire.leg_ids(client_order_id)})
        known = client_order_id in self._lists  # a list of this id is open already
        if not known:
            self._lists[client_order_id] = pending
            self._leg_owner.update(dict.fromkeys(pending.legs, client_order_id))
        try:
            reply = await self._call("submit", self._client().create_oco_order, sends=True,
                                     **params)
        except UnknownOutcome:
            raise
        except BrokerError:
            if not known:
                self._forget_list(client_order_id)
            raise
        legs = []
        for r in reply.get("orderReports", []):
            if "status" not in r:  # not a RESULT/FULL report: ask
                return await self._get_list(origClientOrderId=client_order_id)
            fills = wire.response_fills(r)
            self._filled[r["clientOrderId"]] = sum((f.quantity for f in fills), Decimal(0))
            legs.append(wire.report(r, fills, r["clientOrderId"]))
        return self._remember_list(client_order_id, reply, legs)

    async def _get_list(self, **ident: Any) -> BrokerOrder:
        """An OCO by ``origClientOrderId`` (ours) or ``orderListId``: the list, then each
        leg with its fills."""
        client = self._client()
        found = await self._call("get_order_list", client.v3_get_order_list, **ident)
        legs = []
        for o in oto.exit_orders(found):
            reply = await self._call("get_order", client.get_order, symbol=o["symbol"],
                                     orderId=o["orderId"])
            legs.append(await self._with_fills(reply, o["clientOrderId"]))
        return self._remember_list(found["listClientOrderId"], found, legs)

    async def _cancel_list(self, client_order_id: str, symbol: str) -> BrokerOrder:
        reply = await self._call("cancel", self._client().v3_delete_order_list, sends=True,
                                 symbol=symbol, listClientOrderId=client_order_id)
        legs = [await self._with_fills(r, r.get("origClientOrderId") or r["clientOrderId"])
                for r in oto.exit_orders(reply, "orderReports")]
        return self._remember_list(client_order_id, reply, legs)

    def _remember_list(self, cid: str, found: Mapping[str, Any],
                       legs: list[BrokerOrder]) -> BrokerOrder:
        """The list's report from its legs; an open list is kept for its legs' events."""
        if not legs:
            raise RetryableError(f"binance: order list {cid} came without its orders")
        for leg in legs:
            self._track(leg)
        known = self._lists.get(cid)
        quantity = known.quantity if known is not None else legs[0].quantity
        state = _OcoList(found.get("orderListId"), found.get("symbol") or legs[0].symbol,
                         quantity, {leg.client_order_id: msgspec.structs.replace(leg, fills=[])
                                    for leg in legs})
        result = wire.combine(cid, state.list_id, state.symbol, quantity, legs)
        self._forget_list(cid)
        if any(leg.status not in FINAL_BROKER_STATUSES for leg in legs):
            self._lists[cid] = state
            self._leg_owner.update(dict.fromkeys(state.legs, cid))
        return result

    def _forget_list(self, cid: str) -> None:
        state = self._lists.pop(cid, None)
        if state is not None:
            for leg in state.legs:
                self._leg_owner.pop(leg, None)

    async def _from_leg_event(self, event: Mapping[str, Any], leg: BrokerOrder
                              ) -> BrokerOrder | None:
        """An executionReport of an OCO leg, told as the report of the whole list."""
        owner = self._leg_owner.get(leg.client_order_id)
        state = None if owner is None else self._lists.get(owner)
        if owner is None or state is None:
            # A list we have not seen (placed before a restart): its list id finds it.
            return await self._lookup_list(orderListId=event["g"])
        cid = leg.client_order_id
        before = self._filled.get(cid, Decimal(0))
        after = before + sum((f.quantity for f in leg.fills), Decimal(0))
        if after != leg.filled_quantity:
            if leg.filled_quantity <= before:
                return None  # older than what a reply already told us
            return await self._lookup_list(origClientOrderId=owner)
        self._filled[cid] = after
        self._track(leg)
        if state.list_id is None:
            state.list_id = event.get("g")
        result = state.report(owner, leg)
        state.legs[cid] = msgspec.structs.replace(leg, fills=[])
        if all(known.status in FINAL_BROKER_STATUSES for known in state.legs.values()):
            self._forget_list(owner)
        return result

    async def _from_list_event(self, event: Mapping[str, Any]) -> BrokerOrder | None:
        """A listStatus event: learns which legs make the list; a list Binance says is all
        done while its legs' events did not end it here is looked up."""
        cid = event.get("C")
        if not isinstance(cid, str):
            return None
        if cid in self._lists:
            self._leg_owner.update({o["c"]: cid for o in event.get("O", []) if "c" in o})
            if event.get("L") == "ALL_DONE":
                return await self._lookup_list(origClientOrderId=cid)
        return None

    async def _lookup_list(self, **ident: Any) -> BrokerOrder | None:
        try:
            return await self._get_list(**ident)
        except BrokerError as exc:
            log.info("binance %s: order list %s changed but cannot be looked up (%s); the "
                     "tracker's polling will", self.account, ident, exc)
            return None

    def quote_asset(self, symbol: str) -> str | None:
        rules = self.rules.get(symbol)
        return None if rules is None else rules.quote_asset

    def base_asset(self, symbol: str) -> str | None:
        rules = self.rules.get(symbol)
        return None if rules is None else rules.base_asset

    def step_size(self, symbol: str) -> Decimal | None:
        """LOT_SIZE's stepSize (MARKET_LOT_SIZE's is a market order's further bound)."""
        rules = self.rules.get(symbol)
        lot = None if rules is None else rules.lot
        return lot.step if lot is not None and lot.step else None

    def tick_size(self, symbol: str) -> Decimal | None:
        """PRICE_FILTER's tickSize: what the emulator rounds a trailing limit to."""
        rules = self.rules.get(symbol)
        price = None if rules is None else rules.price
        return price.step if price is not None and price.step else None

    async def reference_price(self, symbol: str) -> Decimal | None:
        """The last trade's price: the market stream's while it vouches for one, else the
        last one polled (ticker/price) or streamed less than ``price_cache_ms`` ago, else
        polled now; None when unknown. The first ask of a symbol subscribes the stream to
        it (and is answered by the cache or a poll)."""
        if symbol not in self.rules:
            return None

        async def ticker() -> Decimal:
            reply = await self._call("reference_price", self._client().get_symbol_ticker,
                                     symbol=symbol)
            return Decimal(reply["price"])
        if self.config.price_stream:
            return await self.market.price(symbol, ticker)
        return await self._prices.get(symbol, ticker)

    async def reference_prices(self, symbols: Sequence[str]) -> dict[str, Decimal | None]:
        """The last prices of ``symbols``: the market stream's where it vouches for one
        (the others are added to it); the rest fetched less than ``price_cache_ms`` ago:
        when any is older, of two symbols or more, all of them by one call for every ticker
        (weight 4, what two symbols' own tickers cost), which keeps them fetched together
        (one symbol expiring at a time would otherwise cost a call each). The emulator asks
        this for all its symbols at once."""
        known = [s for s in symbols if s in self.rules]
        out: dict[str, Decimal | None] = {s: None for s in symbols}
        connection = None
        if self.config.price_stream:
            streamed = {s: self.market.current(s) for s in known}
            for symbol, price in streamed.items():
                if price is None:
                    self.market.add(symbol)
                else:
                    out[symbol] = price
            connection = self.market.connection()
            known = [s for s in known if streamed[s] is None]
        missing = []
        for symbol in known:
            out[symbol] = self._prices.fresh(symbol)
            if out[symbol] is None:
                missing.append(symbol)
        if len(known) == 1 and missing:
            out[missing[0]] = await self.reference_price(missing[0])
        elif missing:
            missing = known
            try:
                reply = await self._call("reference_prices", self._client().get_all_tickers)
            except BrokerError as exc:
                log.info("binance %s: no prices (%s)", self.account, exc)
                return out
            wanted = set(missing)
            for ticker in reply:
                if ticker.get("symbol") in wanted:
                    price = Decimal(ticker["price"])
                    self._prices.put(ticker["symbol"], price)
                    self.market.seed(ticker["symbol"], price, connection)
                    out[ticker["symbol"]] = price
        return out

    volume_interval_ms = 1_000  # one-second klines

    async def traded_volume(self, symbol: str, since: int) -> Volume | None:
        """Everyone's volume of ``symbol`` (base asset) from ``since`` up to the end of the
        last one-second kline Binance has closed (base.VolumeSource): GET klines, interval
        1s, 1000 of them (weight 2), so a call reaches at most 1000 s on and the next, from
        ``until``, goes on. The bucket holding ``since`` began before it and is not counted
        (the cautious side for a cap): the call asks from ``since`` rounded up to the
        second; buckets end on whole seconds, so a caller that goes on from ``until``
        misses none. None for a symbol not in exchangeInfo, or when the call fails
        (logged)."""
        if symbol not in self.rules:
            return None
        try:
            client = self._client()
            # The exchange's now, estimated before asking: the answer is at least this
            # recent, so a last kline that ended by then is closed. Our offset is measured
            # after Binance's reply arrived, which puts the estimate behind rather than
            # ahead: a closed bucket may wait for the next call, an open one is not taken.
            now = _now_ms() + int(client.timestamp_offset)
            klines = await self._call("traded_volume", client.get_klines, symbol=symbol,
                                      interval=AsyncClient.KLINE_INTERVAL_1SECOND,
                                      startTime=-(-since // 1000) * 1000,
                                      limit=_KLINES_PAGE)
            return wire.closed_volume(klines, since, now)
        except RateLimited:
            raise  # for its guard (limited.py) to pause every worker, then answer None
        except BrokerError as exc:
            log.info("binance %s: traded volume of %s unknown (%s)", self.account, symbol,
                     exc)
        except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
            log.warning("binance %s: unreadable klines of %s (%s: %s); traded volume "
                        "unknown", self.account, symbol, type(exc).__name__, exc)
        return None

    async def open_orders(self, symbol: str | None = None) -> list[BrokerOrder]:
        """Binance's open orders (all symbols, or one), without their fills."""
        return [self._track(wire.report(o)) for o in await self._open_orders(symbol)]

    async def cancel_all(self, symbol: str) -> list[BrokerOrder]:
        """DELETE openOrders: every open order of ``symbol`` in one call (an OCO list is one
        report, without fills)."""
        try:
            replies = await self._call("cancel_all", self._client().cancel_all_open_orders,
                                       sends=True, symbol=symbol)
        except OrderNotFound:
            return []
        out = []
        for r in replies:
            if "orderId" in r:
                out.append(self._track(wire.report(r)))
            elif r.get("orderReports"):  # an OCO list: one report under our client id
                # (an OTO's: its working order and an OTO's pending one each as itself)
                mine = oto.exit_orders(r, "orderReports")
                out += [self._track(wire.report(o)) for o in r["orderReports"]
                        if o not in mine]
                if mine:
                    legs = [wire.report(leg) for leg in mine]
                    out.append(self._remember_list(r["listClientOrderId"], r, legs))
        return out

    async def ping(self) -> None:
        await self._call("ping", self._client().ping)

    def usage(self) -> Mapping[str, int]:
        return dict(self._usage)

    async def account_balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        reply = await self._call("account", self._client().get_account, omitZeroBalances="true")
        self.balances = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"]))
                         for b in reply.get("balances", [])}
        return self.balances

    # -- push -------------------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[BrokerOrder]:
        """Reports from the user data stream, from now on. Raises ``RetryableError`` when
        the stream cannot be opened or breaks (the tracker polls, then calls again)."""
        client = self._client()
        # A fresh WebSocket API connection per subscription: python-binance's reconnect of
        # an existing one does not renew the subscription.
        old, client.ws_api = client.ws_api, WebsocketAPI(url=self._ws_url)
        # Its read loop must not reconnect on its own: a new connection has no subscription,
        # and a loop left reconnecting outlives every close. The tracker reconnects.
        client.ws_api.MAX_RECONNECTS = 0
        # A refused connection is told by self.stream, once and then at a low rate, not by
        # python-binance's two ERROR lines per attempt.
        client.ws_api._log = QuietConnectLog(client.ws_api._log)
        await self._close_ws(old)
        socket = BinanceSocketManager(client).user_socket()
        try:
            try:
                await socket.__aenter__()
            except Exception as exc:
                raise self._lost(f"cannot subscribe ({type(exc).__name__}: {exc})") from None
            self.stream.up()
            task = asyncio.current_task()
            ws_api = client.ws_api
            connection = ws_api.ws
            while True:
                try:
                    event = await asyncio.wait_for(socket.recv(), _STREAM_CHECK_S)
                except TimeoutError:
                    # python-binance reconnects a dropped connection by itself, without
                    # the subscription (and the drop's error event can come before our
                    # queue is registered): a new connection means a dead stream.
                    if ws_api.ws is not connection or ws_api.ws_state is not STREAMING:
                        raise self._lost("connection lost (reconnected without the "
                                         "subscription)") from None
                    continue
                if task is not None and task.cancelling():
                    # python-binance waits with asyncio.wait_for, which on Python 3.11
                    # swallows a cancellation that arrives with a message (bpo-42130).
                    raise asyncio.CancelledError
                kind = event.get("e")
                if kind in ("executionReport", "listStatus"):
                    found = await (self._from_event(event) if kind == "executionReport"
                                   else self._from_list_event(event))
                    if found is not None:
                        yield found
                elif kind == "outboundAccountPosition":
                    for b in event.get("B", []):
                        self.balances[b["a"]] = (Decimal(b["f"]), Decimal(b["l"]))
                elif kind in ("error", "eventStreamTerminated"):
                    raise self._lost(f"broke: {event.get('type', kind)} {event.get('m', '')}")
        finally:
            # Unsubscribing needs the connection: on a broken one only the socket's own
            # cleanup (its keepalive timer, cancelled first thing) is waited for.
            ws_api = client.ws_api
            healthy = ws_api.ws is not None and ws_api.ws_state is STREAMING
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.__aexit__(None, None, None),
                                       _STREAM_CLOSE_S if healthy else 0.05)
            await self._close_ws(ws_api)

    def _lost(self, why: str) -> FeedBroken:
        """The stream is down: told by ``self.stream`` (counted; logged at a low rate), and
        the error the tracker gets (it polls, and calls ``updates`` again)."""
        self.stream.lost(why)
        return FeedBroken(f"binance user data stream: {why}", logged=True)

    async def _from_event(self, event: Mapping[str, Any]) -> BrokerOrder | None:
        try:
            found = wire.event_report(event)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            # One malformed event must not end the feed; polling covers its order.
            log.warning("binance %s: unreadable executionReport skipped (%s: %s)",
                        self.account, type(exc).__name__, exc)
            return None
        cid = found.client_order_id
        if event.get("g", -1) not in (-1, None):
            if cid in self._pending_of and cid not in self._leg_owner:
                return None  # a native exit not taken as one yet: no order of ours yet
            if cid in self._leg_owner or await self._is_list(cid) is not False:
                return await self._from_leg_event(event, found)
            # In a list, but an order of its own: the entry of a native list (its working
            # order), or the exit an OTO placed (adopted): reported as itself.
        before = self._filled.get(cid, Decimal(0))
        after = before + sum((f.quantity for f in found.fills), Decimal(0))
        if after == found.filled_quantity:
            self._filled[cid] = after
            return self._track(found)
        if found.filled_quantity <= before:
            # Older than what a reply already told us (the order's HTTP reply can overtake
            # its events): nothing new in it.
            return None
        # A fill we did not see (missed event, restart): the whole order over REST.
        try:
            return await self.get_order(cid, found.symbol)
        except BrokerError as exc:
            log.info("binance %s: order %s changed but cannot be looked up (%s); the "
                     "tracker's polling will", self.account, cid, exc)
            return None

    @staticmethod
    async def _close_ws(ws_api: WebsocketAPI | None) -> None:
        """Close a WebSocket API connection now. python-binance's own close waits for its
        read loop, which looks at the state only between messages (up to 10 s): so the
        state is set and the socket closed first, which wakes it."""
        if ws_api is None:
            return
        ws_api.ws_state = WSListenerState.EXITING
        with contextlib.suppress(Exception):
            if ws_api.ws is not None:
                await asyncio.wait_for(ws_api.ws.close(), _STREAM_CLOSE_S)
            await asyncio.wait_for(ws_api.close(), _STREAM_CLOSE_S)

    # -- reconciliation ---------------------------------------------------------------------

    async def reconcile(self, store: Store) -> reconcile.Drift:
        """Binance's open orders and balances against our records: orphans are logged and
        counted, then adopted or cancelled as the account says; records open here but not
        there are left to the tracker, which looks them up."""
        remote = await self._open_orders(None)
        for o in remote:
            self._track(wire.report(o))
        remote = await self._fold_lists(remote)
        ids = sorted({o["clientOrderId"] for o in remote} | set(await store.open_order_ids()))
        local = dict(zip(ids, await store.load_orders(ids), strict=True))
        remote = await self._native_exits_known(store, remote, local)
        drift = self.drift = reconcile.compare(remote, local, self.account)
        balances = await self._check_balances(store, drift)
        log.info("binance %s: reconciled: %d open at Binance (%d ours), %d orphans, %d of ours "
                 "not open there; balances %s", self.account, len(remote), len(drift.known),
                 len(drift.orphans), len(drift.missing),
                 ", ".join(f"{a} {f + lk}" for a, (f, lk) in sorted(balances.items())) or "none")
        # Those no longer open are forgotten: the memory of reported ones stays small.
        self._reported &= {self._orphan_key(o) for o in drift.orphans}
        left: dict[str, int] = {}
        for orphan in drift.orphans:
            if await self._orphan(store, orphan):
                legs = 1 if orphan.get("orderListId", -1) in (-1, None) else 2
                left[orphan["symbol"]] = left.get(orphan["symbol"], 0) + legs
        # What MAX_NUM_ORDERS is checked against, refreshed: the orphans that stay open at
        # Binance, and the records read here.
        self._orphans_open = left
        self._open_seen.update({cid: reconcile.counted(record, self.account)
                                for cid, record in local.items() if record is not None})
        return drift

    async def _check_balances(self, store: Store, drift: Drift
                              ) -> dict[str, tuple[Decimal, Decimal]]:
        """Balances against our positions (``reconcile.shortfalls``): against what the
        account held at this process's first pass, not against zero. A shortfall is read
        again after ``_RECHECK_S`` and reported only if it is still there: a fill the
        exchange's balances show before the positions projection has folded it is not
        drift."""
        base_of = {symbol: rules.base_asset for symbol, rules in self.rules.items()}
        if self._start_balances is None:
            # What is held beyond our positions is taken once: from positions that have
            # folded every fill written so far, or a fill in flight would stay in it.
            await recorded.folded(store, f"binance {self.account}")
        balances = await self.account_balances()
        positions = await recorded.net_positions(store, self.account)
        short = reconcile.shortfalls(positions, balances, base_of, self._start_balances)
        if short:
            await asyncio.sleep(_RECHECK_S)
            await recorded.folded(store, f"binance {self.account}")
            balances = await self.account_balances()
            positions = await recorded.net_positions(store, self.account)
            again = {s.asset for s in short}
            short = [s for s in reconcile.shortfalls(positions, balances, base_of,
                                                     self._start_balances)
                     if s.asset in again]
        first = self._start_balances is None
        if first:
            self._start_balances = reconcile.baseline(positions, balances, base_of)
        drift.shortfalls = short
        for s in short:
            held = (f"holds {s.held} {s.asset}, but our positions in {', '.join(s.symbols)} "
                    f"add up to {s.recorded}" if first else
                    f"holds {s.held} {s.asset}, at least {filters.tidy(s.expected)} expected "
                    f"(our positions in {', '.join(s.symbols)} add up to {s.recorded}, and it "
                    f"held {filters.tidy(s.expected - s.recorded)} beyond them at this "
                    "worker's start)")
            log.error("binance %s: %s: fills recorded that did not happen, or assets moved "
                      "out of the account; check before trading", self.account, held)
        return balances

    async def _reconcile_periodically(self, store: Store) -> None:
        """Orders placed on the account by others while we run (another program, a person
        in the web interface) are orphans too: reconcile again every interval."""
        while True:
            await asyncio.sleep(self.config.reconcile_interval_ms / 1000)
            if self._closing:
                return
            try:
                await self.reconcile(store)
            except (BrokerError, RedisError) as exc:
                log.warning("binance %s: reconciliation failed (%s); trying again in %d ms",
                            self.account, exc, self.config.reconcile_interval_ms)
            except Exception:
                log.exception("binance %s: reconciliation failed", self.account)

    async def _fold_lists(self, remote: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Open orders with OCO legs folded into one entry per list, under the list's client
        id (ours): a leg is never taken for an orphan of its own. A list that cannot be
        looked up is left out (and the tracker follows our record of it).

        A native list of ours (oto.py: an entry sent with its exits) is not one order: its
        working order is the entry, as itself; its pending orders are the entry's exit
        (``<entry>-x1``: an OTOCO's pair folded under the list's id, which is that exit's),
        marked ``_entry`` so that they are not orphans before the exit's record exists."""
        out: list[dict[str, Any]] = []
        found_lists: dict[Any, Mapping[str, Any] | None] = {}
        seen: set[tuple[Any, str]] = set()
        for o in remote:
            list_id = o.get("orderListId", -1)
            if list_id in (-1, None):
                out.append(o)
                continue
            owner = self._leg_owner.get(o["clientOrderId"])
            if owner is None and list_id not in found_lists:
                try:
                    found_lists[list_id] = await self._call(
                        "get_order_list", self._client().v3_get_order_list,
                        orderListId=list_id)
                except BrokerError as exc:
                    log.warning("binance %s: open order list %s cannot be looked up (%s); "
                                "left out of this reconciliation", self.account, list_id, exc)
                    found_lists[list_id] = None
            found = found_lists.get(list_id)
            entry = None if found is None else oto.working_of(found)
            extra: dict[str, Any] = {}
            if entry == o["clientOrderId"]:
                out.append(o)  # the working order: the entry itself
                continue
            if entry is not None:
                extra["_entry"] = entry
                if found is not None and found.get("listClientOrderId") != \
                        oto.first_exit_id(entry):
                    owner = o["clientOrderId"]  # an OTO's pending order: the exit itself
            if owner is None:
                if found is None:
                    continue
                owner = found["listClientOrderId"]
            if (list_id, owner) in seen:
                continue
            seen.add((list_id, owner))
            out.append({**o, "clientOrderId": owner, **extra})
        return out

    @staticmethod
    async def _native_exits_known(store: Store, remote: list[dict[str, Any]],
                                  local: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The open orders less the pending orders of a native list whose exit has no
        record yet (``_fold_lists``' ``_entry``) while its entry has one: those are the
        entry's exit, Binance's to place, never orphans."""
        waiting = sorted({o["_entry"] for o in remote
                          if "_entry" in o and local.get(o["clientOrderId"]) is None})
        entries = dict(zip(waiting, await store.load_orders(waiting), strict=True))
        return [{k: v for k, v in o.items() if k != "_entry"} for o in remote
                if local.get(o["clientOrderId"]) is not None
                or entries.get(o.get("_entry", "")) is None]

    @staticmethod
    def _orphan_key(orphan: Mapping[str, Any]) -> tuple[str, Any]:
        list_id = orphan.get("orderListId", -1)
        return orphan["symbol"], orphan["orderId"] if list_id in (-1, None) else f"list:{list_id}"

    async def _orphan(self, store: Store, orphan: dict[str, Any]) -> bool:
        """Report, adopt or cancel one orphan as the account says; whether it stays open at
        Binance with no record of ours."""
        cid, symbol, mode = orphan["clientOrderId"], orphan["symbol"], self.config.orphans
        seen = self._orphan_key(orphan)
        if seen in self._reported:
            return True  # reported by an earlier pass of this process, still open
        log.warning("binance %s: orphan order %s (%s %s %s %s, orderId %s) is open at Binance "
                    "with no record of ours; %s", self.account, cid, symbol, orphan["side"],
                    orphan["type"], orphan["origQty"], orphan["orderId"],
                    {"report": "reported only", "adopt": "adopting it",
                     "cancel": "cancelling it"}[mode])
        action: str = mode
        if mode == "cancel":
            try:
                await self.cancel(cid, symbol)
            except BrokerError as exc:
                log.error("binance %s: could not cancel orphan %s: %s", self.account, cid, exc)
                action = "cancel_failed"
        elif mode == "adopt" and orphan.get("orderListId", -1) not in (-1, None):
            log.error("binance %s: orphan %s is an order list, which is not adopted; reported "
                      "only", self.account, cid)
            action = "report"
        elif mode == "adopt":
            made = reconcile.adoption(orphan, self.account,
                                      Context(now=_now_ms(), worker=f"reconcile:{self.account}"))
            if made is None:
                log.error("binance %s: orphan %s has a type our contract cannot follow "
                          "(%s); reported only", self.account, cid, orphan["type"])
                action = "report"
            else:
                order, events, _ = made
                await store.begin([NewOrder(order, events)])
        if action == "report":
            self._reported.add(seen)
        if self.metrics is not None:
            self.metrics.broker_orphans.labels(self.account, action).inc()
        return action in ("report", "cancel_failed")

    # -- internals --------------------------------------------------------------------------

    def _rules(self, symbol: str) -> filters.Rules:
        rules = self.rules.get(symbol)
        if rules is None:
            raise ContractError(f"unknown symbol {symbol!r} at Binance"
                                f"{'' if self.rules else ' (exchangeInfo not loaded)'}",
                                "symbol")
        return rules

    def _client(self) -> AsyncClient:
        if self.client is None:
            raise RetryableError(f"binance {self.account}: not started (or closed)")
        return self.client

    async def _open_orders(self, symbol: str | None) -> list[dict[str, Any]]:
        name = "open_orders" if symbol else "open_orders_all"
        method = self._client().get_open_orders
        result: list[dict[str, Any]] = await (
            self._call(name, method) if symbol is None else self._call(name, method,
                                                                       symbol=symbol))
        return result

    async def _with_fills(self, reply: Mapping[str, Any], cid: str) -> BrokerOrder:
        """A report of an order object with all its fills (myTrades), so that a final status
        never comes without the fills that led to it.

        The order and its trades are two reads: an order that trades between them (or whose
        trades Binance has not written yet) shows an executedQty its trades do not add up
        to. That is a reason to read both again, a few times with a short pause, not a
        broker failure; if they still disagree, ``InconsistentRead`` (the lookup is tried
        again later, and the circuit breaker counts it as an answer)."""
        seen = executed = Decimal(0)
        for attempt in range(_READS):
            if attempt:
                await asyncio.sleep(_REREAD_PAUSE_S * attempt)
                reply = await self._call("get_order", self._client().get_order,
                                         symbol=reply["symbol"], orderId=reply["orderId"])
            executed = Decimal(reply.get("executedQty", "0"))
            if not executed:
                return wire.report(reply, (), cid)
            fills = await self._trades(reply["symbol"], reply["orderId"], executed)
            seen = sum((f.quantity for f in fills), Decimal(0))
            if seen == executed:
                self._filled[cid] = seen
                return wire.report(reply, fills, cid)
        raise InconsistentRead(f"binance: order {cid} shows {executed} filled and trades of "
                               f"{seen} after {_READS} reads; it is trading: looked up again "
                               "later")

    async def _trades(self, symbol: str, order_id: Any, executed: Decimal) -> list[Fill]:
        """Every trade of one order, read in pages of ``_TRADES_PAGE`` from the first up
        (``fromId``: trades with that id or later, in id order; without it Binance answers
        the most recent ones), until a page is empty or the trades add up to ``executed``
        (a server that pages by fewer than we ask for is still read to the end)."""
        fills: list[Fill] = []
        seen = Decimal(0)
        from_id = 0
        while True:
            page = await self._call("my_trades", self._client().get_my_trades, symbol=symbol,
                                    orderId=order_id, fromId=from_id, limit=_TRADES_PAGE)
            for t in page:
                fill = wire.trade_fill(t)
                fills.append(fill)
                seen += fill.quantity
            last = max((int(t["id"]) for t in page), default=-1)
            if not page or seen >= executed or last < from_id:
                return fills
            from_id = last + 1

    def _track(self, found: BrokerOrder) -> BrokerOrder:
        """Remember the fill sums of the latest orders only."""
        while len(self._filled) > _FILLED_MEMORY:
            del self._filled[next(iter(self._filled))]
        return found

    def _note(self, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if not headers:
            return
        for header, name in _USAGE_HEADERS.items():
            value = headers.get(header)
            if value is not None and value.isdigit():
                self._usage[name] = int(value)

    async def _call(self, name: str, method: Callable[..., Awaitable[Any]], *,
                    sends: bool = False, **params: Any) -> Any:
        client = self._client()
        for attempt in (1, 2):
            try:
                result = await method(**params)
                self._note(client.response)
                return result
            except BinanceAPIException as exc:
                self._note(exc.response)
                if exc.code == wire.TIMESTAMP_CODE and attempt == 1:
                    log.warning("binance %s: %s; resynchronising the clock and retrying once",
                                self.account, wire.describe(exc))
                    await self._resync()
                    continue
                error = wire.map_error(exc, sends=sends)
                if isinstance(error, AuthenticationFailed):
                    log.error("binance %s: AUTHENTICATION FAILED on %s (%s): check the api "
                              "key, secret, IP whitelist and key permissions", self.account,
                              name, error)
                raise error from None
            except _TRANSPORT_ERRORS as exc:
                raise wire.map_error(exc, sends=sends) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _resync(self) -> None:
        client = self._client()
        try:
            reply = await client.get_server_time()
        except (BinanceAPIException, *_TRANSPORT_ERRORS) as exc:
            raise wire.map_error(exc, sends=False) from None
        client.timestamp_offset = int(reply["serverTime"]) - _now_ms()
