"""``EmulatingBroker``: conditional orders for a broker that has no native one.

The outermost wrapper of an adapter. An order whose type the adapter cannot take
(``NeedsEmulation``: a trailing stop, an if-touched order, or a variant of one it cannot
take exactly) is checked in the form it will be sent in once triggered (model/emulation.py
``template``) and, on submit, held: one script (infra/lua/emulation.lua) takes its send
token, as a send would, marks its record ``emulation: held`` with the emulator's state and
adds it to the account's index (``Keys.emulated``). Nothing reaches the broker; the order is
``accepted``, its result says ``emulated``. The account's emulator
(background/emulator.py) watches it and, once triggered, sends the plain order under the
same client id through the same guards (rate limits, breaker, a send token of its own).

Afterwards the order is the broker's, looked up and cancelled there by its client id. Until
then, a lookup answers from the record (held: working; cancelled while held: cancelled;
its release refused: cancelled, with the reason) and a cancel of a held order
is one compare-and-set against its trigger: whichever comes first wins, the other does
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis

from producer.contract import ContractError, OrderSpec, encode, zero
from producer.keys import Keys

from ..infra.clock import wall_clock_ms
from ..model.emulation import (
    GTD_EXPIRED,
    UNEMULATED_TIME_IN_FORCE,
    Emulation,
    emulable,
    first_seen,
    templates,
)
from .base import (
    Broker,
    BrokerError,
    BrokerOrder,
    BrokerStatus,
    NeedsEmulation,
    OrderNotFound,
    RetryableError,
    Volume,
    get_all,
)
from .native_exits import adopter, entry_of
from .paper.config import PaperAccount
from .sending import _refusal, _tokens
from .wrapper import BrokerWrapper, unwrap

log = logging.getLogger(__name__)

SCRIPT = (resources.files("executor.infra") / "lua" / "emulation.lua").read_text()


def tick_of(broker: Broker, symbol: str) -> Decimal | None:
    """The adapter's price tick for ``symbol`` when it says (``tick_size``), else None."""
    tick: Callable[[str], Decimal | None] | None = getattr(broker, "tick_size", None)
    return None if tick is None else tick(symbol)


def step_of(broker: Broker, symbol: str) -> Decimal | None:
    """The adapter's quantity step for ``symbol`` when it says (``step_size``), else None."""
    step: Callable[[str], Decimal | None] | None = getattr(broker, "step_size", None)
    return None if step is None else step(symbol)


def reports_volume(broker: Broker) -> bool:
    """Whether the adapter behind ``broker``'s guards reports traded volume
    (``VolumeSource``), which an algorithm's participation cap needs."""
    return getattr(unwrap(broker), "traded_volume", None) is not None


async def traded_volume(broker: Broker, symbol: str, since: int) -> Volume | None:
    """The adapter's ``traded_volume`` (base.VolumeSource); None when it has none."""
    own: Callable[[str, int], Awaitable[Volume | None]] | None = getattr(
        broker, "traded_volume", None)
    return None if own is None else await own(symbol, since)


async def end_native_exits(broker: Broker, entry: str, symbol: str, oco: bool) -> bool:
    """The adapter's ``end_native_exits`` (an adapter that sends contingent lists natively:
    binance/broker.py, alpaca/broker.py): whether nothing of the entry's native exit is
    left open at the broker; True at an adapter without native lists."""
    own: Callable[[str, str, bool], Awaitable[bool]] | None = getattr(
        unwrap(broker), "end_native_exits", None)
    return True if own is None else await own(entry, symbol, oco)


def lead_prices(broker: Broker, leads: bool) -> None:
    """Tell the adapter whether this worker holds the account's emulator lease (its
    ``lead_prices``: Alpaca streams prices only on the lease holder, as it allows one market
    data connection per key); nothing at an adapter without the hook. Never awaits: what
    the adapter does about it (a connection opened or closed) is done in the background."""
    own: Callable[[bool], None] | None = getattr(unwrap(broker), "lead_prices", None)
    if own is not None:
        own(leads)


def volume_interval_ms(broker: Broker) -> int:
    """How often the adapter's volume is worth asking (``volume_interval_ms``: its buckets
    close that often), else once a second."""
    every: int | None = getattr(broker, "volume_interval_ms", None)
    return every if every is not None else 1_000


