"""Stop-loss / take-profit on positions (``orderstream sl-tp``), watched by the worker that
emulates the account (background/emulator.py runs this under the account's lease).

A pass over the account's exits (``Keys.exits``): for each, the position now (the positions
fold's, ``orders:positions``) and the price (the emulator's); model/exits.py decides. A
firing publishes the closing order's request on the pending stream, in the same script
that marks the exit fired (infra/lua/exits.lua): once per firing, whoever emulates, and
under a client id derived from the exit (``closing_id``), so even a copy would be a
duplicate, never a second order. The request goes the way of every request: validation,
the risk checks (``reduce_only``: it may only reduce the position), the send token, one
result on the result streams (strategy ``sl-tp``, the level in ``metadata``).

A position closed otherwise (by hand, by another order) ends its exit too.

Afterwards the exit waits for that order to end and for the positions fold to have counted
it (its risk reservation gone: the fold drops it with the order's end, after its fills).
Then: the position is flat, and the exit is over (removed); or something is left (a
partial fill, a refusal), and the exit is armed again for what is left, after
``RETRY_MS`` if the order filled nothing, so a refusal is not repeated every pass.

A new exit whose level the price has already reached is removed unfired, with an error
log: closing a position at once is not what a stop-loss set on the wrong side means.

Requests a worker publishes cannot be signed: with ``[auth] keys`` the exits are refused
when set (operations/exit_commands.py) and, if found, not fired (an error log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producer.contract import (
    TERMINAL_STATES,
    Action,
    OrderSpec,
    OrderState,
    Request,
    decoder,
    encode,
)
from producer.keys import Keys
from producer.replies import text

from ..brokers.base import refused_by
from ..infra.batch_read import BatchRead, BatchReader, raise_failed
from ..infra.logs import Every
from ..infra.metrics import Metrics
from ..infra.store import decode_order
from ..model.exits import (
    AutoExit,
    Exit,
    auto_exit,
    check_levels,
    closable,
    closing_id,
    decide,
)
from ..model.order import spec_from_request
from ..model.positions import decode_position, position_key, split_key
from ..safety.risk.state import open_key

log = logging.getLogger(__name__)

SCRIPT = (resources.files("executor.infra") / "lua" / "exits.lua").read_text()
RETRY_MS = 5_000
STRATEGY = "sl-tp"
_exit = decoder(Exit)

class LeaseLost(Exception):
    """The account's lease moved to another worker during a pass."""


