"""A request dead-lettered as ``poison`` (reclaim.py): its result, and the order it may have
left behind. Pure; the reclaimer reads and writes.

A request can be dead-lettered after its order was persisted: its worker died between the
broker call and the write of the outcome on every delivery, say. That order may be live at
the broker, and the tracker leaves ``pending_submit`` orders to their request, which will
never come back. If nobody ever took the order's send token (pipeline/steps/submit.py: every send
is made by its holder), the dead letter takes it, so that nobody ever can, and the order
ends ``rejected``: never sent. Otherwise the dead letter moves it to ``submitted`` ("may
be at the broker, not confirmed"; never sent again), with an event that says why, in the
same write as the result. From there the tracker looks it up by client id every pass and
brings it to its true state at the broker, and the positions projector gives back its
risk reservation when it ends. An order already past ``pending_submit`` is reported as it is.

The result of such a request carries the order's client id, state and fills, a status
that is the order's (``submitted`` while unconfirmed) rather than ``failed``, and a reason
telling the producer not to place it again and where its outcome is recorded: the order
record (``OrderClient.order``, ``orderstream order <client_order_id>``) and
``<prefix>:events``.

The order is found from what the request says, read leniently (its content may be what
made it poison): a place's ``client_order_id``, or the one derived from its entry id when
it has none; an amend's replacement, derived from the amend's entry id and its old order.
It counts only if its record names this request: a client id another request holds is
not this request's order.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from producer.contract import (
    Action,
    Event,
    OrderState,
    ReasonCode,
    Result,
    ResultStatus,
)
from producer.ids import client_order_id_for_entry

from ..model.order import Context, Order, transition
from ..model.states import is_terminal
from ..pipeline import results
from ..pipeline.job import Job


class Named(msgspec.Struct):
    """What a request says about the order it makes; unknown fields are ignored."""

    action: str = Action.PLACE
    client_order_id: str | None = None
    symbol: str | None = None
    side: str | None = None


_named = msgspec.json.Decoder(Named)


def read(fields: Mapping[bytes, bytes]) -> Named | None:
    """The ids of a pending entry's request, or None where they cannot be read (then the
    request never got as far as an order)."""
    data = fields.get(b"data")
    if data is None:
        return None
    try:
        named: Named = _named.decode(data)
    except Exception:  # anything: its content may be what made it poison
        return None
    return named


def old_order_id(named: Named | None) -> str | None:
    """The order an amend replaces, which its replacement's id is derived from."""
    if named is None or named.action != Action.AMEND:
        return None
    return named.client_order_id


def order_id(named: Named | None, entry_id: str, old: Order | None) -> str | None:
    """The client id of the order the request made, if it got that far; None when it
    makes none (a cancel, cancel_all, unreadable) or its amend has no old order."""
    if named is None:
        return None
    if named.action == Action.AMEND:
        if old is None:
            return None
        return client_order_id_for_entry(old.spec.symbol, old.spec.side, entry_id)
    if named.action != Action.PLACE:
        return None
    if named.client_order_id:
        return named.client_order_id
    if named.symbol and named.side:
        return client_order_id_for_entry(named.symbol, named.side, entry_id)
    return None


def _raw_fields() -> str:
    return "its raw fields are kept on this entry as raw:<field>"


def plain(entry_id: str, deliveries: int, worker: str, now: int,
          named: Named | None = None) -> Result:
    """The result of a poison request that made no order."""
    job = _job(entry_id, now, named)
    return results.failure(job, ReasonCode.POISON,
                           f"delivered {deliveries} times without an outcome; dead-lettered, "
                           f"{_raw_fields()}", now, worker)


def with_order(entry_id: str, deliveries: int, named: Named | None, order: Order, worker: str,
               now: int, *, never_sent: bool = False) -> tuple[Result, list[Event]]:
    """The result of a poison request whose order exists, and the events that move the
    order on from ``pending_submit``: to ``rejected`` when it was ``never_sent`` (the dead
    letter took its send token, free until then: nobody ever sent it, and nobody can now),
    else to ``submitted``; none from other states. ``order`` is changed in place."""
    cid = order.client_order_id
    events: list[Event] = []
    if order.state is OrderState.PENDING_SUBMIT:
        ctx = Context(now=now, worker=worker, request_id=entry_id)
        if never_sent:
            events.append(transition(order, OrderState.REJECTED, ctx,
                                     reason_code=ReasonCode.POISON, reason=(
                f"request {entry_id} was dead-lettered (poison) before its order was ever "
                "sent to the broker; it never will be")))
        else:
            events.append(transition(order, OrderState.SUBMITTED, ctx, reason=(
                f"request {entry_id} was dead-lettered (poison) before its outcome was "
                "recorded; the order may be at the broker: followed there by client id")))
    job = _job(entry_id, now, named)
    result = results.of_order(job, order, now, worker)
    result.reason_code = ReasonCode.POISON
    if order.state is OrderState.SUBMITTED:
        result.status = ResultStatus.SUBMITTED
    if never_sent and order.state is OrderState.REJECTED:
        outcome = f"order {cid} was never sent to the broker and never will be"
    elif is_terminal(order.state):
        outcome = f"order {cid} is {order.state}, final"
    else:
        outcome = (f"order {cid} is {order.state} and may be live at the broker: do not "
                   "place it again. It is followed at the broker by client id; its outcome "
                   f"reaches the order record (OrderClient.order, `orderstream order {cid}`) "
                   "and the events stream")
    result.reason = (f"delivered {deliveries} times without an outcome; dead-lettered after "
                     f"it made its order: {outcome}. {_raw_fields().capitalize()}")
    return result, events


def _job(entry_id: str, now: int, named: Named | None) -> Job:
    action = Action.PLACE
    if named is not None and named.action in Action._value2member_map_:
        action = Action(named.action)
    return Job(entry_id, {}, now, action=action)
