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

Native lists (``native_lists``, bracket.py): the entry of a contingent list Alpaca can
take is sent with its exit as one order of class bracket / oto; its legs, which carry
Alpaca's client ids, are nobody's until the workers' exit ``<entry>-x1`` adopts them
(``_adopt``: found through the entry, nested); the adopted exit is then looked up and
cancelled through its entry (its record's Alpaca id names it), its legs' updates are its.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
from ...infra.tasks import cancel_and_wait
from ...model.order import Order
from ...model.states import is_terminal
from ..base import (
    FINAL_BROKER_STATUSES,
    AuthenticationFailed,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    FeedBroken,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RetryableError,
    UnknownOutcome,
    Volume,
)
from ..native_exits import sent_natively
from ..native_lists import Adoption, adoption, entry_of, first_exit_id
from ..prices import PriceCache
from ..stream_health import StreamHealth
from . import bracket, reconcile, stream, wire
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
        # Native lists (bracket.py): the legs of entries sent as a bracket / oto, by Alpaca
        # id -> the entry (their updates are no order of ours until an exit adopts them),
        # and the adopted exits -> the entry's Alpaca id (their legs are found from it).
        self._native_legs: dict[str, str] = {}
        self._native_entries: dict[str, None] = {}  # client ids of entries sent so
        self._adopted: dict[str, str] = {}
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
            # Cancelled again until it ends: a cancel that lands inside a Redis command of
            # the reconciliation can be swallowed (infra/tasks.py), and awaiting the task
            # then hung the close for ever.
            await cancel_and_wait([task], f"alpaca {self.account} reconciliation")
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
        entry = entry_of(order)
        if entry is not None:
            # Before any check: an exit Alpaca already holds (the legs of its entry's
            # bracket) is taken as it is, and must never be refused into a second one.
            adopted = await self._adopt(client_order_id, entry, order)
            if adopted is not None:
                return adopted
        try:
            self.check(order)
        except ContractError as exc:
            raise PermanentError(f"refused before sending to Alpaca: {exc}") from None
        if self.config.native_lists and bracket.native_exit(
                client_order_id, order, reference=self._prices.last(order.symbol),
                extended_hours=self.config.extended_hours) is not None:
            native = await self._submit_native(client_order_id, order)
            if native is not None:
                return native
        body = wire.order_body(client_order_id, order,
                               extended_hours=self.config.extended_hours)
        reply = await self._json("POST", "/v2/orders", Call.SUBMIT, json=body)
        # A new order: no fills told before (a resend follows only an error that proves
        # the first send did nothing).
        return self._report(reply, client_order_id, [])

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        found, entry = await self._find(client_order_id)
        if entry is not None:
            return (await self._adopted_now(client_order_id, entry))[0]
        return self._report(found, client_order_id, await self._known(client_order_id))

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        found, entry = await self._find(client_order_id)
        if entry is not None:
            return await self._cancel_adopted(client_order_id, entry)
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

    async def _find(self, client_order_id: str) -> tuple[Any, str | None]:
        """Our order at Alpaca: its order object (an oco's nested), or for an exit that
        adopted the legs of its entry's bracket (which Alpaca knows by its ids only, never
        by ours) None and the entry's Alpaca id, from memory or from the exit's record."""
        entry = self._adopted.get(client_order_id)
        if entry is not None:
            return None, entry
        try:
            return await self._nested(await self._by_client_id(client_order_id)), None
        except OrderNotFound:
            record = await self._record(client_order_id)
            entry = bracket.adopted_entry(None if record is None else record.broker_order_id)
            if entry is None:
                raise
            self._remember_adopted(client_order_id, entry)
            return None, entry

    async def _cancel_oco(self, found: Mapping[str, Any], client_order_id: str,
                          known: list[Fill]) -> BrokerOrder:
        """Cancelling one order of an oco cancels the rest of it at Alpaca (orders.md:
        "If any one of the orders is canceled, any remaining open order in the group is
        canceled"): the parent while it is open, else its leg (the stop triggered, and
        Alpaca ended the take-profit). One that ends between our read and the DELETE is
        read again once and the other one tried."""
        parent = str(found["id"])

        async def reread() -> Sequence[Mapping[str, Any]]:
            again = await self._order_nested(parent)
            return wire.oco_orders(again) or [again]
        await self._cancel_group(wire.oco_orders(found) or [found], reread)
        after = await self._order_nested(parent)
        return self._report(after, client_order_id, self._fills.get(client_order_id, known))

    async def _cancel_group(self, orders: Sequence[Mapping[str, Any]],
                            reread: Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]
                            ) -> None:
        """DELETE the first open order of a group (an oco, a bracket's legs): Alpaca
        cancels the rest of it. One that ends between our read and the DELETE is read
        again (``reread``) once and the next one tried."""
        for attempt in range(2):
            working = [o for o in orders if wire.status_of(o) not in FINAL_BROKER_STATUSES]
            if not working:
                return
            order_id = quote(str(working[0]["id"]), safe="")
            try:
                await self._request("DELETE", f"/v2/orders/{order_id}", Call.CANCEL)
                return
            except NotCancellable:
                if attempt:
                    raise
                orders = await reread()

    # -- native lists: an entry with its exit as one bracket / oto (bracket.py) -------------

    async def _submit_native(self, client_order_id: str, order: OrderSpec
                             ) -> BrokerOrder | None:
        """The entry ``order`` sent as a bracket (both levels) or oto (one): its own report
        (the entry's, marked ``native_exits``). None when Alpaca refused it outright (a
        4xx: nothing placed): the caller sends the entry as a plain order, its exits then
        placed by the workers as anywhere else. An unknown outcome is the entry's, looked
        up by its client id as any order's."""
        body = bracket.body(client_order_id, order)
        # Known before sending: its own updates can overtake the answer.
        self._native_entries[client_order_id] = None
        while len(self._native_entries) > _OCO_MEMORY:
            del self._native_entries[next(iter(self._native_entries))]
        try:
            reply = await self._json("POST", "/v2/orders", Call.SUBMIT, json=body)
        except (UnknownOutcome, AuthenticationFailed):
            raise
        except PermanentError as exc:
            log.warning("alpaca %s: the entry %s was refused as a %s (%s); sent as a plain "
                        "order, its exits placed by the workers", self.account,
                        client_order_id, body["order_class"], exc)
            return None
        self._remember_legs(reply, client_order_id)
        log.info("alpaca %s: entry %s sent as a %s: Alpaca activates its exit %s once it has "
                 "completely filled", self.account, client_order_id, body["order_class"],
                 first_exit_id(client_order_id))
        return self._report(reply, client_order_id, [])

    def _remember_legs(self, entry: Mapping[str, Any], client_order_id: str) -> None:
        """The legs of an entry's answer (nested), whose updates are nobody's yet."""
        for leg in bracket.legs_of(entry) or []:
            self._native_legs[str(leg["id"])] = client_order_id
        while len(self._native_legs) > _OCO_MEMORY:
            del self._native_legs[next(iter(self._native_legs))]

    def _remember_adopted(self, client_order_id: str, entry_id: str) -> None:
        self._adopted[client_order_id] = entry_id
        while len(self._adopted) > _OCO_MEMORY:
            del self._adopted[next(iter(self._adopted))]

    def _forget_legs(self, legs: Sequence[Mapping[str, Any]]) -> None:
        for leg in legs:
            self._native_legs.pop(str(leg["id"]), None)

    async def _sent_natively(self, entry: str) -> bool:
        """Whether the entry may have been sent as a bracket (native_exits.py)."""
        return await sent_natively(self.config.native_lists, self.store, entry,
                                   f"alpaca {self.account}")

    async def _entry_legs(self, entry: str
                          ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]] | None:
        """The entry's order object, read nested, and its legs (the take-profit first);
        None when no bracket / oto is there under its client id."""
        try:
            found = await self._by_client_id(entry)
        except OrderNotFound:
            return None
        if not isinstance(found, Mapping) or "id" not in found or not bracket.is_native(found):
            return None
        nested = await self._order_nested(str(found["id"]))
        legs = bracket.legs_of(nested) if isinstance(nested, Mapping) else None
        return None if legs is None else (nested, legs)

    async def _adopt(self, client_order_id: str, entry: str, order: OrderSpec
                     ) -> BrokerOrder | None:
        """An exit of ``entry``'s list arriving to be placed: the legs of the entry's
        bracket, looked up first, become it (``native_lists.adoption``): adopted as this
        exit, never sent again; or cancelled first (a capped or later exit) and None; or
        none working and None: the exit is placed as usual. A leg that traded and is not
        this exit: refused (``PermanentError``), never two exits for one position."""
        if not await self._sent_natively(entry):
            return None
        found = await self._entry_legs(entry)
        if found is None:
            return None
        nested, legs = found
        if wire.status_of(nested) not in FINAL_BROKER_STATUSES:
            # Its legs are held until it has completely filled, yet its exit is due.
            raise RetryableError(f"alpaca: the legs of {entry} are not active yet (the "
                                 "entry is working)")
        traded = bracket.traded(legs)
        held = bracket.held(legs)
        verdict = adoption(client_order_id, entry, order.quantity, held=held, traded=traded,
                           ended=all(wire.status_of(leg) in FINAL_BROKER_STATUSES
                                     for leg in legs))
        if verdict is Adoption.ADOPT and not bracket.fits(legs, order):
            verdict = Adoption.REFUSE if traded else Adoption.REPLACE
        if verdict is Adoption.PLACE:
            self._forget_legs(legs)
            log.info("alpaca %s: the legs of %s ended unfilled (with it, or cancelled); %s is "
                     "placed", self.account, entry, client_order_id)
            return None
        if verdict is Adoption.ADOPT:
            if held != order.quantity:
                log.warning("alpaca %s: the legs of %s hold %s and have traded; taken as %s "
                            "for %s as they are", self.account, entry, held, client_order_id,
                            order.quantity)
            log.info("alpaca %s: exit %s is the legs Alpaca placed for %s: taken as them, "
                     "not sent again", self.account, client_order_id, entry)
            self._forget_legs(legs)
            self._remember_adopted(client_order_id, str(nested["id"]))
            return self._adopted_report(client_order_id, nested, legs,
                                        await self._known(client_order_id))
        if verdict is Adoption.REFUSE:
            log.error("alpaca %s: the legs of %s have traded, and %s is not them: not placed; "
                      "check the position", self.account, entry, client_order_id)
            raise PermanentError(f"the native exit of {entry} at Alpaca has traded: "
                                 f"{client_order_id} is not placed")
        await self._cancel_legs(str(nested["id"]), legs)
        after = await self._entry_legs(entry)
        left = [] if after is None else after[1]
        if bracket.traded(left):
            raise PermanentError(f"the native exit of {entry} traded while being replaced: "
                                 f"{client_order_id} is not placed")
        if any(wire.status_of(leg) not in FINAL_BROKER_STATUSES for leg in left):
            raise RetryableError(f"alpaca: the legs of {entry} are still open after their "
                                 "cancel")
        self._forget_legs(legs)
        log.warning("alpaca %s: the legs of %s (%s) cancelled: %s for %s is placed instead",
                    self.account, entry, held, client_order_id, order.quantity)
        return None

    async def _cancel_legs(self, entry_id: str, legs: Sequence[Mapping[str, Any]]) -> None:
        """Cancel a bracket's open legs (the entry has ended): one DELETE, Alpaca cancels
        the other. Nothing of ours was sent by it, so an unknown outcome is only a reason
        to look again later."""
        try:
            await self._cancel_group(legs, self._legs_reader(entry_id))
        except (UnknownOutcome, NotCancellable) as exc:
            # No answer, or a leg that ended meanwhile (filled?): the legs are read again
            # at the next attempt, which sees what they did.
            raise RetryableError(f"alpaca: the legs of {entry_id} not cancelled ({exc}); "
                                 "looked at again") from None

    def _adopted_report(self, client_order_id: str, entry: Mapping[str, Any],
                        legs: Sequence[Mapping[str, Any]], known: list[Fill]) -> BrokerOrder:
        """The adopted exit's report from its legs; while it is open, their Alpaca ids are
        its own (their trade updates find it by them)."""
        found = bracket.exit_report(client_order_id, entry, legs, known)
        ids = [str(leg["id"]) for leg in legs]
        if found.status in FINAL_BROKER_STATUSES:
            for oid in ids:
                self._owners.pop(oid, None)
        else:
            self._owners.update(dict.fromkeys(ids, client_order_id))
        self._remember_fills(client_order_id, found)
        return found

    async def _adopted_now(self, client_order_id: str, entry_id: str
                           ) -> tuple[BrokerOrder, list[Mapping[str, Any]]]:
        """An adopted exit as its legs are now, and the legs."""
        nested = await self._order_nested(entry_id)
        legs = bracket.legs_of(nested) if isinstance(nested, Mapping) else None
        if legs is None:
            raise RetryableError(f"alpaca: the entry {entry_id} of {client_order_id} shows "
                                 "no legs")
        known = await self._known(client_order_id)
        return self._adopted_report(client_order_id, nested, legs, known), legs

    async def _cancel_adopted(self, client_order_id: str, entry_id: str) -> BrokerOrder:
        now, legs = await self._adopted_now(client_order_id, entry_id)
        if now.status is BrokerStatus.CANCELLED:
            return now
        if now.status in FINAL_BROKER_STATUSES:
            raise NotCancellable(f"order {client_order_id} is {now.status} at Alpaca")
        await self._cancel_group(legs, self._legs_reader(entry_id))
        return (await self._adopted_now(client_order_id, entry_id))[0]

    def _legs_reader(self, entry_id: str
                     ) -> Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]:
        """What reads the legs of the entry ``entry_id`` (its Alpaca id) again."""
        async def reread() -> Sequence[Mapping[str, Any]]:
            return bracket.legs_of(await self._order_nested(entry_id)) or []
        return reread

    async def end_native_exits(self, entry: str, symbol: str, oco: bool) -> bool:
        """Called by the lists watcher before it ends the list of an entry sent natively
        whose exit was never taken as an order of ours (the list was cancelled, or no
        position is left to protect): the legs still open at Alpaca are cancelled, so
        that none is left there untracked. Whether none is open now (False: Alpaca could
        not tell or refused; the watcher asks again at its next pass)."""
        try:
            found = await self._entry_legs(entry)
            if found is None:
                return True
            nested, legs = found
            if all(wire.status_of(leg) in FINAL_BROKER_STATUSES for leg in legs):
                self._forget_legs(legs)
                return True
            await self._cancel_legs(str(nested["id"]), legs)
            after = await self._entry_legs(entry)
        except BrokerError as exc:
            log.warning("alpaca %s: the legs of %s could not be cancelled (%s); tried again at "
                        "the next pass", self.account, entry, exc)
            return False
        left = [] if after is None else after[1]
        if any(wire.status_of(leg) not in FINAL_BROKER_STATUSES for leg in left):
            return False
        if bracket.traded(left):
            log.error("alpaca %s: the legs of %s traded and are no order of ours: check the "
                      "position", self.account, entry)
        self._forget_legs(legs)
        log.warning("alpaca %s: the legs of %s cancelled: its list ended without an exit of "
                    "ours", self.account, entry)
        return True

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
            if wire.is_oco_leg(order) or await self._leg_not_ours(order):
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
        try:
            if owner is None and await self._leg_not_ours(order):
                # A leg of an entry's bracket no exit has adopted yet: no order of ours
                # (once adopted, the exit's lookups tell it).
                return None
        except RetryableError:
            return None  # polling covers it
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

    async def _leg_not_ours(self, order: Mapping[str, Any]) -> bool:
        """Whether an order object is a leg of a bracket / oto and not (yet, in this
        process) an exit of ours: a leg carries a client id of Alpaca's, which has no
        record of ours (an entry's own has one); an adopted leg is its exit's
        (``_owners``), told by the exit's lookups. Without a record store, any bracket
        / oto order this process did not send as an entry."""
        if not bracket.is_native(order):
            return False
        oid, cid = str(order["id"]), str(order["client_order_id"])
        if oid in self._native_legs or oid in self._owners:
            return True
        if cid in self._native_entries:
            return False
        # A leg's update can overtake its entry's answer (which names the legs): without
        # our records, whatever this process did not send is taken for a leg.
        return self.store is None or await self._record(cid) is None

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
        found = self.orphans = await self._not_legs(reconcile.orphans(remote, local), store)
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

    async def _not_legs(self, found: list[Mapping[str, Any]], store: Store
                        ) -> list[Mapping[str, Any]]:
        """The orphans less the legs of our entries' brackets (their client ids are
        Alpaca's): those this process knows, and those the account's latest orders, read
        nested, show under an entry we have a record of (a bracket's legs are listed on
        their own, with nothing naming their entry)."""
        legs = [o for o in found if bracket.is_native(o)]
        known = {oid for oid in (str(o["id"]) for o in legs)
                 if oid in self._native_legs or oid in self._owners}
        if len(known) < len(legs):
            nested = await self._json("GET", "/v2/orders", Call.READ, params={
                "status": "all", "nested": "true", "direction": "desc",
                "limit": str(_OPEN_ORDERS_LIMIT)})
            entries = reconcile.entries_of_legs(nested if isinstance(nested, list) else [])
            ids = sorted(set(entries.values()))
            ours = {cid for cid, record in zip(ids, await store.load_orders(ids), strict=True)
                    if record is not None}
            known |= {oid for oid, cid in entries.items() if cid in ours}
        return [o for o in found if str(o["id"]) not in known]

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
        # Without them a fill would be told twice: unreadable, the lookup is tried later.
        record = await self._record(client_order_id)
        recorded = [] if record is None else list(record.fills)
        if known is not None and wire.extends(known, recorded):
            return known
        return recorded

    async def _record(self, client_order_id: str) -> Order | None:
        """Our record of an order (None: none, or no store)."""
        if self.store is None:
            return None
        try:
            (record,) = await self.store.load_orders([client_order_id])
        except RedisError as exc:
            raise RetryableError(f"alpaca {self.account}: record of {client_order_id} not "
                                 f"readable ({type(exc).__name__})") from None
        return record

    def _report(self, reply: Any, client_order_id: str, known: list[Fill]) -> BrokerOrder:
        if not isinstance(reply, Mapping) or "id" not in reply:
            raise RetryableError(f"alpaca {self.account}: an order answer without an id")
        found = wire.report(reply, client_order_id, known)
        if wire.is_oco(reply):
            self._remember_oco(reply, client_order_id, found.status)
        if bracket.is_native(reply) and reply.get("client_order_id") == wire.client_id(
                client_order_id):
            # The entry of a bracket / oto, however it is looked up: its record must say
            # so (the lists watcher cancels legs left when its list ends).
            found = msgspec.structs.replace(found, native_exits=True)
        self._remember_fills(client_order_id, found)
        return found

    def _remember_fills(self, client_order_id: str, found: BrokerOrder) -> None:
        if found.fills:
            self._fills.pop(client_order_id, None)
            self._fills[client_order_id] = list(found.fills)
            while len(self._fills) > _FILLS_MEMORY:
                del self._fills[next(iter(self._fills))]

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