class ExitWatcher:
    def __init__(self, redis: aioredis.Redis, keys: Keys, token: str, *, signed: bool,
                 metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.token = token
        self.signed = signed  # requests must be signed: exits cannot fire
        self.metrics = metrics
        self.script = redis.register_script(SCRIPT)
        self._reader = BatchReader(redis)
        self._every = Every()  # what was logged, when: once a minute, not every pass

    def queue_read(self, pipe: Any, account: str) -> None:
        """Queue the read of the account's exits on ``pipe`` (one reply, for ``parse``):
        the emulator reads all it watches in one round trip."""
        pipe.hgetall(self.keys.exits(account))

    @staticmethod
    def parse(raw: Any) -> dict[str, bytes]:
        """The account's exits, symbol -> JSON (empty: none)."""
        return {text(k): v for k, v in raw.items()}

    async def once(self, account: str, exits: dict[str, bytes],
                   prices: dict[str, Decimal | None], now: int,
                   tick: Callable[[str], Decimal | None],
                   step: Callable[[str], Decimal | None],
                   check: Callable[[OrderSpec], object]) -> int:
        """One pass over ``exits``; returns how many fired or ended. ``LeaseLost`` when
        the lease moved on. ``check``: the broker's own check of an order
        (``Broker.check``), which a closing order must pass to be sent."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        symbols = sorted(exits)
        for symbol in symbols:
            pipe.hget(k.positions, position_key(account, symbol))
        positions = await pipe.execute()
        done = blocked = 0
        for symbol, raw_position in zip(symbols, positions, strict=True):
            try:
                made = await self._one(account, symbol, exits[symbol], raw_position,
                                       prices, now, tick, step, check)
            except (LeaseLost, RedisError):
                raise
            except Exception:
                # A bug one exit trips: that exit waits (logged every pass), the others go on.
                log.exception("sl-tp of %s %s: its pass failed", account, symbol)
                if self.metrics is not None:
                    self.metrics.background_errors.labels("emulator").inc()
                continue
            if made is None:
                blocked += 1
            else:
                done += made
        if self.metrics is not None:
            self.metrics.exits_blocked.labels(account, "position").set(blocked)
        return done

    async def _one(self, account: str, symbol: str, data: bytes, raw_position: bytes | None,
                   prices: dict[str, Decimal | None], now: int,
                   tick: Callable[[str], Decimal | None],
                   step: Callable[[str], Decimal | None],
                   check: Callable[[OrderSpec], object]) -> int | None:
        """One exit's turn in a pass: 1 if it fired or ended, else 0; None: it fired, but
        the broker's rules refuse its closing order, which is not sent."""
        try:
            exit = _exit.decode(data)
        except msgspec.DecodeError:
            if self._every.due(("unreadable", account, symbol), now):
                log.error("sl-tp of %s %s: unreadable (%r); left as it is (clear it with "
                          "orderstream sl-tp clear)", account, symbol, data[:200])
            return 0
        quantity = decode_position(raw_position).quantity if raw_position else Decimal(0)
        if exit.fired is not None:
            return await self._settle(account, symbol, exit, data, now, step(symbol))
        if closable(quantity, step(symbol)) == 0:
            # Closed otherwise (by hand, another order), or only dust left that no
            # order takes: the exit went with it, and must not wait for the next
            # position, which it was not set for.
            log.info("sl-tp of %s %s: the position is closed; the exit is over",
                     account, symbol)
            await self._write("done", account, symbol, data, b"")
            return 1
        ref = prices.get(symbol)
        if ref is None:
            return 0
        if exit.long is None:
            refused = check_levels(exit, quantity, ref)
            if refused is not None:
                log.error("sl-tp of %s %s removed unfired: %s", account, symbol, refused)
                await self._write("done", account, symbol, data, b"")
                return 1
        moved, closing = decide(exit, quantity, ref, now, tick(symbol), step(symbol))
        if closing is None:
            if moved is not None:
                await self._write("write", account, symbol, data, encode(moved))
            return 0
        if self.signed:
            if self._every.due(("unsigned", account, symbol), now):
                log.error("sl-tp of %s %s fired (%s at %s) but requests must be signed "
                          "and a worker has no key: not sent; close the position by hand",
                          account, symbol, closing.why, closing.trigger)
            return 0
        assert moved is not None
        cid = closing_id(account, symbol, moved)
        request = Request(action=Action.PLACE, client_order_id=cid, account=account,
                          symbol=symbol, side=closing.side, type=closing.type,
                          quantity=closing.quantity, price=closing.price,
                          reduce_only=True, strategy_id=STRATEGY,
                          metadata={"exit": closing.why, "trigger": str(closing.trigger)})
        refusal = refused_by(check, spec_from_request(request, account))
        if refusal is not None:
            # It would be refused, and fired again each 5 s, each time with a failed
            # result: it stays armed, for the position to grow or be closed by hand.
            if self._every.due(("blocked", account, symbol), now):
                log.error("sl-tp of %s %s is due (%s at %s) but the broker's rules refuse "
                          "its closing order of %s (%s): not sent; the position is not "
                          "protected until it is closed by hand or grows", account, symbol,
                          closing.why, closing.trigger, closing.quantity, refusal)
            return None
        fired = msgspec.structs.replace(moved, fired=cid)
        wrote = await self._write("fire", account, symbol, data, encode(fired),
                                  ["data", encode(request)])
        if wrote != 1:
            return 0
        log.warning("sl-tp of %s %s fired: %s at %s, closing %s %s (order %s)",
                    account, symbol, closing.why, closing.trigger, closing.side,
                    closing.quantity, cid)
        if self.metrics is not None:
            self.metrics.emulator_triggered.labels(account).inc()
        return 1

    async def auto(self, account: str, auto: AutoExit, exits: dict[str, bytes], now: int,
                   tick: Callable[[str], Decimal | None]) -> int:
        """Give each position of ``account`` that opened since the last pass (or turned
        the other way) its automatic exit, unless one was set for it otherwise; forget the
        marker of a position that is flat again. Returns how many it made."""
        k = self.keys
        # The account's positions alone (the hash holds every account's), at one instant
        # with the markers.
        batch = BatchRead()
        batch.positions(k.positions, k.positions_indexed, k.positions_of(account))
        batch.hgetall(k.exits_auto(account))
        replies = await self._reader.execute(batch)
        raise_failed(replies)
        raw, marked = replies
        markers = {text(s): text(v) for s, v in marked.items()}
        made = 0
        for key, data in raw.items():
            owner, symbol = split_key(text(key))
            if owner != account:
                continue
            position = decode_position(data)
            direction = None if position.quantity == 0 else (
                "long" if position.quantity > 0 else "short")
            marker = markers.get(symbol)
            if direction is None:
                if marker is not None:
                    await self._write("closed", account, symbol, b"", b"")
                continue
            if marker == direction:
                continue
            current = exits.get(symbol, b"")
            new = b""
            if not current or _exit.decode(current).set_by == "auto":
                new = encode(auto_exit(auto, position.quantity, position.average_price, now,
                                       tick(symbol)))
            if await self._write("auto", account, symbol, current, new,
                                 [direction]) == 1 and new:
                log.info("sl-tp of %s %s set automatically for the %s position at %s: %s",
                         account, symbol, direction, position.average_price, new.decode())
                made += 1
        return made

    async def _settle(self, account: str, symbol: str, exit: Exit, data: bytes, now: int,
                      step: Decimal | None) -> int:
        """An exit whose closing order is in flight: over once the position is flat, armed
        again for what is left otherwise, both only once the order ended and the positions
        fold counted it."""
        cid = exit.fired
        assert cid is not None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.order(cid), "state")
        pipe.hget(open_key(self.keys, account), cid)  # HGET: the worker's ACL has no HEXISTS
        pipe.hget(self.keys.order(cid), "record")
        pipe.hget(self.keys.exit_requests(account), symbol)
        state, reserved, record, request = await pipe.execute()
        if state is None:
            # No order (yet): still pending, or answered without one (refused before it
            # was made: halted, invalid, denied by a check that creates no order).
            if request is None or await self.redis.xrange(self.keys.pending, min=request,
                                                          max=request):
                return 0
            state = b"refused"
        elif OrderState(text(state)) not in TERMINAL_STATES or reserved is not None:
            return 0  # working, or its end not folded into the positions yet
        # Re-read: the position the fold wrote with the order's end.
        raw = await self.redis.hget(self.keys.positions, position_key(account, symbol))
        quantity = decode_position(raw).quantity if raw else Decimal(0)
        if closable(quantity, step) == 0:
            log.info("sl-tp of %s %s: the position is closed (order %s); the exit is over",
                     account, symbol, cid)
            await self._write("done", account, symbol, data, b"")
            return 1
        filled = record is not None and decode_order(record).filled_quantity > 0
        again = msgspec.structs.replace(exit, fired=None, generation=exit.generation + 1,
                                        not_before=0 if filled else now + RETRY_MS)
        log.warning("sl-tp of %s %s: closing order %s ended %s with %s left; armed again%s",
                    account, symbol, cid, text(state), quantity,
                    "" if filled else f" in {RETRY_MS} ms")
        await self._write("write", account, symbol, data, encode(again))
        return 1

    async def _write(self, op: str, account: str, symbol: str, expected: bytes, new: bytes,
                     fields: list[Any] | None = None) -> int:
        k = self.keys
        wrote = int(await self.script(
            keys=[k.exits(account), k.emulator_lease(account), k.pending,
                  k.exit_requests(account), k.exits_auto(account)],
            args=[op, self.token, symbol, expected, new, *(fields or [])]))
        if wrote == -2:
            raise LeaseLost
        return wrote
