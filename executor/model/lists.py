"""Contingent lists: an entry order with ``take_profit`` / ``stop_loss`` and the exit
orders placed for what it fills (pure; background/lists.py does the I/O).

An entry's exits are one ``oco`` (a bracket: the take-profit its limit leg, the stop-loss
its stop leg, so a fill of one ends the other: one-updates-the-other, and the pair never
closes more than it was given) or, with one level (an OTO), a ``limit`` at the take-profit
or a ``stop`` at the stop-loss. Each exit is ``reduce_only``, on the other side, good till
cancelled, and goes through the pipeline as a request of its own under a client id derived
from the entry's (``exit_id``), so publishing it twice is a duplicate, never a second order.

When (``OtoTrigger``):
- ``full`` (the default, as Binance and Alpaca release an OTO's children): once the entry
  has ended, one exit for all it filled; an entry cancelled or expired after a partial
  fill gets its exit for that part, and one that filled nothing ends its list;
- ``partial``: an exit for each part filled since the last exit, as the fills come.

Never over-closing: an exit's quantity is what the entry filled less what earlier exits
were given, capped by what the position the fold shows leaves beyond the exits already
placed (a position closed meanwhile by other orders needs no exit) and rounded down to
the broker's quantity step. A list whose entry
has ended and been folded into the positions, with nothing more due, ends once its exits
have ended; until then, cancelling the entry also cancels its open exits.
"""

from __future__ import annotations

import decimal
import enum
from decimal import Decimal

import msgspec

from producer.components import COMPONENT_KEY, VERSION_KEY
from producer.contract import (
    TERMINAL_STATES,
    Action,
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    Request,
    Side,
    TimeInForce,
    WireDecimal,
    wire,
)
from producer.ids import derived_id

from .exits import closable

_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation])
# A refused exit (no order made: trading halted, a risk check, invalid at the broker) is
# placed again this long after it was published, so a refusal is not repeated each pass.
RETRY_MS = 5_000


