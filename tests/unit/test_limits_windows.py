"""The arithmetic of the shared rate limits (executor/safety/limits/windows.py), at its
boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from executor.brokers.limited import throttle_reason
from executor.safety.limits import AccountLimits, Grant, Plan, Rate, Window, plan_for
from executor.safety.limits.config import DAY_MS, MINUTE_MS, TEN_S_MS, rate_interval_us
from executor.safety.limits.windows import (
    NEVER,
    State,
    rate_fit,
    rate_wait_us,
    take,
    window_end,
    window_fit,
    window_index,
)

ORDERS_10S = Window("orders_10s", TEN_S_MS, 20, counts_weight=False)
WEIGHT_1M = Window("weight_1m", MINUTE_MS, 10, counts_weight=True)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_windows_start_on_utc_boundaries_like_binance() -> None:
    assert window_index(9_999, TEN_S_MS) == 0 and window_end(9_999, TEN_S_MS) == 10_000
    assert window_index(10_000, TEN_S_MS) == 1 and window_end(10_000, TEN_S_MS) == 20_000
    last = ms("2026-11-21T23:59:59.999")
    assert window_index(last, DAY_MS) + 1 == window_index(last + 1, DAY_MS)
    assert window_end(last, DAY_MS) == ms("2026-11-22T00:00:00")
    assert window_end(ms("2026-11-21T10:00:30.5"), MINUTE_MS) == ms("2026-11-21T10:01:00")
    assert window_end(ms("2026-11-21T10:00:39.999"), TEN_S_MS) == ms("2026-11-21T10:00:40")


def test_window_fit_counts_whole_units_only() -> None:
    assert window_fit(20, 0, 1) == 20
    assert window_fit(20, 19, 1) == 1 and window_fit(20, 20, 1) == 0
    assert window_fit(10, 3, 4) == 1  # 7 left: one unit of 4, not 1.75
    assert window_fit(10, 12, 1) == 0  # over (raised by the broker's own count)


def test_a_batch_gets_what_fits_and_the_wait_until_the_window_ends() -> None:
    plan = Plan((ORDERS_10S,))
    state = State()
    t = 1_000_000_009_000  # 9 s into a 10 s window
    first = take(state, plan, 15, 1, 1, t * 1000)
    assert (first.granted, first.wait_ms, first.used["orders_10s"]) == (15, 0, 15)
    second = take(state, plan, 10, 1, 1, t * 1000)
    assert (second.granted, second.wait_ms, second.blocked_by) == (5, 1_000, "orders_10s")
    full = take(state, plan, 1, 1, 1, (t + 999) * 1000)
    assert (full.granted, full.wait_ms) == (0, 1)
    fresh = take(state, plan, 20, 1, 1, (t + 1_000) * 1000)  # the next window, empty
    assert (fresh.granted, fresh.used["orders_10s"]) == (20, 20)


def test_every_limit_is_charged_together_or_not_at_all() -> None:
    plan = Plan((WEIGHT_1M, ORDERS_10S))
    state = State()
    now_us = 1_000_000_000_000_000
    # Weight 4 a call: 2 calls fit the weight cap of 10, though 20 orders would.
    got = take(state, plan, 3, 4, 1, now_us)
    assert (got.granted, got.blocked_by) == (2, "weight_1m")
    assert got.used == {"weight_1m": 8, "orders_10s": 2}
    # A lookup (no order) is charged weight only.
    lookup = take(state, plan, 1, 2, 0, now_us)
    assert lookup.granted == 1 and lookup.used == {"weight_1m": 10, "orders_10s": 2}
    refused = take(state, plan, 1, 1, 0, now_us)
    assert refused.granted == 0 and refused.used == {"weight_1m": 10, "orders_10s": 2}


def test_a_call_heavier_than_a_cap_never_fits() -> None:
    got = take(State(), Plan((WEIGHT_1M,)), 1, 11, 0, 0)
    assert (got.granted, got.wait_ms, got.blocked_by) == (0, NEVER, "weight_1m")


def test_the_rate_lets_a_burst_through_then_one_per_interval() -> None:
    plan = Plan(rate=Rate(interval_us=500_000, burst=2))  # 2 orders/s, 2 at once
    state = State()
    t = 7_000_000_000
    got = take(state, plan, 3, 1, 1, t)
    assert (got.granted, got.wait_ms, got.blocked_by) == (2, 500, "orders_per_second")
    assert got.used["orders_per_second"] == 2
    assert take(state, plan, 1, 1, 1, t + 499_999).granted == 0
    assert take(state, plan, 1, 1, 1, t + 500_000).granted == 1
    # Lookups do not count against the order rate.
    assert take(state, plan, 5, 1, 0, t + 500_000).granted == 5


def test_rate_arithmetic_at_its_edges() -> None:
    assert rate_fit(tat_us=0, now_us=10, interval_us=100, burst=3, cost=1) == 3
    assert rate_fit(tat_us=310, now_us=10, interval_us=100, burst=3, cost=1) == 0
    assert rate_wait_us(tat_us=310, now_us=10, interval_us=100, burst=3, cost=1) == 100
    assert rate_wait_us(tat_us=0, now_us=10, interval_us=100, burst=3, cost=1) == 0
    assert rate_wait_us(tat_us=0, now_us=10, interval_us=100, burst=3, cost=4) == NEVER
    assert rate_interval_us(Decimal(3)) == 333_334  # rounded up: never faster than asked
    assert rate_interval_us(Decimal("0.5")) == 2_000_000


def test_plans_take_the_brokers_published_limits_unless_configured() -> None:
    binance = plan_for(None, "binance")
    assert [(w.name, w.size_ms, w.cap) for w in binance.windows] == [
        ("weight_1m", MINUTE_MS, 6_000), ("orders_10s", TEN_S_MS, 50),
        ("orders_1d", DAY_MS, 160_000)]
    assert binance.rate is None
    assert plan_for(None, "paper") == Plan()
    own = plan_for(AccountLimits(orders_per_10s=0, weight_per_minute=1_200,
                                 orders_per_second=Decimal("2.5")), "binance")
    assert [(w.name, w.cap) for w in own.windows] == [("weight_1m", 1_200),
                                                      ("orders_1d", 160_000)]
    assert own.rate == Rate(400_000, 3)


@pytest.mark.parametrize("bad", [{"orders_per_10s": -1}, {"burst": 0},
                                 {"orders_per_second": Decimal(-1)}, {"max_wait_ms": -5}])
def test_bad_limits_are_refused_naming_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        AccountLimits(**bad)  # type: ignore[arg-type]


def test_throttle_messages_name_the_limit_the_wait_and_the_bound() -> None:
    plan = Plan((ORDERS_10S,))
    grant = Grant(0, 3_400, 0, "orders_10s", {})
    reason = throttle_reason("main", grant, plan.describe, 1_000, 1_700_000_000_000)
    assert "orders_10s (20 per 10000 ms)" in reason and "3400 ms" in reason
    assert "deadline 1700000000000" in reason and "never sent" in reason
    banned = throttle_reason("main", Grant(0, 60_000, 0, "ban", {}), plan.describe, 200, None)
    assert "HTTP 418" in banned and "max_wait_ms (200 ms)" in banned
    late = throttle_reason("main", grant, plan.describe, 10_000, None, waited_ms=700)
    assert "capacity in 3400 ms, later than max_wait_ms (10000 ms, 700 ms of it already " \
        "waited)" in late
