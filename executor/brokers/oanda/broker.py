"""``OandaBroker``: the ``Broker`` protocol over OANDA's v20 REST API, on aiohttp (the
official ``v20`` package is synchronous and abandoned).

One HTTP session per account, opened in ``start`` (which reads the account summary for its
home currency and loads the configured instruments' rules) and closed in ``close``. The
token lives in the session's default headers only: never in an attribute, a log line, a
repr or an exception. Every call maps its failure into the broker taxonomy (wire.py); a
submit is sent once, never retried here (the pipeline decides, after a lookup by client id).

Orders are found by our client id as ``@<client id>``; a lookup reads the order, then the
transaction that filled it (its price, units and commission) or cancelled it (its reason).

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
from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerOrder,
    NotCancellable,
    PermanentError,
    RetryableError,
    UnknownOutcome,
)
from ..prices import PriceCache
from . import instruments, wire
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
                                     self._lookup, metrics)
        self.store = None if redis is None else Store(redis, keys or Keys(), results_maxlen=1,
                                                      order_ttl_ms=1)
        self.reconciler = Reconciler(account, config.orphans, self._request, metrics)
        self._reconciling: asyncio.Task[None] | None = None

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
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)
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
        try:
            inst = self._rules(order.symbol)
            instruments.check(order, inst)
            body = wire.order_request(client_order_id, order, inst)
            if order.type is OrderType.MARKET_IF_TOUCHED:
                wire.check_touched(order, await self._fresh_mid(order.symbol))
        except ContractError as exc:
            raise PermanentError(f"refused before sending to OANDA: {exc}") from None
        reply = await self._request("POST", "/orders", json=body, sends=True)
        return wire.create_report(client_order_id, reply, self.currency)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
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
        return await self._lookup(client_order_id, None)

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
        order = reply["order"]

        async def read(key: str) -> Mapping[str, Any] | None:
            tx_id = order.get(key)
            if not tx_id:
                return None
            if known is not None and str(known.get("id")) == str(tx_id):
                return known
            return await self._transaction(tx_id)
        fill_tx = await read("fillingTransactionID")
        cancel_tx = await read("cancellingTransactionID")
        if cancel_tx is None and known is not None and known.get("type") == "ORDER_CANCEL":
            cancel_tx = known  # a cancel's reply can come before the order shows it
        return wire.order_report(cid, order, fill_tx, cancel_tx, self.currency)

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


def _specifier(client_order_id: str) -> str:
    """v20's OrderSpecifier for our client id (our ids are letters, digits, _ and -)."""
    return "@" + quote(client_order_id, safe="")


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None