def emulating(broker: Broker, redis: aioredis.Redis, keys: Keys) -> Broker:
    """``broker`` with the emulator in front, unless it has nothing to emulate: a paper
    exchange takes every conditional type itself (unless ``emulate_conditional``), and
    wrapping it would only cost its lookups and cancels a Redis read each."""
    config = getattr(unwrap(broker), "config", None)
    if isinstance(config, PaperAccount) and not config.emulate_conditional:
        return broker
    return EmulatingBroker(broker, redis, keys)


async def trigger_price(broker: Broker, symbol: str) -> Decimal | None:
    """The price the emulator triggers on: the adapter's ``trigger_price`` when it has one
    (the paper exchange: the price its own triggers and fills use), else its reference
    price (last or mid, from its cache and source). None: no fresh price."""
    own: Callable[[str], Awaitable[Decimal | None]] | None = getattr(
        broker, "trigger_price", None)
    if own is not None:
        return await own(symbol)
    return await broker.reference_price(symbol)


async def trigger_prices(broker: Broker, symbols: Sequence[str]
                         ) -> dict[str, Decimal | None]:
    """``trigger_price`` of several symbols, in one call where the adapter prices many at
    once (``reference_prices``: Binance's every-ticker call)."""
    many: Callable[[Sequence[str]], Awaitable[dict[str, Decimal | None]]] | None = getattr(
        broker, "reference_prices", None)
    if many is not None and len(symbols) > 1:
        return await many(symbols)
    return {symbol: await trigger_price(broker, symbol) for symbol in symbols}


