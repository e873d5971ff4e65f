"""Settings of a paper account: the simulated exchange's symbols, price model, book shape,
fees and injected faults.

Money and quantities are Decimal (TOML gives them as strings such as ``"0.01"``); the
fault-injection knobs are probabilities (floats), never money.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec


class SymbolConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One tradable symbol: its reference price, filters and book depth."""

    price: Decimal  # reference price at the origin of the walk (or fixed, for "static")
    tick_size: Decimal  # prices are multiples of this
    step_size: Decimal  # quantities are multiples of this
    min_quantity: Decimal
    max_quantity: Decimal
    depth_quantity: Decimal  # quantity available at each book level (and per resting fill)
    base_asset: str
    quote_asset: str  # the asset of prices, notionals and commissions
    # The market's traded volume, in the base asset, a minute: the flow of the simulated
    # other traders, which an algorithm's participation cap is measured against (None:
    # the exchange reports no volume for the symbol).
    volume_per_minute: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("price", "tick_size", "step_size", "min_quantity", "depth_quantity"):
            value = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be a positive decimal, got {value}")
        flow = self.volume_per_minute
        if flow is not None and (not flow.is_finite() or flow < 0):
            raise ValueError(f"volume_per_minute must be a non-negative decimal, got {flow}")
        if self.max_quantity < self.min_quantity:
            raise ValueError(
                f"max_quantity {self.max_quantity} is below min_quantity {self.min_quantity}"
            )


def _symbol(price: str, tick: str, step: str, min_q: str, max_q: str, depth: str,
            base: str, quote: str, flow: str) -> SymbolConfig:
    return SymbolConfig(
        price=Decimal(price),
        tick_size=Decimal(tick),
        step_size=Decimal(step),
        min_quantity=Decimal(min_q),
        max_quantity=Decimal(max_q),
        depth_quantity=Decimal(depth),
        base_asset=base,
        quote_asset=quote,
        volume_per_minute=Decimal(flow),
    )


def default_symbols() -> dict[str, SymbolConfig]:
    return {
        "BTCUSDT": _symbol("50000", "0.01", "0.00001", "0.00001", "1000", "5", "BTC", "USDT",
                           "60"),
        "ETHUSDT": _symbol("3000", "0.01", "0.0001", "0.0001", "10000", "50", "ETH", "USDT",
                           "600"),
        "EUR_USD": _symbol("1.08500", "0.00001", "1", "1", "100000000", "1000000",
                           "EUR", "USD", "60000000"),
    }


class PaperAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                   tag_field="broker", tag="paper"):
    """A simulated exchange. Its state lives in Redis, shared by every worker."""

    @staticmethod
    def venue() -> str:
        """What the account trades with (the deployment's ``mode`` must allow it)."""
        return "paper"

    prices: Literal["static", "walk"] = "static"
    seed: int = 1
    walk_step_ms: int = 1_000
    walk_volatility_bps: int = 5  # largest move of one walk step
    latency_ms: int = 0  # added before every call
    failure_rate: float = 0.0  # submit refused before it reaches the book (RetryableError)
    timeout_rate: float = 0.0  # submit stored at the exchange, caller told UnknownOutcome
    slippage_bps: Decimal = Decimal(0)  # distance of the best level from the reference
    depth_levels: int = 10  # levels per side of the book
    depth_step_bps: Decimal = Decimal(1)  # distance between consecutive levels
    taker_fee_bps: Decimal = Decimal(10)
    maker_fee_bps: Decimal = Decimal(8)
    match_interval_ms: int = 200  # resting orders are matched (and prices refreshed) this often
    # A finished order is forgotten this long after it ended (a lookup then finds nothing,
    # and its client id is free again, as at Binance), with the entries of the exchange's
    # streams (received, duplicates, executions) as old. Open orders are kept.
    retention_ms: int = 7 * 86_400_000
    symbols: dict[str, SymbolConfig] = msgspec.field(default_factory=default_symbols)
    # Leave the conditional types (trailing stops, if-touched) to the worker's emulator
    # instead of the exchange's native ones: the emulator's behaviour, on the paper
    # exchange, to compare with the native one or to rehearse a broker that lacks them.
    emulate_conditional: bool = False
    # Take a plain new order (market or limit) inside the worker's script that records it,
    # rather than in a call of the submit step (exchange.py ``open_door``): a round trip
    # less. Off, every order goes the way a remote broker's does (the crash tests of that
    # way use it).
    take_with_record: bool = True
    # Contingent lists natively (lists.py): an entry with take_profit / stop_loss and
    # oto_trigger "full" is taken with its exit, which the exchange itself places in the
    # same stored change as the entry's full fill; the workers' exit ``<entry>-x1`` is then
    # taken as it (native_lists.adoption). Off: the workers place the exits, as at every
    # broker.
    native_lists: bool = False

    def __post_init__(self) -> None:
        for name in ("walk_step_ms", "depth_levels", "match_interval_ms", "retention_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("walk_volatility_bps", "latency_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("failure_rate", "timeout_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        for name in ("slippage_bps", "depth_step_bps", "taker_fee_bps", "maker_fee_bps"):
            value = getattr(self, name)
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a non-negative decimal, got {value}")
        if not self.symbols:
            raise ValueError("a paper account needs at least one symbol")
