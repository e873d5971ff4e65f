"""``AlpacaBroker``: the ``Broker`` protocol over Alpaca's trading API v2, with our own thin
aiohttp client (alpaca-py is synchronous and retries every call, new orders included, on
429 and 504 with blocking sleeps).

One session per account, made in ``start`` (which reads the account and the assets of the
configured symbols) and closed in ``close``. Every request goes through ``_request``,
which sends the key id and secret key as Alpaca's headers, records the X-Ratelimit-*
headers for the shared rate limiter and maps every failure into the broker taxonomy
(wire.py). Nothing is ever sent twice here: the submit step decides what an unknown
outcome becomes.

Our client id is Alpaca's client_order_id (``wire.client_id``: ours, or a fixed shortening
of one too long), so an order whose outcome is unknown is looked up by it (GET
/v2/orders:by_client_order_id). A cancel looks the order up by it, then DELETEs Alpaca's
id and reads the order again (the DELETE answers 204 without a body).

Our ``oco`` (reduce_only, stock, gtc: ``wire.check_oco``) is Alpaca's oco order class: the
take-profit limit is the order under our client id, the stop its one leg (``legs``), with
a client id of Alpaca's. It is told as one order of ours from both (``wire.report_oco``),
so every lookup of one reads it nested (GET /v2/orders/{id}?nested=true) when the answer
by client id does not nest its leg; a trade update of either leg is told by such a lookup;
a cancel DELETEs whichever of the two is open (Alpaca cancels the rest of the group).

Alpaca's order object tells only the cumulative filled quantity and average price: each
rise is told as one fill (``wire.fills_of``), derived from the fills told before, which
are read from our record of the order (or this process's memory, when it goes further).

Push (``updates``): the trade_updates stream (stream.py has its messages), a WebSocket on
this account's session: authenticate, listen, then every change of an order as it
happens, reported from the update's order object as from a lookup (an update older than
what was told already is dropped). The stream has no replay: after every (re)connect the
account's open orders are read over REST (GET /v2/orders?status=open, and a lookup of each
open record of ours no longer open there) before the updates. A failed attempt waits
before the next (``stream.backoff_s``); ``self.stream`` tells the stream's health.

Prices: the mid of a symbol's latest quote, from Alpaca's market data streams (quotes.py:
one connection for stocks on the account's feed, one for crypto, each subscribed to the
symbols asked for) while they vouch for it, started with the broker unless ``price_stream
= false``, and in a worker only while it holds the account's emulator lease
(``lead_prices``: Alpaca allows one market data connection per key and feed); else polled
from the market data API's latest quote, reused for ``price_cache_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.contract import ContractError, Fill, OrderSpec
from producer.keys import Keys

from ...infra.clock import wall_clock_ms
from ...infra.store import Store
from ...model.states import is_terminal
from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    FeedBroken,
    NotCancellable,
    PermanentError,
    RetryableError,
    UnknownOutcome,
    Volume,
)
from ..prices import PriceCache
from ..stream_health import StreamHealth
from . import reconcile, stream, wire
from .config import AlpacaAccount
from .quotes import QuoteStream
from .wire import Call

if TYPE_CHECKING:
    from ...infra.metrics import Metrics

log = logging.getLogger(__name__)

# Alpaca counts requests (200 a minute per account), so a method weighs the requests it
# makes: a cancel is a lookup, the DELETE and a read of the result. The market data calls
# (reference_price, traded_volume) are not here: that API's limit is its own.
WEIGHTS: Mapping[str, int] = {"submit": 1, "cancel": 3, "get_order": 1, "ping": 1}
_FILLS_MEMORY = 10_000  # orders whose fills told so far are remembered
_OCO_MEMORY = 10_000  # Alpaca ids of open ocos' orders remembered (their updates' owner)
_CLOSE_S = 3.0
_HEARTBEAT_S = 15.0  # a ping this often; no pong in half of it: the connection is dead
_OPEN_ORDERS_LIMIT = 500  # Alpaca's most per GET /v2/orders
# Bars asked per traded_volume call: 1000 minutes (Alpaca's default page; it takes up to
# 10,000). The caller asks again from ``until`` for the rest.
_BARS_LIMIT = 1_000


class Asset(msgspec.Struct, kw_only=True, frozen=True):
    """What ``check`` needs of one of the account's symbols (GET /v2/assets/{symbol})."""

    symbol: str
    tradable: bool
    fractionable: bool


