"""What an account's shared rate limits are: the config section, the broker's published
defaults, and the resolved ``Plan`` the limiter enforces.

Config (TOML ``[limits.<account>]``, env ``ORDERSTREAM_LIMITS_<ACCOUNT>_<KEY>``); a key left
out takes the broker's default, 0 switches that limit off:

- ``weight_per_minute``: request weight per UTC minute (Binance REQUEST_WEIGHT);
- ``orders_per_10s`` / ``orders_per_day``: new orders per 10 s / per UTC day (Binance ORDERS);
- ``orders_per_second`` (decimal) and ``burst``: our own submission rate for the account,
  a GCRA (a token bucket without a refill task) allowing ``burst`` orders at once;
- ``max_wait_ms``: the longest a call waits for capacity, whatever its deadline;
- ``max_in_flight``: the most calls one worker has at the broker at once (gate.py): after
  a 429, no more than that many per worker can still arrive before every worker pauses;
- ``ip_group``: accounts that reach the broker from one IP address share the weight
  windows, the pause and the ban (Binance counts weight, 429s and 418s per IP).

Binance's RAW_REQUESTS (61000, now 300000, per 5 min) is not enforced: every request weighs
at least 1, so 6000 weight per minute allows at most 30000 requests per 5 minutes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

import msgspec

MINUTE_MS = 60_000
TEN_S_MS = 10_000
DAY_MS = 86_400_000
DEFAULT_MAX_WAIT_MS = 10_000
_GROUP = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AccountLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[limits.<account>]`` section; None: the broker's default."""

    weight_per_minute: int | None = None
    orders_per_10s: int | None = None
    orders_per_day: int | None = None
    orders_per_second: Decimal | None = None
    burst: int | None = None
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    max_in_flight: int | None = None
    # Accounts that reach the broker from one IP address: Binance counts request weight,
    # and answers 429 and 418, per IP. Accounts of the same group share the weight windows
    # (so they must have the same weight cap: config.py checks), the pause and the ban;
    # order counts, which Binance keeps per account, stay per account. None: the account
    # is a group of its own.
    ip_group: str | None = None

    def __post_init__(self) -> None:
        for name in ("weight_per_minute", "orders_per_10s", "orders_per_day", "burst",
                     "max_in_flight"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        rate = self.orders_per_second
        if rate is not None and (not rate.is_finite() or rate < 0):
            raise ValueError(f"orders_per_second must be a non-negative decimal, got {rate}")
        if self.burst == 0:
            raise ValueError("burst must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")
        if self.ip_group is not None and not _GROUP.fullmatch(self.ip_group):
            raise ValueError(f"ip_group must be 1 to 64 letters, digits, '_' or '-', got "
                             f"{self.ip_group!r}")


# The brokers' published limits (docs/brokers/binance.md, "Rate limits"). Binance's ORDERS caps
# differ per account (read exchangeInfo); 50 per 10 s and 160000 per day are the documented
# example, the lower of the published figures. Binance bans an IP that keeps sending into
# 429s (its imitation here: after 10 refused calls in a row), so two workers with 4 calls
# each in flight stay clear of it even when every call on the wire is refused.
BROKER_DEFAULTS: dict[str, AccountLimits] = {
    "binance": AccountLimits(weight_per_minute=6_000, orders_per_10s=50,
                             orders_per_day=160_000, max_in_flight=4),
    # OANDA v20 (docs/brokers/oanda.md, "Rate limits"): at most 100 requests/s per
    # persistent connection (120/s per IP, then 429). Only new orders are counted here;
    # lookups and cancels come on top, so keep a margin.
    "oanda": AccountLimits(orders_per_second=Decimal(100)),
    # 200 requests a minute per account, paper and live (docs/brokers/alpaca.md): each
    # request weighs 1 (AlpacaBroker.weights), so weight per minute is requests per minute.
    "alpaca": AccountLimits(weight_per_minute=200, max_in_flight=4),
}


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window aligned on the epoch (so on UTC minutes, 10 s marks and days, as
    Binance's are): ``cap`` units of weight or orders per ``size_ms``."""

    name: str  # also the key of the broker's ``usage()`` counter and the metric label
    size_ms: int
    cap: int
    counts_weight: bool  # True: request weight; False: new orders


@dataclass(frozen=True, slots=True)
class Rate:
    """A GCRA: one order per ``interval_us`` on average, ``burst`` at once."""

    interval_us: int
    burst: int


RATE_NAME = "orders_per_second"  # the metric label of the rate


@dataclass(frozen=True, slots=True)
class Plan:
    windows: tuple[Window, ...] = ()
    rate: Rate | None = None
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    ip_group: str | None = None  # shares weight, pause and ban with the group's accounts
    max_in_flight: int = 0  # one worker's calls at the broker at once; 0: no bound

    def describe(self, name: str) -> str:
        """A limit in words, for messages: ``orders_10s (50 per 10000 ms)``."""
        for w in self.windows:
            if w.name == name:
                return f"{name} ({w.cap} per {w.size_ms} ms)"
        if name == RATE_NAME and self.rate is not None:
            return (f"{RATE_NAME} (one order per {self.rate.interval_us} us, "
                    f"burst {self.rate.burst})")
        return name


def rate_interval_us(orders_per_second: Decimal) -> int:
    """Microseconds between orders at this rate, rounded up (never faster than asked)."""
    return int((Decimal(1_000_000) / orders_per_second).to_integral_value(ROUND_CEILING))


def plan_for(limits: AccountLimits | None, broker: str, *,
             visibility_timeout_ms: int | None = None) -> Plan:
    """The limits of an account of this broker type: its config over the broker's defaults.

    A call never waits more than half the visibility timeout: a batch held longer is taken
    over by another worker, which would find its orders unsent and send them itself while
    this one still means to (a configured ``max_wait_ms`` above that is a config error; the
    default is cut down to it)."""
    own = limits or AccountLimits()
    base = BROKER_DEFAULTS.get(broker, AccountLimits())

    def pick(name: str) -> int:
        value = getattr(own, name)
        return int(getattr(base, name) or 0) if value is None else int(value)

    windows = tuple(
        Window(name, size, cap, weight)
        for name, size, cap, weight in (
            ("weight_1m", MINUTE_MS, pick("weight_per_minute"), True),
            ("orders_10s", TEN_S_MS, pick("orders_per_10s"), False),
            ("orders_1d", DAY_MS, pick("orders_per_day"), False),
        )
        if cap > 0
    )
    per_second = own.orders_per_second if own.orders_per_second is not None else (
        base.orders_per_second)
    rate = None
    if per_second:
        burst = own.burst or base.burst or max(1, int(per_second.to_integral_value(
            ROUND_CEILING)))
        rate = Rate(rate_interval_us(per_second), burst)
    max_wait = own.max_wait_ms
    if visibility_timeout_ms is not None:
        max_wait = min(max_wait, visibility_timeout_ms // 2)
    return Plan(windows, rate, max_wait, own.ip_group, pick("max_in_flight"))
