"""The send token, checked at the broker's door: the innermost guard around an adapter.

Every new order reaches the adapter only if the delivery sending it holds the order's send
token (infra/lua/send.lua), taken right before the call, after any rate-limit wait or breaker
hold, so that a worker dying while it waits never leaves a token it did not use. The
submit step says which token each order is sent under (``SEND_TOKENS``, one per delivery,
so its own retries pass and any other delivery's send is refused); an order without one is
refused, never sent unguarded. Refusals are ``SendRefused``: held by another delivery, the
order moved on, or (with ``[redis] durability = "wait"``) Redis did not confirm the record.

The paper exchange lives in the worker's Redis: there the tokens are taken in the very
script that takes the orders (``at_door``; brokers/paper/submit.lua), a round trip less,
and no moment between the two for a worker to die in. It can go one step further
(``door_for``): take new orders inside the worker's own write that creates them
(infra/store.py ``reserve_begin_and_open``), so an order is recorded, its token taken and
the exchange's order made in one script, another round trip less; the submit step's call
then answers from what that script did (brokers/paper/exchange.py ``open_door``). Where the
door also says what each order's answer is once taken (``Door.reports``: the paper
exchange decides in process), the orders' outcomes are written in that same script too
(pipeline/steps/taken.py), and the guards are told of those answers (``taken``) instead of
seeing a submit call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from producer.contract import OrderSpec

from ..infra.failpoints import failpoint
from ..infra.store import NotDurable
from .base import Broker, BrokerError, BrokerOrder, SendRefused
from .wrapper import BrokerWrapper

# client id -> the token of the delivery sending it, set by the submit step for its calls.
SEND_TOKENS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "send_tokens", default=None)

TakeTokens = Callable[[Mapping[str, str]], Awaitable[list[int]]]


@dataclass(frozen=True, slots=True)
class Door:
    """New orders an adapter takes inside the worker's write that creates them: its script
    (Lua source), that call's keys and arguments, and ``opened``, to be told the script's
    answers once the write ran (then the submit step's call of these orders, under these
    tokens, answers from them without a call of its own)."""

    script: str
    keys: list[str]
    args: list[Any]
    opened: Callable[[Sequence[int]], None]
    # Each order's answer when the door takes it (its script's 1), known before the call;
    # empty when it is not.
    reports: Sequence[BrokerOrder] = ()
    # Its script answers ARGV.probe: whether it would take every order, writing nothing
    # (infra/store.py compose_door's lean call).
    probes: bool = False


OpenDoor = Callable[[Sequence[tuple[str, OrderSpec]], Mapping[str, str]], Door | None]


def door_for(broker: Broker, orders: Sequence[tuple[str, OrderSpec]]) -> OpenDoor | None:
    """The adapter's ``open_door`` when every guard between the submit step and it hands
    these orders straight to it (``passes``: no rate limiter, nothing emulated) and its
    send guard takes tokens at its door; else None, and the orders go the usual way."""
    inner: Any = broker
    while isinstance(inner, BrokerWrapper):
        if isinstance(inner, SendGuard):
            adapter = inner.inner
            # The adapter's own method, not one reached through a proxy's __getattr__ (a
            # test's double around an exchange): the double's submit must not be skipped.
            if inner._at_door is None or getattr(type(adapter), "open_door", None) is None:
                return None
            door: OpenDoor = getattr(adapter, "open_door")  # noqa: B009 (checked above)
            return door
        if not all(inner.passes(spec) for _, spec in orders):
            return None
        inner = inner.inner
    return None


async def taken(broker: Broker, answers: Sequence[BrokerOrder]) -> None:
    """Tell each guard in front of the adapter of orders its door took whose outcomes were
    written with their records (no submit call of theirs will pass the guards)."""
    inner: Any = broker
    while isinstance(inner, BrokerWrapper):
        await inner.taken(answers)
        inner = inner.inner


def _tokens(cids: Sequence[str]) -> dict[str, str]:
    """The send tokens the submit step gave these orders (every one must have one)."""
    tokens = SEND_TOKENS.get() or {}
    missing = [cid for cid in cids if cid not in tokens]
    if missing:
        raise RuntimeError(f"orders sent without a send token: {', '.join(missing)}")
    return {cid: tokens[cid] for cid in cids}


def _refusal(cid: str, took: int) -> SendRefused:
    if took < 0:
        return SendRefused(f"order {cid} is no longer pending_submit: its outcome is "
                           "recorded; not sent", "moved_on")
    return SendRefused(f"another delivery holds the send token of order {cid} and may have "
                       "sent it; not sent", "held")


class SendGuard(BrokerWrapper):
    def __init__(self, inner: Broker, take: TakeTokens, *, at_door: bool = False) -> None:
        super().__init__(inner)
        self.take = take
        # Only a broker that batches may look like one (base.submit_all asks getattr).
        if getattr(inner, "submit_many", None) is not None:
            self.submit_many = self._submit_many
        # An adapter whose exchange lives in the worker's Redis (the paper exchange) takes
        # the tokens itself, in the script that takes the orders: the door itself, and a
        # round trip less. Not with durability to wait for, which the take does.
        self._at_door: Callable[..., Awaitable[list[BrokerOrder | BrokerError | int]]] | None = (
            getattr(inner, "submit_many_guarded", None) if at_door else None)

    async def _granted(self, cids: Sequence[str]) -> list[int]:
        try:
            taken = await self.take(_tokens(cids))
        except NotDurable as exc:
            raise SendRefused(f"Redis did not confirm the orders' records durable ({exc}); "
                              "not sent", "not_durable") from None
        if 1 in taken:
            failpoint("before_send")
        return taken

    async def submit(self, client_order_id: str, order: OrderSpec) -> BrokerOrder:
        (took,) = await self._granted([client_order_id])
        if took != 1:
            raise _refusal(client_order_id, took)
        return await self.inner.submit(client_order_id, order)

    async def _submit_many(self, orders: Sequence[tuple[str, OrderSpec]]
                           ) -> list[BrokerOrder | BrokerError]:
        if self._at_door is not None:
            tokens = _tokens([cid for cid, _ in orders])
            failpoint("before_send")
            replies = await self._at_door(orders, tokens)
            return [_refusal(cid, a) if isinstance(a, int) else a
                    for (cid, _), a in zip(orders, replies, strict=True)]
        try:
            taken = await self._granted([cid for cid, _ in orders])
        except SendRefused as exc:
            return [exc] * len(orders)
        go = [order for order, took in zip(orders, taken, strict=True) if took == 1]
        many = self.inner.submit_many  # type: ignore[attr-defined]
        answers = iter(await many(go) if go else [])
        return [next(answers) if took == 1 else _refusal(cid, took)
                for (cid, _), took in zip(orders, taken, strict=True)]