class Exit(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One exit order published for the list: its client id, quantity, when, the pending
    entry of its request, and whether its order has been seen (so a record gone later
    expired: it is not taken for a refusal)."""

    id: str
    quantity: WireDecimal
    at: int
    request: str = ""
    seen: bool = False


class Progress(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A list's stored state (``Keys.lists``): begin.lua writes ``{"account": ...}`` when
    the entry is created; the watcher adds each exit it publishes (``n`` of them so far:
    the next one's number, so a refused exit's replacement has an id of its own)."""

    account: str
    exits: list[Exit] = []
    n: int = 0


class Seen(enum.Enum):
    """What became of a published exit that has no record (yet)."""

    PENDING = "pending"    # its request is still on the pending stream: not handled yet
    REFUSED = "refused"    # handled, answered without an order (halted, denied, invalid)
    GONE = "gone"          # it had an order, whose record has expired since


class Act(enum.Enum):
    WAIT = "wait"          # nothing to do yet
    RELEASE = "release"    # publish an exit of ``quantity``
    CANCEL = "cancel"      # publish cancels of the open exits ``ids``, and end the list
    DONE = "done"          # the list is over: forget it


class Decision(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    act: Act
    quantity: Decimal = Decimal(0)
    ids: tuple[str, ...] = ()
    why: str = ""


WAIT = Decision(act=Act.WAIT)


def is_entry(spec: OrderSpec) -> bool:
    return spec.oto_trigger is not None


def exit_id(entry_id: str, n: int) -> str:
    """The client id of the entry's ``n``-th exit (1, 2, ...): ``<entry>-x<n>``, or where
    that is too long for a broker (36 characters), the entry id cut short with a digest of
    the whole, so two entries never share their exits' ids."""
    return derived_id(entry_id, f"-x{n}")


def exit_request(entry_id: str, spec: OrderSpec, quantity: Decimal, n: int) -> Request:
    """The request of the entry's ``n``-th exit, for ``quantity``."""
    side = Side.SELL if spec.side is Side.BUY else Side.BUY
    tp, sl = spec.take_profit, spec.stop_loss
    if tp is not None and sl is not None:
        kind, price, stop = OrderType.OCO, tp, sl
    elif tp is not None:
        kind, price, stop = OrderType.LIMIT, tp, None
    else:
        kind, price, stop = OrderType.STOP, None, sl
    return Request(action=Action.PLACE, client_order_id=exit_id(entry_id, n),
                   account=spec.account, symbol=spec.symbol, side=side, type=kind,
                   quantity=wire(quantity), price=price, stop_price=stop,
                   time_in_force=TimeInForce.GTC, reduce_only=True,
                   strategy_id=spec.strategy_id, signal_id=spec.signal_id,
                   metadata={"list_id": entry_id, "exit": n, **_stamp(spec)})


def _stamp(spec: OrderSpec) -> dict[str, object]:
    """The entry's order component (producer/components.py), so an exit's result says
    which strategy code made the position it closes."""
    metadata = spec.metadata or {}
    return {k: metadata[k] for k in (COMPONENT_KEY, VERSION_KEY) if k in metadata}


def _protectable(spec: OrderSpec, position: Decimal) -> Decimal:
    """How much of the position (signed) is on the entry's side: what exits may close."""
    held = position if spec.side is Side.BUY else -position
    return max(held, Decimal(0))


ExitState = OrderState | Seen


def decide(spec: OrderSpec | None, state: OrderState, filled: Decimal, counted: bool,
           progress: Progress, exits: dict[str, ExitState], position: Decimal,
           step: Decimal | None, now: int, cancel: bool, *, holding: Decimal) -> Decision:
    """What the list of an entry (``spec``, now in ``state`` with ``filled``) needs.

    ``spec`` None: the entry's record is gone (a finished order's record expires after
    ``order_ttl_ms``, while its exits may rest for longer): nothing more is released, and
    the list lasts while its exits work. ``counted``: the positions fold has the entry's
    end (its risk reservation is gone); ``exits``: what became of each published exit
    (its order's state, or ``Seen`` without a record); ``position``: the account's
    position in the symbol (signed) as the fold shows it; ``holding``: what the exits
    working at the broker have not filled yet; ``cancel``: the entry was cancelled by a
    request, which cancels its list.

    An exit refused (``REJECTED`` by the broker, or ``Seen.REFUSED``) gave nothing: its
    quantity is due again, ``RETRY_MS`` after it was published. One cancelled or expired
    (by hand, by the broker) is not replaced."""
    pending = [e for e in progress.exits if exits.get(e.id) is Seen.PENDING]
    open_ = tuple(e.id for e in progress.exits
                  if isinstance(s := exits.get(e.id), OrderState) and s not in _ENDED)
    if cancel:
        if pending:
            return WAIT  # its cancel must not come before the place it cancels
        if spec is not None and state not in _ENDED:
            # The entry's cancel is not done: the list ends once it is. Ended now, a
            # cancel the broker then refused would leave the entry working without its
            # list, its fills with no exit. Meanwhile nothing is released.
            return WAIT
        return Decision(act=Act.CANCEL, ids=open_, why="the entry was cancelled")
    if spec is None:
        return WAIT if pending or open_ else Decision(act=Act.DONE, why=(
            "its exits have ended (its entry's record has expired)"))
    ended = state in _ENDED
    if ended and not counted:
        return WAIT  # the fold's position does not have all its fills yet
    full = spec.oto_trigger is not OtoTrigger.PARTIAL
    if not ended and full:
        return WAIT
    refused = [e for e in progress.exits if exits.get(e.id) in _REFUSED]
    if any(now - e.at < RETRY_MS for e in refused):
        return WAIT
    given = sum((e.quantity for e in progress.exits if e not in refused), Decimal(0))
    with decimal.localcontext(_EXACT):
        # What earlier exits still hold of the position, working or not yet: a new one
        # gets only the rest, as the reduce_only check sees it (the position less the open
        # orders on its side). Else the fold lagging the entry's fill, or a position
        # reduced by other orders, made an exit that check refused.
        room = _protectable(spec, position) - holding - sum(
            (e.quantity for e in pending), Decimal(0))
        due = closable(min(filled - given, max(room, Decimal(0))), step)
    if due > 0:
        return Decision(act=Act.RELEASE, quantity=due,
                        why=f"after {len(refused)} refused" if refused else "")
    if not ended:
        return WAIT
    if pending or open_:
        return WAIT  # kept while its exits work, so that cancelling the entry reaches them
    return Decision(act=Act.DONE, why=(
        "its exits have ended" if progress.exits else
        "the entry filled nothing" if filled == 0 else
        "no position is left to protect"))


def released(progress: Progress, exits: dict[str, ExitState], exit: Exit) -> Progress:
    """The progress once ``exit`` is published: refused exits are dropped (they gave
    nothing and are over), exits now seen with an order are marked so."""
    kept = [msgspec.structs.replace(e, seen=True)
            if isinstance(exits.get(e.id), OrderState) and not e.seen else e
            for e in progress.exits if exits.get(e.id) not in _REFUSED]
    return msgspec.structs.replace(progress, exits=[*kept, exit], n=progress.n + 1)


def newly_seen(progress: Progress, exits: dict[str, ExitState]) -> Progress | None:
    """The progress with exits now seen with an order marked so; None when none is new."""
    if all(e.seen or not isinstance(exits.get(e.id), OrderState) for e in progress.exits):
        return None
    return msgspec.structs.replace(progress, exits=[
        msgspec.structs.replace(e, seen=True) if isinstance(exits.get(e.id), OrderState)
        else e for e in progress.exits])


_ENDED = TERMINAL_STATES
_REFUSED = (OrderState.REJECTED, Seen.REFUSED)
