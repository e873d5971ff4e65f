"""The order state machine: one table of allowed transitions, nothing else decides.

An attempt outside the table is a bug somewhere (ours or the broker's): it is refused,
logged and counted by the caller, never applied.
"""

from __future__ import annotations

from producer.contract import TERMINAL_STATES, OrderState

S = OrderState

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.CREATED: frozenset({S.PENDING_SUBMIT, S.DENIED, S.REJECTED}),
    # expired: the request's deadline passed while its outcome was being resolved and the
    # broker confirmed it never arrived.
    S.PENDING_SUBMIT: frozenset({S.SUBMITTED, S.REJECTED, S.EXPIRED}),
    S.SUBMITTED: frozenset(
        {
            S.ACCEPTED,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.PENDING_CANCEL,
            S.CANCELLED,
            S.REJECTED,
            S.EXPIRED,
        }
    ),
    S.ACCEPTED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELLED, S.EXPIRED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELLED, S.EXPIRED}
    ),
    # A cancel can lose the race against fills, and a refused cancel leaves the order
    # working: back to accepted or partially filled.
    S.PENDING_CANCEL: frozenset(
        {S.CANCELLED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.ACCEPTED}
    ),
    **{state: frozenset() for state in TERMINAL_STATES},
}


class IllegalTransition(Exception):
    def __init__(self, client_order_id: str, current: OrderState, target: OrderState) -> None:
        super().__init__(f"order {client_order_id}: illegal transition {current} -> {target}")
        self.current = current
        self.target = target


def can_transition(current: OrderState, target: OrderState) -> bool:
    return target in TRANSITIONS[current]


def is_terminal(state: OrderState) -> bool:
    return state in TERMINAL_STATES
