"""The arithmetic of the shared limits, pure and in integers.

``infra/lua/limits_acquire.lua`` does exactly this inside Redis (where it is atomic across
workers); this module is its specification, readable and unit tested, and the tests
check the script against ``take`` step by step.

A request asks for ``n`` units (orders of one batch, or one call), each costing ``weight``
against the weight windows, ``orders`` against the order windows and the rate. It gets
the largest ``k <= n`` that fits every limit now, all limits charged together, and the
time until one more unit would fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import RATE_NAME, Plan, Window

NEVER = -1  # a wait for a unit that can never fit (it costs more than a window's cap)


def window_index(now_ms: int, size_ms: int) -> int:
    """Which window ``now_ms`` falls in; windows start at multiples of their size since the
    epoch, so minutes, 10 s marks and days begin where UTC's (and Binance's) do."""
    return now_ms // size_ms


def window_end(now_ms: int, size_ms: int) -> int:
    """When the window holding ``now_ms`` ends (the next one starts, empty)."""
    return (now_ms // size_ms + 1) * size_ms


def window_fit(cap: int, used: int, cost: int) -> int:
    """Units of ``cost`` that still fit in a window with ``used`` of ``cap`` taken."""
    return max(cap - used, 0) // cost


def rate_fit(tat_us: int, now_us: int, interval_us: int, burst: int, cost: int) -> int:
    """Units of ``cost`` orders the GCRA lets through now. ``tat_us`` is its theoretical
    arrival time: when the bucket would be empty again at the average rate."""
    room = burst * interval_us - (max(tat_us, now_us) - now_us)
    return max(room, 0) // (interval_us * cost)


def rate_wait_us(tat_us: int, now_us: int, interval_us: int, burst: int, cost: int) -> int:
    """How long until one more unit of ``cost`` orders passes the GCRA (0: it does now)."""
    if cost > burst:
        return NEVER
    return max(max(tat_us, now_us) + cost * interval_us - burst * interval_us - now_us, 0)


@dataclass(slots=True)
class State:
    """What Redis keeps for one account: per window its index and use, and the GCRA's
    theoretical arrival time (µs)."""

    used: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (index, used)
    tat_us: int = 0

    def use(self, window: Window, now_ms: int) -> int:
        index, used = self.used.get(window.name, (-1, 0))
        return used if index == window_index(now_ms, window.size_ms) else 0


@dataclass(frozen=True, slots=True)
class Take:
    granted: int
    wait_ms: int  # until one more unit fits; 0 when everything asked for was granted
    blocked_by: str  # the limit that makes the wait (longest), "" if none
    used: Mapping[str, int]  # each limit's use after the take (the rate: orders in burst)


def cost_of(window: Window, weight: int, orders: int) -> int:
    return weight if window.counts_weight else orders


def take(state: State, plan: Plan, n: int, weight: int, orders: int, now_us: int) -> Take:
    """Grant what fits of ``n`` units now and charge it to ``state`` (in place)."""
    now_ms = now_us // 1000
    k = n
    for w in plan.windows:
        cost = cost_of(w, weight, orders)
        if cost:
            k = min(k, window_fit(w.cap, state.use(w, now_ms), cost))
    rate = plan.rate
    if rate is not None and orders:
        k = min(k, rate_fit(state.tat_us, now_us, rate.interval_us, rate.burst, orders))
    wait, blocked_by = 0, ""
    used: dict[str, int] = {}
    for w in plan.windows:
        cost = cost_of(w, weight, orders)
        now_used = state.use(w, now_ms) + k * cost
        if k and cost:
            state.used[w.name] = (window_index(now_ms, w.size_ms), now_used)
        used[w.name] = now_used
        if k < n and cost and now_used + cost > w.cap:
            need = NEVER if cost > w.cap else window_end(now_ms, w.size_ms) - now_ms
            if wait != NEVER and (need == NEVER or need > wait):
                wait, blocked_by = need, w.name
    if rate is not None:
        if k and orders:
            state.tat_us = max(state.tat_us, now_us) + k * orders * rate.interval_us
        used[RATE_NAME] = -(-(max(state.tat_us - now_us, 0)) // rate.interval_us)
        if k < n and orders:
            need_us = rate_wait_us(state.tat_us, now_us, rate.interval_us, rate.burst, orders)
            need = NEVER if need_us == NEVER else -(-need_us // 1000)
            if need and wait != NEVER and (need == NEVER or need > wait):
                wait, blocked_by = need, RATE_NAME
    return Take(k, wait, blocked_by, used)
