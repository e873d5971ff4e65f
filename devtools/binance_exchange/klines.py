"""The local exchange's klines (GET /api/v3/klines): which buckets a request selects, and
each bucket's row in Binance's format. Pure: the engine passes its clock, flows and trades.

A bucket's volume is what others traded (a ``Flow`` a test sets per symbol, so much base
asset per second) plus what the exchange itself executed in it: Binance's klines count
everyone's trades, ours included. The bucket holding the exchange's now is returned open,
with its volume so far. Every bucket is returned, empty ones too (whether Binance leaves
out 1s buckets without trades is not documented [unverified]); there is no listing time,
so a request from far back gets empty buckets rather than starting at the first trade.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The intervals of a fixed length (rest-api.md "Supported kline intervals"); 3d, 1w and 1M
# are aligned on calendar rules of Binance's own and are not modelled.
INTERVALS: Mapping[str, int] = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
    "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
    "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


@dataclass(slots=True)
class Flow:
    """Others' trading of one symbol: from each start (epoch ms) on, so much base asset per
    second, until the next start. Nothing before the first."""

    segments: list[tuple[int, Decimal]] = field(default_factory=list)

    def set(self, since: int, per_second: Decimal) -> None:
        """From ``since`` on, ``per_second``: what was set for later times is replaced."""
        self.segments = [s for s in self.segments if s[0] < since]
        self.segments.append((since, per_second))

    def between(self, start: int, end: int) -> Decimal:
        """What was traded in [start, end): exact, in the flow's own decimals."""
        total = Decimal(0)
        for i, (begin, rate) in enumerate(self.segments):
            stop = self.segments[i + 1][0] if i + 1 < len(self.segments) else end
            overlap = min(stop, end) - max(begin, start)
            if overlap > 0:
                total += rate * overlap / 1000
        return total


def opens(interval_ms: int, now: int, start: int | None, end: int | None,
          limit: int) -> list[int]:
    """The open times a request selects, oldest first: open time >= ``startTime`` and <=
    ``endTime``, never past the bucket holding ``now``; from ``startTime`` the first
    ``limit`` of them, without it the latest ``limit``."""
    last = now // interval_ms * interval_ms
    if end is not None:
        last = min(last, end // interval_ms * interval_ms)
    if start is None:
        first = last - (limit - 1) * interval_ms
    else:
        first = -(-start // interval_ms) * interval_ms
        last = min(last, first + (limit - 1) * interval_ms)
    return list(range(first, last + 1, interval_ms)) if first <= last else []


def row(open_ms: int, interval_ms: int, price: Decimal, flow: Decimal,
        trades: Sequence[Mapping[str, Any]], fmt: Callable[[Decimal], str]) -> list[Any]:
    """One kline: [openTime, open, high, low, close, volume, closeTime, quoteAssetVolume,
    trades, takerBuyBase, takerBuyQuote, "0"]. The flow trades at ``price`` (the listing's
    price now) and half of it is taken by buyers; ``trades`` are the exchange's own in this
    bucket, in time order, each counted once (the other side is outside the exchange)."""
    prices = [Decimal(t["price"]) for t in trades]
    marks = prices + ([price] if flow or not prices else [])
    base = flow + sum((Decimal(t["qty"]) for t in trades), Decimal(0))
    quote = flow * price + sum((Decimal(t["quoteQty"]) for t in trades), Decimal(0))
    # The taker bought when we bought as taker, or sold as maker.
    bought = [t for t in trades if t["isBuyer"] != t["isMaker"]]
    taker_base = flow / 2 + sum((Decimal(t["qty"]) for t in bought), Decimal(0))
    taker_quote = flow / 2 * price + sum((Decimal(t["quoteQty"]) for t in bought), Decimal(0))
    return [open_ms, fmt(prices[0] if prices else price), fmt(max(marks)), fmt(min(marks)),
            fmt(prices[-1] if prices else price), fmt(base), open_ms + interval_ms - 1,
            fmt(quote), len(trades), fmt(taker_base), fmt(taker_quote), "0"]
