"""Reference prices of the paper exchange (pure: the clock and the overrides are given).

Two models:
- ``static``: the configured price, for ever;
- ``walk``: a seeded random walk in integer ticks (never float). Step ``k`` of a symbol's
  walk is the ``k``-th draw of ``random.Random(f"{seed}:{symbol}")``: a move of up to
  ``max(1, ticks * walk_volatility_bps // 10000)`` ticks either way, never below one tick.
  The step index is ``(now_ms - origin_ms) // walk_step_ms``, and the origin is one epoch-ms
  shared through Redis, so every worker computes the same path at the same time.

An override (a price an operator or a test set) wins over the model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal

from .config import PaperAccount, SymbolConfig

Clock = Callable[[], int]


def start_ticks(symbol: SymbolConfig) -> int:
    """The configured price in whole ticks (at least one)."""
    ticks = int((symbol.price / symbol.tick_size).to_integral_value(ROUND_HALF_EVEN))
    return max(1, ticks)


class Walk:
    """One symbol's walk, cached: asking for a later step costs only the new steps."""

    __slots__ = ("_rng", "_step", "_ticks", "seed", "start", "symbol", "volatility_bps")

    def __init__(self, seed: int, symbol: str, start: int, volatility_bps: int) -> None:
        self.seed = seed
        self.symbol = symbol
        self.start = start
        self.volatility_bps = volatility_bps
        self._rng = random.Random(f"{seed}:{symbol}")
        self._step = 0
        self._ticks = start

    def ticks_at(self, step: int) -> int:
        """The price in ticks after ``step`` moves (step 0 is the start)."""
        if step < self._step:  # the clock went back or the origin moved: replay from 0
            self._rng = random.Random(f"{self.seed}:{self.symbol}")
            self._step = 0
            self._ticks = self.start
        ticks, rng, bps = self._ticks, self._rng, self.volatility_bps
        for _ in range(step - self._step):
            limit = max(1, ticks * bps // 10_000)
            ticks = max(1, ticks + rng.randint(-limit, limit))
        self._ticks, self._step = ticks, max(step, self._step)
        return ticks


class Prices:
    """The reference price of every symbol of one account, at the clock's time."""

    def __init__(self, config: PaperAccount, clock: Clock, origin_ms: int = 0) -> None:
        self.config = config
        self.clock = clock
        self.origin_ms = origin_ms
        self.overrides: dict[str, Decimal] = {}
        self._walks = {
            name: Walk(config.seed, name, start_ticks(sym), config.walk_volatility_bps)
            for name, sym in config.symbols.items()
        }
        self._last: dict[str, tuple[int, Decimal]] = {}  # symbol -> (step, price)

    def set_origin(self, origin_ms: int) -> None:
        self.origin_ms = origin_ms

    def set_overrides(self, overrides: Mapping[str, Decimal]) -> None:
        self.overrides = dict(overrides)

    def step(self, now_ms: int | None = None) -> int:
        now = self.clock() if now_ms is None else now_ms
        return max(0, (now - self.origin_ms) // self.config.walk_step_ms)

    def model_price(self, symbol: str, now_ms: int | None = None) -> Decimal:
        """The model's price, ignoring overrides. ``KeyError`` for an unknown symbol."""
        sym = self.config.symbols[symbol]
        if self.config.prices == "static":
            return sym.price
        step = self.step(now_ms)
        last = self._last.get(symbol)
        if last is not None and last[0] == step:
            return last[1]
        price = self._walks[symbol].ticks_at(step) * sym.tick_size
        self._last[symbol] = (step, price)
        return price

    def price(self, symbol: str, now_ms: int | None = None) -> Decimal:
        """The reference price: the override when one is set, else the model's."""
        override = self.overrides.get(symbol)
        return override if override is not None else self.model_price(symbol, now_ms)
