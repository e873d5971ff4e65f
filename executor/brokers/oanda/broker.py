"""``OandaBroker``: the ``Broker`` protocol over OANDA's v20 REST API, on aiohttp (the
official ``v20`` package is synchronous and abandoned).

One HTTP session per account, opened in ``start`` (which reads the account summary for its
home currency and loads the configured instruments' rules) and closed in ``close``. The
token lives in the session's default headers only: never in an attribute, a log line, a
repr or an exception. Every call maps its failure into the broker taxonomy (wire.py); a
submit is sent once, never retried here (the pipeline decides, after a lookup by client id).

Orders are found by our client id as ``@<client id>``; a lookup reads the order, then the
transaction that filled it (its price, units and commission) or cancelled it (its reason).

Native contingent lists (``native_lists``, on_fill.py): the entry of a list goes with
``takeProfitOnFill`` / ``stopLossOnFill``, so OANDA makes the trade's exits in the fill's
batch; the workers' exit ``<entry>-x1`` is then taken as those orders, never sent or
emulated a second time (``adopt_native_exit``); a smaller or later exit replaces them; the
list ending without an exit of ours cancels them (``end_native_exits``). An adopted exit is
looked up, cancelled and pushed as its dependent orders (its record's broker order id says
so).

Push: the transactions stream (feed.py), a ``PushFeed`` for the tracker (``updates``).
Prices: the pricing stream (pricing.py) of the instruments asked for, started with the
broker unless ``pricing_stream = false``; polled (``GET pricing``) when it has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import msgspec

from producer.contract import ContractError, OrderSpec, OrderType
from producer.keys import Keys

from ...infra.store import Store
from ...infra.tasks import cancel_and_wait
from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RetryableError,
    UnknownOutcome,
)
from ..native_exits import entry_of, sent_natively
from ..prices import PriceCache
from . import instruments, on_fill, wire
from .config import OandaAccount
from .connections import MAX_CONNECTIONS, ConnectionPacer
from .feed import TransactionsFeed
from .orphans import Reconciler
from .pricing import PricingStream

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_decode = msgspec.json.Decoder()
_MEMORY = 10_000  # native exits (pending, adopted) remembered at most


class OandaBroker:
    def __init__(self, account: str, config: OandaAccount,
                 redis: aioredis.Redis | None = None, keys: Keys | None = None,
                 metrics: Metrics | None = None) -> None:
        self.account = account
        self.config = config
        self.metrics = metrics
        self.rules: dict[str, instruments.Instrument] = {}
        self.currency: str | None = None  # the account's home currency (commissions)
        self._session: aiohttp.ClientSession | None = None
        self.connections = ConnectionPacer()
        self._base = ""  # <rest url>/v3/accounts/<account id>
        self._prices = PriceCache(f"oanda {account}", config.price_cache_ms)
        self._stream_url = ""  # <stream url>/v3/accounts/<account id>/transactions/stream
        self.pricing = PricingStream(account, config.stream_timeout_ms,
                                     config.connect_timeout_ms, self._prices, metrics)
        self.feed = TransactionsFeed(account, config.stream_timeout_ms, self._request,
                                     self._pushed, metrics)
        self.store = None if redis is None else Store(redis, keys or Keys(), results_maxlen=1,
                                                      order_ttl_ms=1)
        self.reconciler = Reconciler(account, config.orphans, self._request, metrics)
        self._reconciling: asyncio.Task[None] | None = None
        # Dependent orders of entries this process sent natively -> their exit, until it
        # is adopted (their transactions are no order of ours yet); adopted exits -> their
        # symbol, and their dependent orders -> the exit.
        self._pending_of: dict[str, str] = {}
        self._adopted: dict[str, str] = {}
        self._owner: dict[str, str] = {}

    def __repr__(self) -> str:  # never the token or the account id
        return f"OandaBroker(account={self.account!r}, venue={self.config.venue()!r})"

    @property
    def lookup_window_ms(self) -> int:
        """How long after an ambiguous send the order may still appear at OANDA (read by
        the submit step, see base.Broker)."""
        return self.config.lookup_window_ms

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        try:
            account_id, token = cfg.credentials()
        except ValueError as exc:
            raise AuthenticationFailed(f"oanda account {self.account}: {exc}") from None
        if not _ACCOUNT_ID.fullmatch(account_id):
            raise AuthenticationFailed(f"oanda account {self.account}: the account id is not "
                                       "letters, digits, '-' and '_' (like 101-004-1234567-001)")
        self._base = f"{cfg.rest_url()}/v3/accounts/{account_id}"
        self._stream_url = (f"{cfg.streaming_url()}/v3/accounts/{account_id}"
                            "/transactions/stream")
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_ms / 1000,
                                        sock_connect=cfg.connect_timeout_ms / 1000)
        # Calls share a few kept-alive connections rather than each opening one: OANDA
        # refuses more than 2 new connections a second, and a batch's submits go at once.
        self._session = aiohttp.ClientSession(
            timeout=timeout, raise_for_status=False,
            connector=aiohttp.TCPConnector(limit_per_host=MAX_CONNECTIONS),
            trace_configs=[self.connections.trace_config()],
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Accept-Datetime-Format": "UNIX"})
        try:
            summary = await self._request("GET", "/summary")
            self.currency = str(summary["account"]["currency"])
            # The push feed tells what happens from here on (gaps healed from this id).
            self.feed.cursor.start(summary.get("lastTransactionID")
                                   or summary["account"].get("lastTransactionID"))
            await self.load_rules()
            if self.store is not None:
                await self.reconciler.run(self.store)
        except BaseException:
            await self.close()  # no session left open by a start that failed
            raise
        if cfg.pricing_stream and self._session is not None:
            self.pricing.start(self._session, f"{cfg.streaming_url()}/v3/accounts/"
                               f"{account_id}/pricing/stream")
        if self.store is not None and cfg.reconcile_interval_ms > 0:
            self._reconciling = asyncio.create_task(
                self.reconciler.periodically(self.store, cfg.reconcile_interval_ms),
                name=f"oanda-reconcile:{self.account}")
        log.info("oanda %s: ready (%s, %d instruments, home currency %s)", self.account,
                 cfg.venue() if cfg.base_url is None else "local server", len(self.rules),
                 self.currency)

    async def close(self) -> None:
        await self.pricing.close()
        if self._reconciling is not None:
            task, self._reconciling = self._reconciling, None
            # Cancelled again until it ends (a cancel inside a Redis command can be lost),
            # for 5 s at most as before.
            await cancel_and_wait([task], f"oanda {self.account} reconciliation",
                                  wait_s=0.5, rounds=10)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def load_rules(self) -> None:
        names = ",".join(self.config.instruments)
        reply = await self._request("GET", "/instruments", params={"instruments": names})
        self.rules = instruments.parse(reply)
        missing = sorted(set(self.config.instruments) - set(self.rules))
        if missing:
            log.warning("oanda %s: instruments not offered to this account: %s",
                        self.account, ", ".join(missing))

    # -- the Broker protocol ----------------------------------------------------------------

    def check(self, order: OrderSpec) -> None:
        """The instrument's precision and size rules and v20's order types and times in
        force, before anything is sent."""
        inst = self._rules(order.symbol)
        instruments.check(order, inst)
        wire.order_request("check", order, inst)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if entry_of(order) is not None:
            # Before any check: an exit OANDA already holds (its entry's on-fill orders) is
            # taken as it is, and must never be refused into a second one.
            adopted = await self.adopt_native_exit(client_order_id, order)
            if adopted is not None:
                return adopted
        try:
            inst = self._rules(order.symbol)
            instruments.check(order, inst)
            body = wire.order_request(client_order_id, order, inst)
            if order.type is OrderType.MARKET_IF_TOUCHED:
                wire.check_touched(order, await self._fresh_mid(order.symbol))
        except ContractError as exc:
            raise PermanentError(f"refused before sending to OANDA: {exc}") from None
        if self.config.native_lists and on_fill.native_exit(client_order_id, order,
                                                            inst) is not None:
            native = await self._submit_native(client_order_id, body,
                                               on_fill.fields(client_order_id, order, inst))
            if native is not None:
                return native
        reply = await self._request("POST", "/orders", json=body, sends=True)
        return wire.create_report(client_order_id, reply, self.currency)

    async def _submit_native(self, client_order_id: str, body: dict[str, Any],
                             extra: dict[str, Any]) -> BrokerOrder | None:
        """The entry sent with its on-fill orders (``extra``); its report marked
        ``native_exits``. None when OANDA refused it for the on-fill part (nothing was
        placed): the caller sends the plain entry, whose exits the workers place."""
        first = on_fill.first_exit_id(client_order_id)
        dependents = on_fill.dependent_ids(first)
        # Known before sending: their transactions can come before the reply.
        self._pending_of.update(dict.fromkeys(dependents, first))
        _forget_oldest(self._pending_of)
        try:
            reply = await self._request("POST", "/orders",
                                        json={"order": {**body["order"], **extra}}, sends=True)
        except wire.OnFillRefused as exc:
            for cid in dependents:
                self._pending_of.pop(cid, None)
            log.warning("oanda %s: the entry %s was refused with its on-fill exits (%s); sent "
                        "as a plain order, its exits placed by the workers", self.account,
                        client_order_id, exc)
            return None
        log.info("oanda %s: entry %s sent with on-fill exits: OANDA makes its exit %s on "
                 "the trade it opens", self.account, client_order_id, first)
        return on_fill.native(wire.create_report(client_order_id, reply, self.currency))

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        if await self._is_adopted(client_order_id):
            return await self._cancel_native(client_order_id, symbol)
        path = f"/orders/{_specifier(client_order_id)}/cancel"
        try:
            reply = await self._request("PUT", path, sends=True)
        except PermanentError as exc:
            if isinstance(exc, AuthenticationFailed):
                raise
            # A final order is not cancellable: tell that from an unknown one.
            found = await self.get_order(client_order_id, symbol)
            if found.status in FINAL_BROKER_STATUSES:
                raise NotCancellable(f"order {client_order_id} is {found.status} at "
                                     "OANDA") from None
            raise RetryableError(f"oanda refused to cancel the open order "
                                 f"{client_order_id} ({exc}); try again") from None
        return await self._lookup(client_order_id, reply.get("orderCancelTransaction"))

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        if await self._is_adopted(client_order_id):
            return await self._native_report(client_order_id, symbol)
        return await self._lookup(client_order_id, None)

    # -- native lists: an entry's exits made by OANDA on its fill (on_fill.py) -------------

    async def _is_adopted(self, cid: str) -> bool:
        """Whether our order ``cid`` is an exit taken as its entry's on-fill orders: from
        memory, else from its record (broker order id ``on-fill:<trade>``). Only exit ids
        are looked for; without a readable record, not (its lookup fails, and is tried
        again later, rather than answer for other orders)."""
        if cid in self._adopted:
            return True
        if self.store is None or not on_fill.is_exit_id(cid):
            return False
        try:
            (record,) = await self.store.load_orders([cid])
        except Exception as exc:
            raise RetryableError(f"oanda {self.account}: record of {cid} not readable "
                                 f"({exc})") from None
        if record is None or not (record.broker_order_id or "").startswith(on_fill.ADOPTED):
            return False
        self._remember(cid, record.spec.symbol)
        return True

    def _remember(self, cid: str, symbol: str) -> None:
        self._adopted[cid] = symbol
        for dependent in on_fill.dependent_ids(cid):
            self._owner[dependent] = cid
            self._pending_of.pop(dependent, None)
        _forget_oldest(self._adopted)
        _forget_oldest(self._owner)

    async def _dependents(self, exit_cid: str, symbol: str,
                          known: Mapping[str, Any] | None = None
                          ) -> list[tuple[Mapping[str, Any], BrokerOrder]]:
        """The dependent orders OANDA holds under the ids of ``exit_cid`` (on_fill
        ``dependent_ids``), each with its report (fills and cancel read; ``known``: a
        transaction in hand, not read again)."""
        out = []
        for cid in on_fill.dependent_ids(exit_cid):
            try:
                reply = await self._request("GET", f"/orders/{_specifier(cid)}")
            except OrderNotFound:
                continue
            order = reply["order"]
            out.append((order, await self._report_of(cid, order, known, symbol)))
        return out

    async def _native_report(self, cid: str, symbol: str,
                             known: Mapping[str, Any] | None = None) -> BrokerOrder:
        """The report of the adopted exit ``cid``: its dependent orders' as one."""
        symbol = symbol or self._adopted.get(cid, "")
        found = await self._dependents(cid, symbol, known)
        if not found:
            raise OrderNotFound(f"oanda: no on-fill order of {cid}")
        return on_fill.combine(cid, str(found[0][0].get("tradeID", "")), symbol, Decimal(0),
                               [leg for _, leg in found])

    async def _cancel_native(self, cid: str, symbol: str) -> BrokerOrder:
        """Cancel the adopted exit ``cid``: its dependent orders still pending."""
        for dependent in on_fill.dependent_ids(cid):
            with contextlib.suppress(OrderNotFound):  # absent, or ended: read below
                await self._request("PUT", f"/orders/{_specifier(dependent)}/cancel",
                                    sends=True)
        found = await self._native_report(cid, symbol)
        if found.status is BrokerStatus.FILLED:
            raise NotCancellable(f"order {cid} is filled at OANDA")
        if found.status not in FINAL_BROKER_STATUSES:
            raise RetryableError(f"oanda: the on-fill orders of {cid} are still pending; "
                                 "try again")
        return found

    async def adopt_native_exit(self, client_order_id: str, order: OrderSpec
                                ) -> BrokerOrder | None:
        """An exit of a list arriving to be placed (by ``submit``, or by the emulator
        before it would hold one): what OANDA holds under the ids of the entry's first
        exit (``<entry>-x1-tp`` / ``-sl``), looked up first.

        - nothing there (not sent natively, the entry opened no trade, or they ended
          unfilled): None, the exit is placed as usual;
        - pending or filled, and this is that exit (``<entry>-x1``) for the units of the
          trade (or one has filled: never cancelled into a second exit): taken as this
          exit's report, never sent again;
        - pending for other units (the workers capped the exit by the position), or this is
          a later exit (``-x2``...: the first was refused before it reached OANDA): they
          are cancelled first, and None: never two exits for one position;
        - filled, and this is not that exit: refused (``PermanentError``), logged."""
        entry = entry_of(order)
        if entry is None or not await sent_natively(
                self.config.native_lists, self.store, entry, f"oanda {self.account}"):
            return None
        first = on_fill.first_exit_id(entry)
        found = await self._dependents(first, order.symbol)
        if not found:
            return None
        legs = [leg for _, leg in found]
        traded = any(leg.filled_quantity > 0 or leg.status is BrokerStatus.FILLED
                     for leg in legs)
        if not traded and all(leg.status in FINAL_BROKER_STATUSES for leg in legs):
            log.info("oanda %s: the on-fill exit of %s ended unfilled (%s); %s is placed",
                     self.account, entry, legs[0].status, client_order_id)
            return None
        trade_id = str(found[0][0].get("tradeID", ""))
        held = await self._trade_units(trade_id)
        if client_order_id == first and (traded or held == order.quantity):
            if held != order.quantity:
                log.warning("oanda %s: the on-fill exit of %s closes a trade of %s and has "
                            "filled; taken as %s for %s as it is", self.account, entry, held,
                            client_order_id, order.quantity)
            log.info("oanda %s: exit %s is the on-fill exit OANDA made for %s (trade %s): "
                     "taken as it, not sent again", self.account, client_order_id, entry,
                     trade_id)
            self._remember(client_order_id, order.symbol)
            assert order.quantity is not None
            return on_fill.combine(client_order_id, trade_id, order.symbol, order.quantity,
                                   legs)
        if traded:
            log.error("oanda %s: the on-fill exit of %s has filled, and %s is not it: not "
                      "placed; check the position", self.account, entry, client_order_id)
            raise PermanentError(f"the on-fill exit of {entry} at OANDA has filled: "
                                 f"{client_order_id} is not placed")
        if not await self._cancel_dependents(entry, first, order.symbol):
            raise PermanentError(f"the on-fill exit of {entry} filled while being replaced: "
                                 f"{client_order_id} is not placed")
        log.warning("oanda %s: the on-fill exit of %s (trade %s, %s units) cancelled: %s for "
                    "%s is placed instead", self.account, entry, trade_id, held,
                    client_order_id, order.quantity)
        return None

    async def _trade_units(self, trade_id: str) -> Decimal | None:
        """The units a trade holds (its initial units once closed), unsigned."""
        reply = await self._request("GET", f"/trades/{quote(trade_id, safe='')}")
        trade = reply["trade"]
        units = trade.get("currentUnits") if trade.get("state") == "OPEN" else None
        return abs(Decimal(str(units or trade.get("initialUnits") or "0")))

    async def _cancel_dependents(self, entry: str, first: str, symbol: str) -> bool:
        """Cancel the dependent orders of ``entry``'s first exit still pending; whether
        none of them has filled (read again after the cancels)."""
        for dependent in on_fill.dependent_ids(first):
            with contextlib.suppress(OrderNotFound):  # absent, or ended: read below
                await self._request("PUT", f"/orders/{_specifier(dependent)}/cancel",
                                    sends=True)
        for dependent in on_fill.dependent_ids(first):
            self._pending_of.pop(dependent, None)
        after = await self._dependents(first, symbol)
        if any(leg.status not in FINAL_BROKER_STATUSES for _, leg in after):
            raise RetryableError(f"oanda: the on-fill exit of {entry} is still pending")
        return not any(leg.filled_quantity > 0 or leg.status is BrokerStatus.FILLED
                       for _, leg in after)

    async def end_native_exits(self, entry: str, symbol: str, oco: bool) -> bool:
        """Called by the lists watcher before it ends the list of an entry sent natively
        whose exit was never taken as an order of ours (the list was cancelled, or no
        position is left to protect): the on-fill orders still pending at OANDA are
        cancelled, so that none is left there untracked. Whether none is pending now
        (False: OANDA could not tell or refused; the watcher asks again at its next
        pass)."""
        first = on_fill.first_exit_id(entry)
        try:
            found = await self._dependents(first, symbol)
            if all(leg.status in FINAL_BROKER_STATUSES for _, leg in found):
                return True
            clean = await self._cancel_dependents(entry, first, symbol)
        except BrokerError as exc:
            log.warning("oanda %s: the on-fill exit of %s could not be cancelled (%s); "
                        "tried again at the next pass", self.account, entry, exc)
            return False
        if not clean:
            log.error("oanda %s: the on-fill exit of %s filled and is not an order of ours: "
                      "check the position", self.account, entry)
        log.warning("oanda %s: the on-fill exit of %s cancelled: its list ended without an "
                    "exit of ours", self.account, entry)
        return True

    async def _pushed(self, cid: str, tx: Mapping[str, Any]) -> BrokerOrder | None:
        """A streamed fill or cancel of the order ``cid``: of a dependent order of an
        adopted exit, that exit's report; of one not adopted yet, nothing (not an order of
        ours yet, never an orphan); else the order's."""
        owner = self._owner.get(cid)
        first = self._pending_of.get(cid)
        if owner is None and first is not None:
            if not await self._is_adopted(first):  # (by another worker, maybe)
                return None
            owner = first
        if owner is None and cid.endswith((on_fill.TAKE_PROFIT_TAIL,
                                           on_fill.STOP_LOSS_TAIL)):
            # Not in memory (made before this process started): the order names its exit.
            reply = await self._request("GET", f"/orders/{_specifier(cid)}")
            owner = on_fill.owner(reply["order"])
            if owner is not None and not await self._is_adopted(owner):
                return None
        if owner is not None:
            return await self._native_report(owner, str(tx.get("instrument") or ""), tx)
        return await self._lookup(cid, tx)

    def quote_asset(self, symbol: str) -> str | None:
        rules = self.rules.get(symbol)
        return None if rules is None else rules.quote

    def base_asset(self, symbol: str) -> str | None:
        rules = self.rules.get(symbol)
        return None if rules is None else rules.base

    async def reference_price(self, symbol: str) -> Decimal | None:
        """The mid of the best bid and ask: the pricing stream's while it vouches for one,
        else the last one polled or streamed less than ``price_cache_ms`` ago, else polled
        now (``GET pricing``). The first ask of an instrument subscribes the stream to it
        (and is answered by the cache or a poll)."""
        if symbol not in self.rules:
            return None
        if self.config.pricing_stream:
            streamed = self.pricing.current(symbol)
            if streamed is not None:
                return streamed
            self.pricing.add(symbol)

        async def mid() -> Decimal | None:
            reply = await self._request("GET", "/pricing", params={"instruments": symbol})
            return wire.mid_price(reply, symbol)
        return await self._prices.get(symbol, mid)

    async def _fresh_mid(self, symbol: str) -> Decimal:
        """The mid now, not a cached one: a market_if_touched's direction at OANDA is set
        by the market at its creation, so the check before sending must be as late as it
        can be. Without a price nothing is sent (nothing was, so it may be tried again)."""
        reply = await self._request("GET", "/pricing", params={"instruments": symbol})
        mid = wire.mid_price(reply, symbol)
        if mid is None:
            raise RetryableError(f"oanda gave no price for {symbol}: a market_if_touched "
                                 "order is not sent without one")
        return mid

    async def ping(self) -> None:
        await self._request("GET", "/summary")

    # -- push -------------------------------------------------------------------------------

    def updates(self) -> AsyncIterator[BrokerOrder]:
        """Fills and cancels of our orders from the transactions stream, from now on (the
        gap since the last transaction seen healed first). Raises ``FeedBroken`` when the
        stream cannot be opened, ends or stays silent (the tracker polls, then calls
        again)."""
        return self.feed.updates(self._session, self._stream_url)

    # -- internals --------------------------------------------------------------------------

    async def _lookup(self, cid: str, known: Mapping[str, Any] | None) -> BrokerOrder:
        """The order by client id, with the transactions that filled or cancelled it;
        ``known``: one of them already in hand (a cancel's reply, a streamed
        transaction), not read again."""
        reply = await self._request("GET", f"/orders/{_specifier(cid)}")
        return await self._report_of(cid, reply["order"], known, "")

    async def _report_of(self, cid: str, order: Mapping[str, Any],
                         known: Mapping[str, Any] | None, symbol: str) -> BrokerOrder:
        """The report of a v20 Order with the transactions it names (``known`` not read
        again)."""
        async def read(key: str) -> Mapping[str, Any] | None:
            tx_id = order.get(key)
            if not tx_id:
                return None
            if known is not None and str(known.get("id")) == str(tx_id):
                return known
            return await self._transaction(tx_id)
        fill_tx = await read("fillingTransactionID")
        cancel_tx = await read("cancellingTransactionID")
        if cancel_tx is None and known is not None and known.get("type") == "ORDER_CANCEL" \
                and str(known.get("orderID")) == str(order.get("id")):
            cancel_tx = known  # a cancel's reply can come before the order shows it
        return wire.order_report(cid, order, fill_tx, cancel_tx, self.currency, symbol)

    async def _transaction(self, tx_id: Any) -> Mapping[str, Any]:
        reply = await self._request("GET", f"/transactions/{quote(str(tx_id), safe='')}")
        tx: Mapping[str, Any] = reply["transaction"]
        return tx

    def _rules(self, symbol: str) -> instruments.Instrument:
        rules = self.rules.get(symbol)
        if rules is None:
            raise ContractError(f"unknown instrument {symbol!r} at OANDA (this account "
                                f"trades {', '.join(self.config.instruments)})", "symbol")
        return rules

    async def _request(self, method: str, path: str, *, sends: bool = False,
                       params: Mapping[str, str] | None = None,
                       json: Any = None) -> dict[str, Any]:
        session = self._session
        if session is None:
            raise RetryableError(f"oanda {self.account}: not started (or closed)")
        data = None if json is None else msgspec.json.encode(json)
        try:
            async with session.request(method, self._base + path, params=params,
                                       data=data) as response:
                raw = await response.read()
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
        except Exception as exc:
            raise wire.transport_error(exc, sends=sends) from None
        try:
            body = _decode.decode(raw) if raw else {}
        except msgspec.DecodeError:
            body = {}
            if status < 300:
                text = f"oanda HTTP {status}: unreadable reply"
                raise (UnknownOutcome(text) if sends else RetryableError(text)) from None
        if not isinstance(body, dict):
            body = {}
        if status >= 300:
            error = wire.map_error(status, body, sends=sends, retry_after=retry_after)
            if isinstance(error, AuthenticationFailed):
                log.error("oanda %s: AUTHENTICATION FAILED on %s (%s): check the token and "
                          "the account id", self.account, path.split("/")[1], error)
            raise error
        return body


def _forget_oldest(memory: dict[str, Any]) -> None:
    while len(memory) > _MEMORY:
        del memory[next(iter(memory))]


def _specifier(client_order_id: str) -> str:
    """v20's OrderSpecifier for our client id (our ids are letters, digits, _ and -)."""
    return "@" + quote(client_order_id, safe="")


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None