class _Reply(msgspec.Struct, kw_only=True):
    status: int
    body: Any
    headers: Mapping[str, str]


class AlpacaBroker:
    weights: Mapping[str, int] = WEIGHTS

    def __init__(self, account: str, config: AlpacaAccount,
                 redis: aioredis.Redis | None = None, keys: Keys | None = None,
                 metrics: Metrics | None = None, *,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.account = account
        self.config = config
        self.clock = clock  # epoch ms: which bars are closed (traded_volume)
        self.store = None if redis is None else Store(redis, keys or Keys(), results_maxlen=1,
                                                      order_ttl_ms=1)
        self.assets: dict[str, Asset] = {}
        self._session: aiohttp.ClientSession | None = None
        self._usage: dict[str, int] = {}
        self._fills: dict[str, list[Fill]] = {}  # our client id -> its fills told so far
        # Alpaca id of each order of an open oco (the parent and its leg) -> our client id:
        # a trade update of the leg carries a client id of Alpaca's, not ours.
        self._owners: dict[str, str] = {}
        self._prices = PriceCache(f"alpaca {account}", config.price_cache_ms)
        self._keys: tuple[str, str] | None = None  # for the stream's auth message
        self.metrics = metrics
        self.orphans: list[Mapping[str, Any]] = []  # what the last reconciliation found
        self._reported: set[str] = set()  # Alpaca ids of orphans this process reported
        self._reconciling: asyncio.Task[None] | None = None
        self.stream = StreamHealth(account, metrics, logger=log,
                                   what=f"alpaca {account}: trade_updates stream")
        # Reference prices: one market data stream for stocks, one for crypto (each its own
        # connection at Alpaca), behind one feed="prices" gauge.
        self.quotes = {kind: QuoteStream(account, kind, config.price_stream_timeout_ms,
                                         self._prices, metrics)
                       for kind in ("stocks", "crypto")}
        stocks, crypto = self.quotes["stocks"].health, self.quotes["crypto"].health
        stocks.siblings.append(crypto)
        crypto.siblings.append(stocks)
        self._quote_session: aiohttp.ClientSession | None = None
        # Whether this worker leads the account's prices (lead_prices); None: never told
        # (no emulator in charge): the streams run as soon as a price is asked.
        self._leads: bool | None = None

    def __repr__(self) -> str:  # the session holds the secret in its default headers
        return f"AlpacaBroker(account={self.account!r}, url={self.config.rest_url()!r})"

    @property
    def lookup_window_ms(self) -> int:
        """How long after an ambiguous send the order may still appear at Alpaca (read by
        the submit step, see base.Broker)."""
        return self.config.lookup_window_ms

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        try:
            key_id, secret = cfg.credentials()
        except ValueError as exc:  # ConfigError too: where it was looked for, not the value
            raise AuthenticationFailed(f"alpaca account {self.account}: {exc}") from None
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_ms / 1000,
                                        connect=cfg.connect_timeout_ms / 1000)
        self._keys = (key_id, secret)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            headers={"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret})
        try:
            account = await self._json("GET", "/v2/account", Call.READ)
            if account.get("trading_blocked") or account.get("account_blocked"):
                log.error("alpaca %s: the account is blocked from trading (status %s); "
                          "Alpaca will refuse its orders", self.account, account.get("status"))
            for symbol in cfg.symbols:
                await self._load_asset(symbol)
        except BaseException:
            await self.close()  # no session left open by a start that failed
            raise
        log.info("alpaca %s: ready (%s, %s, %d of %d symbols tradable)", self.account,
                 cfg.rest_url(), cfg.venue(), sum(a.tradable for a in self.assets.values()),
                 len(cfg.symbols))
        if cfg.price_stream:
            # Its own session, without the key headers: the streams authenticate by message.
            self._quote_session = aiohttp.ClientSession()
            for kind, url in zip(("stocks", "crypto"), cfg.quote_stream_urls(), strict=True):
                self.quotes[kind].start(self._quote_session, url, (key_id, secret),
                                        run=self._leads is not False)
        if self.store is not None and cfg.reconcile_interval_ms > 0:
            self._reconciling = asyncio.create_task(
                self._reconcile_periodically(self.store),
                name=f"alpaca-reconcile-{self.account}")

    async def _load_asset(self, symbol: str) -> None:
        try:
            found = await self._json("GET", f"/v2/assets/{quote(symbol, safe='')}", Call.READ)
        except PermanentError as exc:
            if isinstance(exc, AuthenticationFailed):
                raise
            log.error("alpaca %s: symbol %s is not known at Alpaca (%s); its orders are "
                      "refused", self.account, symbol, exc)
            return
        asset = Asset(symbol=symbol, tradable=bool(found.get("tradable")),
                      fractionable=bool(found.get("fractionable")))
        if not asset.tradable:
            log.error("alpaca %s: %s is not tradable at Alpaca; its orders are refused",
                      self.account, symbol)
        self.assets[symbol] = asset

    async def close(self) -> None:
        task, self._reconciling = self._reconciling, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for prices in self.quotes.values():
            await prices.close()
        for name in ("_session", "_quote_session"):
            session = getattr(self, name)
            if session is not None:
                setattr(self, name, None)
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                    await asyncio.wait_for(session.close(), _CLOSE_S)

    def lead_prices(self, leads: bool) -> None:
        """The emulator's word (emulating.lead_prices): whether this worker holds the
        account's emulator lease. Alpaca allows the keys one market data connection per
        feed, so once an emulator is in charge the quote streams run only on the lease
        holder, which triggers the account's conditional orders on them; another worker
        polls its prices as with ``price_stream = false`` and exports no
        ``feed="prices"`` gauge. Never waits: a connection given up is closed in the
        background (``close`` waits for it), one taken up is opened by the stream's task."""
        self._leads = leads
        if not self.config.price_stream:
            return
        for prices in self.quotes.values():
            if not leads:
                prices.pause()
            elif self._quote_session is not None and not prices.running:
                prices.resume()  # not before start: start runs it then

    # -- the Broker protocol ----------------------------------------------------------------

    def check(self, order: OrderSpec) -> None:
        """Refuse (``ContractError`` naming the field) what Alpaca would: a symbol the
        account does not trade, a type or time in force it has no word for, fractions or
        a notional where it takes none."""
        asset = self.assets.get(order.symbol)
        if asset is None or not asset.tradable:
            listed = ", ".join(self.config.symbols) or "none"
            why = "not configured" if order.symbol not in self.config.symbols else (
                "not tradable at Alpaca")
            raise ContractError(f"symbol {order.symbol!r} is {why} for this Alpaca account "
                                f"(its symbols: {listed})", "symbol")
        wire.check(order, fractionable=asset.fractionable)

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        try:
            self.check(order)
        except ContractError as exc:
            raise PermanentError(f"refused before sending to Alpaca: {exc}") from None
        body = wire.order_body(client_order_id, order,
                               extended_hours=self.config.extended_hours)
        reply = await self._json("POST", "/v2/orders", Call.SUBMIT, json=body)
        # A new order: no fills told before (a resend follows only an error that proves
        # the first send did nothing).
        return self._report(reply, client_order_id, [])

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        reply = await self._nested(await self._by_client_id(client_order_id))
        return self._report(reply, client_order_id, await self._known(client_order_id))

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        found = await self._nested(await self._by_client_id(client_order_id))
        known = await self._known(client_order_id)
        now = self._report(found, client_order_id, known)
        if now.status is BrokerStatus.CANCELLED:
            return now  # cancelled already (by an earlier cancel of ours whose answer was lost)
        if now.status in FINAL_BROKER_STATUSES:
            raise NotCancellable(f"order {client_order_id} is {now.status} at Alpaca")
        if wire.is_oco(found):
            return await self._cancel_oco(found, client_order_id, known)
        order_id = quote(str(found["id"]), safe="")
        await self._request("DELETE", f"/v2/orders/{order_id}", Call.CANCEL)
        after = await self._json("GET", f"/v2/orders/{order_id}", Call.LOOKUP)
        return self._report(after, client_order_id, self._fills.get(client_order_id, known))

    async def _cancel_oco(self, found: Mapping[str, Any], client_order_id: str,
                          known: list[Fill]) -> BrokerOrder:
        """Cancelling one order of an oco cancels the rest of it at Alpaca (orders.md:
        "If any one of the orders is canceled, any remaining open order in the group is
        canceled"): the parent while it is open, else its leg (the stop triggered, and
        Alpaca ended the take-profit). One that ends between our read and the DELETE is
        read again once and the other one tried."""
        parent = str(found["id"])
        for attempt in range(2):
            orders = wire.oco_orders(found) or [found]
            working = [o for o in orders if wire.status_of(o) not in FINAL_BROKER_STATUSES]
            if not working:
                break
            order_id = quote(str(working[0]["id"]), safe="")
            try:
                await self._request("DELETE", f"/v2/orders/{order_id}", Call.CANCEL)
                break
            except NotCancellable:
                if attempt:
                    raise
                found = await self._order_nested(parent)
        after = await self._order_nested(parent)
        return self._report(after, client_order_id, self._fills.get(client_order_id, known))

    def quote_asset(self, symbol: str) -> str | None:
        return wire.base_and_quote(symbol)[1]

    def base_asset(self, symbol: str) -> str | None:
        return wire.base_and_quote(symbol)[0]

    async def reference_price(self, symbol: str) -> Decimal | None:
        """The mid of the latest quote: the market data stream's (quotes.py) while it vouches
        for one, else the one polled from Alpaca's market data API (stocks: GET
        /v2/stocks/{symbol}/quotes/latest on the account's feed; crypto: GET
        /v1beta3/crypto/us/latest/quotes) or streamed less than ``price_cache_ms`` ago;
        None when there is no quote (risk then denies an order that needs a price). The
        first ask of a symbol subscribes the stream to it."""
        if symbol not in self.assets:
            return None

        async def latest() -> Decimal | None:
            if wire.is_crypto(symbol):
                path, params = "/v1beta3/crypto/us/latest/quotes", {"symbols": symbol}
            else:
                path = f"/v2/stocks/{quote(symbol, safe='')}/quotes/latest"
                params = {"feed": self.config.feed}
            reply = await self._request("GET", path, Call.READ, params=params,
                                        base=self.config.market_data_url(), exact=True)
            return wire.quote_mid(reply.body, symbol)
        if self.config.price_stream:
            kind = "crypto" if wire.is_crypto(symbol) else "stocks"
            return await self.quotes[kind].price(symbol, latest)
        return await self._prices.get(symbol, latest)

    # Minute bars: asked every 15 s, a closed bar is counted within 15 s of its end, for
    # four market data calls a minute per algorithm (the API allows 200 a minute).
    volume_interval_ms = 15_000

    async def traded_volume(self, symbol: str, since: int) -> Volume | None:
        """The market's volume of ``symbol`` (base.VolumeSource) from Alpaca's 1-minute bars
        (stocks: GET /v2/stocks/{symbol}/bars on the account's feed; crypto: GET
        /v1beta3/crypto/us/bars): the bars from ``since`` rounded up to the minute (the
        partial first minute is not counted) that are closed by this adapter's clock, one
        page of at most ``_BARS_LIMIT``. None for a symbol the account does not trade, or
        when Alpaca fails or answers something unreadable (logged)."""
        if symbol not in self.assets:
            return None
        params = {"timeframe": "1Min", "start": wire.rfc3339(wire.minute_up(since)),
                  "limit": str(_BARS_LIMIT)}
        if wire.is_crypto(symbol):
            path = "/v1beta3/crypto/us/bars"
            params["symbols"] = symbol
        else:
            path = f"/v2/stocks/{quote(symbol, safe='')}/bars"
            params["feed"] = self.config.feed
        # Read before asking: a bar closed then was closed when Alpaca built its answer. Read
        # after, a bar that closed in flight would be counted with its volume so far and
        # passed over for good.
        now = self.clock()
        try:
            reply = await self._request("GET", path, Call.READ, params=params,
                                        base=self.config.market_data_url(), exact=True)
        except BrokerError as exc:
            log.info("alpaca %s: traded volume of %s unknown (%s)", self.account, symbol, exc)
            return None
        bars = wire.bars_of(reply.body, symbol)
        found = None if bars is None else wire.closed_volume(bars, since, now)
        if found is None:
            log.info("alpaca %s: traded volume of %s unknown (unreadable bars answer)",
                     self.account, symbol)
        return found

    async def ping(self) -> None:
        await self._json("GET", "/v2/account", Call.READ)

    def usage(self) -> Mapping[str, int]:
        """Requests used in Alpaca's current minute, from its last X-Ratelimit-* headers
        (the shared limiter's ``weight_1m`` window)."""
        return dict(self._usage)

    # -- push -------------------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[BrokerOrder]:
        """Reports from the trade_updates stream: first the account's open orders read over
        REST (the stream has no replay), then every update as it comes. Raises
        ``FeedBroken`` when the stream cannot be opened or breaks (the tracker polls, then
        calls again; this waits ``stream.backoff_s`` first after failures)."""
        if not self.config.trade_updates:
            raise FeedBroken(f"alpaca {self.account}: trade_updates = false", logged=True)
        await asyncio.sleep(stream.backoff_s(self.stream.failures))
        session, keys = self._session, self._keys
        if session is None or keys is None:
            raise self._lost("not started (or closed)")
        try:
            ws = await session.ws_connect(self.config.stream_ws_url(), heartbeat=_HEARTBEAT_S)
        except aiohttp.WSServerHandshakeError as exc:
            raise self._lost(f"cannot connect (HTTP {exc.status})") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._lost(f"cannot connect ({type(exc).__name__})") from None
        try:
            await ws.send_str(stream.auth_message(*keys))
            name, data = await self._receive(ws)
            if not stream.authorized(name, data):
                why = stream.refusal(name, data)
                log.error("alpaca %s: AUTHENTICATION FAILED on the trade_updates stream (%s): "
                          "check the key id and the secret key", self.account, why)
                raise self._lost(f"authentication refused ({why})")
            await ws.send_str(stream.LISTEN)
            name, data = await self._receive(ws)
            if not stream.listening(name, data):
                raise self._lost(f"not listening to trade_updates ({name or 'no answer'})")
            self.stream.up()
            try:
                caught_up = await self._open_now()
            except (BrokerError, RedisError) as exc:
                raise self._lost(f"open orders not readable after connecting ({exc})") from None
            for found in caught_up:
                yield found
            while True:
                msg = await ws.receive()
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break  # closed, closing or an error: the stream broke
                order = stream.update_order(*stream.parse(msg.data))
                if order is not None:
                    update = await self._from_update(order)
                    if update is not None:
                        yield update
            raise self._lost(f"connection closed ({ws.close_code or msg.type.name})")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._lost(f"broke ({type(exc).__name__})") from None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), _CLOSE_S)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse
                       ) -> tuple[str, Mapping[str, Any]]:
        """The next message (the answer to auth or listen), waited for as long as a
        connection may take."""
        msg = await ws.receive(timeout=self.config.connect_timeout_ms / 1000)
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return "", {}
        return stream.parse(msg.data)

    def _lost(self, why: str) -> FeedBroken:
        """The stream is down: told by ``self.stream`` (counted; logged at a low rate), and
        the error the tracker gets (it polls, and calls ``updates`` again)."""
        self.stream.lost(why)
        return FeedBroken(f"alpaca trade_updates stream: {why}", logged=True)

    async def _open_now(self) -> list[BrokerOrder]:
        """What the stream may have missed: a report of each order open at Alpaca, and of
        each open record of ours (this account's) that is not open there any more."""
        reports: list[BrokerOrder] = []
        seen: set[str] = set()
        for order in await self._open_orders():
            if wire.is_oco_leg(order):
                continue  # told with its parent, below (a lookup of our open record)
            cid = str(order["client_order_id"])
            if wire.is_oco(order):
                continue  # its leg only shows nested: looked up below, as not seen
            seen.add(cid)
            reports.append(self._report(order, cid, await self._known(cid)))
        if self.store is None:
            return reports
        ours = [cid for cid in await self.store.due_ids(self.account, None)
                if wire.client_id(cid) not in seen]
        for cid, record in zip(ours, await self.store.load_orders(ours), strict=True):
            if record is None or is_terminal(record.state) or record.broker_order_id is None:
                continue  # ended, or not at Alpaca (yet): the submit step tells it
            try:
                reports.append(await self.get_order(cid, record.spec.symbol))
            except BrokerError as exc:
                log.info("alpaca %s: order %s not looked up after the stream connected (%s); "
                         "the tracker's polling will", self.account, cid, exc)
        return reports

    async def _from_update(self, order: Mapping[str, Any]) -> BrokerOrder | None:
        """A report of a trade update's order; None when it is older than what was told
        (an order's REST reply can overtake its updates) or unreadable."""
        cid = str(order["client_order_id"])
        owner = self._owners.get(str(order["id"]))
        if owner is None and wire.is_oco(order):
            if wire.is_oco_leg(order):
                # The leg of an oco not seen since this process started: the update of its
                # parent (Alpaca ends the other one) or the tracker's polling tells it.
                return None
            owner = cid
        if owner is not None:
            return await self._oco_update(owner, str(order.get("symbol", "")))
        try:
            known = await self._known(cid)
            filled = wire.dec(order.get("filled_qty")) or Decimal(0)
            if filled < sum((f.quantity for f in known), Decimal(0)):
                return None
            return self._report(order, cid, known)
        except (RetryableError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            # One bad update must not end the stream; polling covers its order.
            log.warning("alpaca %s: trade update of %s skipped (%s: %s)", self.account, cid,
                        type(exc).__name__, exc)
            return None

    async def _oco_update(self, client_order_id: str, symbol: str) -> BrokerOrder | None:
        """An update of either order of an oco, told as the whole oco: looked up nested
        (an update shows one order, and the oco's state is both's)."""
        try:
            return await self.get_order(client_order_id, symbol)
        except BrokerError as exc:
            log.info("alpaca %s: oco %s changed but cannot be looked up (%s); the tracker's "
                     "polling will", self.account, client_order_id, exc)
            return None

    # -- reconciliation ---------------------------------------------------------------------

    async def reconcile(self, store: Store) -> list[Mapping[str, Any]]:
        """Alpaca's open orders against our records: each orphan (open there, no record of
        ours) is logged once per process and counted (``orderstream_broker_orphans_total``,
        action ``report``); nothing is cancelled or adopted. Returns the orphans."""
        remote = await self._open_orders()
        ids = sorted({str(o["client_order_id"]) for o in remote})
        local = dict(zip(ids, await store.load_orders(ids), strict=True))
        found = self.orphans = reconcile.orphans(remote, local)
        for orphan in found:
            if str(orphan.get("id")) in self._reported:
                continue
            log.warning("alpaca %s: orphan order %s is open at Alpaca with no record of "
                        "ours; reported only", self.account, reconcile.describe(orphan))
            if self.metrics is not None:
                self.metrics.broker_orphans.labels(self.account, "report").inc()
        # Those no longer open are forgotten: the memory of reported ones stays small.
        self._reported = {str(o.get("id")) for o in found}
        log.info("alpaca %s: reconciled: %d open at Alpaca, %d orphans", self.account,
                 len(remote), len(found))
        return found

    async def _reconcile_periodically(self, store: Store) -> None:
        """At start, then every ``reconcile_interval_ms``: orders placed on the account by
        others while we run are orphans too."""
        interval_s = self.config.reconcile_interval_ms / 1000
        while True:
            try:
                await self.reconcile(store)
            except (BrokerError, RedisError) as exc:
                log.warning("alpaca %s: reconciliation failed (%s); trying again in %.0f s",
                            self.account, exc, interval_s)
            except Exception:
                log.exception("alpaca %s: reconciliation failed", self.account)
            await asyncio.sleep(interval_s)

    async def _open_orders(self) -> list[Mapping[str, Any]]:
        """Alpaca's open orders (GET /v2/orders?status=open, the first 500), those with a
        client id."""
        reply = await self._json("GET", "/v2/orders", Call.READ,
                                 params={"status": "open", "limit": str(_OPEN_ORDERS_LIMIT),
                                         "direction": "asc"})
        return [o for o in (reply if isinstance(reply, list) else [])
                if isinstance(o, Mapping) and "id" in o and o.get("client_order_id")]

    # -- internals --------------------------------------------------------------------------

    async def _by_client_id(self, client_order_id: str) -> Any:
        return await self._json("GET", "/v2/orders:by_client_order_id", Call.LOOKUP,
                                params={"client_order_id": wire.client_id(client_order_id)})

    async def _nested(self, reply: Any) -> Any:
        """``reply`` with its legs: an oco's parent read again nested when the answer did
        not nest them (Alpaca documents ``nested`` for GET /v2/orders/{id}, not for the
        lookup by client id)."""
        if (isinstance(reply, Mapping) and "id" in reply and wire.is_oco(reply)
                and wire.oco_orders(reply) is None):
            return await self._order_nested(str(reply["id"]))
        return reply

    async def _order_nested(self, order_id: str) -> Any:
        return await self._json("GET", f"/v2/orders/{quote(order_id, safe='')}", Call.LOOKUP,
                                params={"nested": "true"})

    async def _known(self, client_order_id: str) -> list[Fill]:
        """The fills told so far of an order: our record's, or this process's memory when it
        goes further than the record (a report of its own not written yet). A memory
        without one of the record's fills is stale (another worker told a rise since): the
        next fill derived from it would count a quantity the record already has."""
        known = self._fills.get(client_order_id)
        if self.store is None:
            return known or []
        try:
            (record,) = await self.store.load_orders([client_order_id])
        except RedisError as exc:
            # Without them a fill would be told twice: the lookup is tried again later.
            raise RetryableError(f"alpaca {self.account}: record of {client_order_id} not "
                                 f"readable ({type(exc).__name__}); its fills cannot be "
                                 "told") from None
        recorded = [] if record is None else list(record.fills)
        if known is not None and wire.extends(known, recorded):
            return known
        return recorded

    def _report(self, reply: Any, client_order_id: str, known: list[Fill]) -> BrokerOrder:
        if not isinstance(reply, Mapping) or "id" not in reply:
            raise RetryableError(f"alpaca {self.account}: an order answer without an id")
        found = wire.report(reply, client_order_id, known)
        if wire.is_oco(reply):
            self._remember_oco(reply, client_order_id, found.status)
        if found.fills:
            self._fills.pop(client_order_id, None)
            self._fills[client_order_id] = list(found.fills)
            while len(self._fills) > _FILLS_MEMORY:
                del self._fills[next(iter(self._fills))]
        return found

    def _remember_oco(self, reply: Mapping[str, Any], client_order_id: str,
                      status: BrokerStatus) -> None:
        """Whose the oco's orders are, while it is open (its leg's updates find us by it)."""
        ids = [str(o["id"]) for o in wire.oco_orders(reply) or [reply]]
        if status in FINAL_BROKER_STATUSES:
            for oid in ids:
                self._owners.pop(oid, None)
            return
        self._owners.update(dict.fromkeys(ids, client_order_id))
        while len(self._owners) > _OCO_MEMORY:
            del self._owners[next(iter(self._owners))]

    async def _json(self, method: str, path: str, call: Call, **kwargs: Any) -> Any:
        reply = await self._request(method, path, call, **kwargs)
        if reply.body is None:
            text = f"alpaca: {method} {path} answered {reply.status} without a JSON body"
            raise UnknownOutcome(text) if call is Call.SUBMIT else RetryableError(text)
        return reply.body

    async def _request(self, method: str, path: str, call: Call, *, base: str | None = None,
                       exact: bool = False, **kwargs: Any) -> _Reply:
        """``base``: another host than the trading API's (market data); ``exact``: decode
        JSON numbers as Decimal (quote prices are numbers, not strings)."""
        session = self._session
        if session is None:
            raise RetryableError(f"alpaca {self.account}: not started (or closed)")
        sends = call in (Call.SUBMIT, Call.CANCEL)
        try:
            async with session.request(method, (base or self.config.rest_url()) + path,
                                       allow_redirects=False, **kwargs) as response:
                raw = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items()}
                status = response.status
        except aiohttp.ClientConnectorError as exc:  # refused before anything was sent
            raise RetryableError(f"alpaca unreachable: {type(exc).__name__}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            text = f"alpaca: no reply to {method} {path} ({type(exc).__name__})"
            raise UnknownOutcome(text) if sends else RetryableError(text) from None
        if base is None:  # the market data API's limits are its own, not the trading API's
            self._note(headers)
        try:
            body = (_exact.decode(raw) if exact else msgspec.json.decode(raw)) if raw else None
        except msgspec.DecodeError:
            body = raw[:200].decode(errors="replace")
        if 200 <= status < 300:
            return _Reply(status=status, body=body if not isinstance(body, str) else None,
                          headers=headers)
        error = wire.map_error(status, body, call,
                               retry_after_s=wire.retry_after(headers, time.time()))
        if isinstance(error, AuthenticationFailed):
            log.error("alpaca %s: AUTHENTICATION FAILED on %s %s (%s): check the key id, "
                      "the secret key and the paper/live setting", self.account, method,
                      path, error)
        raise error

    def _note(self, headers: Mapping[str, str]) -> None:
        """``headers``: with lower-case names."""
        limit = _int(headers.get("x-ratelimit-limit"))
        left = _int(headers.get("x-ratelimit-remaining"))
        if limit is not None and left is not None:
            self._usage["weight_1m"] = max(0, limit - left)


_exact = msgspec.json.Decoder(float_hook=Decimal)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