class EmulatingBroker(BrokerWrapper):
    """A broker adapter (with its guards) whose missing conditional types are emulated."""

    def __init__(self, inner: Broker, redis: aioredis.Redis, keys: Keys,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        super().__init__(inner)
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.script = redis.register_script(SCRIPT)
        if getattr(inner, "submit_many", None) is not None:
            self.submit_many = self._submit_many

    # -- new orders ------------------------------------------------------------------------

    def emulates(self, order: OrderSpec) -> bool:
        """Whether the adapter leaves this order to the emulator (its check says so)."""
        if not emulable(order):
            return False
        try:
            self.inner.check(order)
        except NeedsEmulation:
            return True
        return False

    def passes(self, order: OrderSpec) -> bool:
        return not self.emulates(order)

    def check(self, order: OrderSpec) -> OrderSpec | None:
        try:
            return self.inner.check(order)
        except NeedsEmulation:
            if not emulable(order):
                raise
        if order.time_in_force in UNEMULATED_TIME_IN_FORCE:
            raise ContractError(f"time_in_force {order.time_in_force} is not supported for "
                                f"a {order.type} order at this broker: it is emulated, and the "
                                "worker does not keep the broker's trading day or auctions "
                                "(use gtc or gtd)", "time_in_force")
        # What the broker will be sent: its refusal names the field as for any order.
        quantity = order.quantity
        for release in templates(order):
            adjusted = self.inner.check(release)
            if adjusted is not None and adjusted.quantity != order.quantity:
                quantity = adjusted.quantity
        if quantity != order.quantity:
            return msgspec.structs.replace(order, quantity=quantity)
        return None

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        if not self.emulates(order):
            return await self.inner.submit(client_order_id, order)
        return await self._adopt_or_hold(client_order_id, order)

    async def _submit_many(self, orders: Sequence[tuple[str, OrderSpec]]
                           ) -> list[BrokerOrder | BrokerError]:
        out: list[BrokerOrder | BrokerError | None] = [None] * len(orders)
        native = [i for i, (_, spec) in enumerate(orders) if not self.emulates(spec)]
        if native:
            many = self.inner.submit_many  # type: ignore[attr-defined]
            for i, outcome in zip(native, await many([orders[i] for i in native]),
                                  strict=True):
                out[i] = outcome
        for i, (cid, spec) in enumerate(orders):
            if out[i] is None:
                try:
                    out[i] = await self._adopt_or_hold(cid, spec)
                except BrokerError as exc:
                    out[i] = exc
        return [o for o in out if o is not None]

    async def _adopt_or_hold(self, cid: str, order: OrderSpec) -> BrokerOrder:
        """An exit of a list the adapter may hold natively (native_exits.py) is first
        offered to it, under this delivery's send token (taken as a hold takes it, holding
        nothing): what the broker holds is taken as it, and the emulator never holds a
        copy. Else (nothing there, or replaced by the adapter) held as any order."""
        adopt = adopter(self.inner)
        if adopt is not None and entry_of(order) is not None:
            took = await self.script(keys=[self.keys.order(cid),
                                           self.keys.emulated(order.account)],
                                     args=["hold", _tokens([cid])[cid], "", cid])
            if took != 1:
                raise _refusal(cid, int(took))
            adopted = await adopt(cid, order)
            if adopted is not None:
                return adopted
        return await self._hold(cid, order)

    async def _hold(self, cid: str, order: OrderSpec) -> BrokerOrder:
        token = _tokens([cid])[cid]
        ref = await trigger_price(self.inner, order.symbol)
        held, refused = first_seen(order, ref, self.clock(), tick_of(self.inner, order.symbol))
        # A refusal takes the token too (an empty state holds nothing): the order's outcome
        # is this delivery's, and no other may hold it meanwhile.
        took = await self.script(keys=[self.keys.order(cid), self.keys.emulated(order.account)],
                                 args=["hold", token, "" if refused else encode(held), cid])
        if took != 1:
            raise _refusal(cid, int(took))
        status = BrokerStatus.REJECTED if refused else BrokerStatus.NEW
        return BrokerOrder(client_order_id=cid, broker_order_id="", symbol=order.symbol,
                           status=status, quantity=order.quantity or zero(),
                           reason=refused, updated_at=self.clock(), emulated=True)

    # -- orders already made ---------------------------------------------------------------

    async def _emulation(self, cid: str) -> tuple[Emulation | None, list[Any]]:
        fields: list[Any] = await self.redis.hmget(self.keys.order(cid), "emulation", "held",
                                                   "release_error")
        value = fields[0]
        return (None if value is None else Emulation(value.decode())), fields

    async def get_many(self, orders: Sequence[tuple[str, OrderSpec]]
                       ) -> list[BrokerOrder | BaseException]:
        """The orders of a type the emulator never takes (``emulable``: their record has no
        emulation to read) looked up in one call of the adapter's where it can; each
        other one as ``get_order`` looks it up."""
        plain = [k for k, (_, spec) in enumerate(orders) if not emulable(spec)]
        if not plain:
            return await super().get_many(orders)
        rest = [k for k, (_, spec) in enumerate(orders) if emulable(spec)]
        answers: dict[int, BrokerOrder | BaseException] = {}
        answers.update(zip(plain, await get_all(self.inner, [orders[k] for k in plain]),
                           strict=True))
        answers.update(zip(rest, await super().get_many([orders[k] for k in rest]),
                           strict=True))
        return [answers[k] for k in range(len(orders))]

    async def get_order(self, client_order_id: str, symbol: str) -> BrokerOrder:
        state, fields = await self._emulation(client_order_id)
        if state is None or state is Emulation.RELEASED:
            return await self.inner.get_order(client_order_id, symbol)
        if state is Emulation.TRIGGERED:
            try:
                return await self.inner.get_order(client_order_id, symbol)
            except OrderNotFound:
                return self._report(client_order_id, symbol, BrokerStatus.NEW)
        if state is Emulation.CANCELLED:
            return self._report(client_order_id, symbol, BrokerStatus.CANCELLED)
        if state is Emulation.EXPIRED:
            return self._report(client_order_id, symbol, BrokerStatus.EXPIRED, GTD_EXPIRED)
        if state is Emulation.REFUSED:
            # Cancelled, not rejected: the order was accepted (held) before its release
            # was refused, and an accepted order is never rejected (model/states.py).
            error = fields[2].decode() if fields[2] is not None else None
            return self._report(client_order_id, symbol, BrokerStatus.CANCELLED, error)
        return self._report(client_order_id, symbol, BrokerStatus.NEW)

    async def cancel(self, client_order_id: str, symbol: str) -> BrokerOrder:
        account = self.account
        done, now = await self.script(keys=[self.keys.order(client_order_id),
                                          self.keys.emulated(account)],
                                    args=["cancel", client_order_id])
        if done == 1:
            return self._report(client_order_id, symbol, BrokerStatus.CANCELLED)
        try:
            return await self.inner.cancel(client_order_id, symbol)
        except OrderNotFound:
            if now != Emulation.TRIGGERED.encode():
                raise
            # Its release is on its way: the cancel step asks again (a retryable error)
            # rather than reporting an order that is about to exist as not found.
            raise RetryableError(f"order {client_order_id} triggered and is being sent by "
                                 "the emulator; not at the broker yet") from None

    def _report(self, cid: str, symbol: str, status: BrokerStatus,
                reason: str | None = None) -> BrokerOrder:
        # The quantity is the order's own; the tracker reads only status and fills here.
        return BrokerOrder(client_order_id=cid, broker_order_id="", symbol=symbol,
                           status=status, quantity=zero(), reason=reason,
                           updated_at=self.clock(), emulated=True)
