"""The send token, checked at the broker's door: the innermost guard around an adapter.

Every new order reaches the adapter only if the delivery sending it holds the order's send
token (infra/lua/send.lua), taken right before the call, after any rate-limit wait or breaker
hold, so that a worker dying while it waits never leaves a token it did not use. The
submit step says which token each order is sent under (``SEND_TOKENS``, one per delivery,
so its own retries pass and any other delivery's send is refused); an order without one is
refused, never sent unguarded. Refusals are ``SendRefused``: held by another delivery, the
order moved on, or (with ``[redis] durability = "wait"``) Redis did not confirm the record.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence

from producer.contract import OrderSpec

from ..infra.failpoints import failpoint
from ..infra.store import NotDurable
from .base import Broker, BrokerError, BrokerOrder, SendRefused
from .wrapper import BrokerWrapper

# client id -> the token of the delivery sending it, set by the submit step for its calls.
SEND_TOKENS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "send_tokens", default=None)

TakeTokens = Callable[[Mapping[str, str]], Awaitable[list[int]]]


def _refusal(cid: str, took: int) -> SendRefused:
    if took < 0:
        return SendRefused(f"order {cid} is no longer pending_submit: its outcome is "
                           "recorded; not sent", "moved_on")
    return SendRefused(f"another delivery holds the send token of order {cid} and may have "
                       "sent it; not sent", "held")


class SendGuard(BrokerWrapper):
    def __init__(self, inner: Broker, take: TakeTokens) -> None:
        super().__init__(inner)
        self.take = take
        # Only a broker that batches may look like one (base.submit_all asks getattr).
        if getattr(inner, "submit_many", None) is not None:
            self.submit_many = self._submit_many

    async def _granted(self, cids: Sequence[str]) -> list[int]:
        tokens = SEND_TOKENS.get() or {}
        missing = [cid for cid in cids if cid not in tokens]
        if missing:
            raise RuntimeError(f"orders sent without a send token: {', '.join(missing)}")
        try:
            taken = await self.take({cid: tokens[cid] for cid in cids})
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
        try:
            taken = await self._granted([cid for cid, _ in orders])
        except SendRefused as exc:
            return [exc] * len(orders)
        go = [order for order, took in zip(orders, taken, strict=True) if took == 1]
        many = self.inner.submit_many  # type: ignore[attr-defined]
        answers = iter(await many(go) if go else [])
        return [next(answers) if took == 1 else _refusal(cid, took)
                for (cid, _), took in zip(orders, taken, strict=True)]
