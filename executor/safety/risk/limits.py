"""Risk limits: what the ``[risk]`` section of the configuration holds, what
``orderstream risk set`` stores at run time, and how the layers combine into the limits of
one order. Pure data; no I/O.

Layers, later ones winning field by field (a field left out inherits):

1. ``[risk.defaults]``                       every account
2. ``[risk.defaults.symbols.<SYMBOL>]``      every account, one symbol
3. ``[risk.accounts.<account>]``             one account
4. ``[risk.accounts.<account>.symbols.<S>]`` one account, one symbol
5. run-time limits of the account (Redis ``Keys.risk_limits``, set by ``orderstream risk
   set``), then their per-symbol part

A limit that no layer sets is not checked. Amounts (notional, exposure, balance, equity,
loss) are in the quote asset of the account's symbols. Nothing converts between assets, so
while an account-wide limit is set, an account's orders must all be in one quote asset (the
``quote_asset`` check denies the others, except orders that reduce a position).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import ContractError

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


class SymbolLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                   omit_defaults=True):
    """The limits that can differ by symbol. Quantities in the symbol's base asset,
    amounts in its quote asset, percentages as numbers (``"10"`` is 10 %)."""

    min_quantity: Decimal | None = None
    max_quantity: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    # Single-position exposure (see rules.py) at most this % of the account's equity.
    max_position_pct: Decimal | None = None
    # Fat finger: a limit price further than this % from the reference price is refused.
    price_band_pct: Decimal | None = None


class AccountLimits(SymbolLimits, kw_only=True, forbid_unknown_fields=True,
                    omit_defaults=True):
    """The limits of an account (all symbols), with per-symbol overrides."""

    # Starting equity and starting cash balance (quote asset): the bases of the equity and
    # available-balance definitions of rules.py. The balance check runs when balance is set.
    equity: Decimal | None = None
    balance: Decimal | None = None
    max_total_exposure: Decimal | None = None
    max_net_long: Decimal | None = None  # directional exposure, quote asset
    max_net_short: Decimal | None = None
    max_open_positions: int | None = None
    max_open_orders: int | None = None
    max_daily_loss: Decimal | None = None  # realized since the day's reset, net of fees
    max_daily_orders: int | None = None
    allow_symbols: list[str] | None = None  # when set, only these symbols
    deny_symbols: list[str] | None = None
    symbols: dict[str, SymbolLimits] = {}


class Limits(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The limits that apply to one order: every layer merged. Not configured directly."""

    min_quantity: Decimal | None = None
    max_quantity: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    max_position_pct: Decimal | None = None
    price_band_pct: Decimal | None = None
    equity: Decimal | None = None
    balance: Decimal | None = None
    max_total_exposure: Decimal | None = None
    max_net_long: Decimal | None = None
    max_net_short: Decimal | None = None
    max_open_positions: int | None = None
    max_open_orders: int | None = None
    max_daily_loss: Decimal | None = None
    max_daily_orders: int | None = None
    allow_symbols: list[str] | None = None
    deny_symbols: list[str] | None = None


class RiskSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The daily loss limit and the daily order count start again at this UTC time (HH:MM).
    day_reset_utc: str = "00:00"
    # Compare-and-set attempts of one batch's reservations when other workers keep moving
    # the account's risk state; when they run out, the batch's orders are denied.
    attempts: int = 8
    # A reservation this old whose order was never persisted is an orphan (its request was
    # dead-lettered after a crash between the checks and persist) and is released.
    orphan_after_ms: int = 600_000
    defaults: AccountLimits = msgspec.field(default_factory=AccountLimits)
    accounts: dict[str, AccountLimits] = {}

    def __post_init__(self) -> None:
        if not _HHMM.fullmatch(self.day_reset_utc):
            raise ValueError(f"risk.day_reset_utc must be HH:MM (UTC), got "
                             f"{self.day_reset_utc!r}")
        for name in ("attempts", "orphan_after_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"risk.{name} must be positive, got {getattr(self, name)}")
        check(self.defaults, "risk.defaults")
        for name, limits in self.accounts.items():
            check(limits, f"risk.accounts.{name}")

    @property
    def day_offset_ms(self) -> int:
        hours, minutes = self.day_reset_utc.split(":")
        return (int(hours) * 60 + int(minutes)) * 60_000


_FIELDS = Limits.__struct_fields__


def check(limits: SymbolLimits, where: str) -> None:
    """Raise ValueError naming the field of a limit that cannot be meant (negative, not a
    finite number, a minimum above its maximum)."""
    layers: list[tuple[str, SymbolLimits]] = [(where, limits)]
    if isinstance(limits, AccountLimits):
        layers += [(f"{where}.symbols.{s}", v) for s, v in limits.symbols.items()]
    for at, layer in layers:
        for name in layer.__struct_fields__:
            value = getattr(layer, name)
            if isinstance(value, Decimal) and (not value.is_finite() or value < 0):
                raise ValueError(f"{at}.{name} must be a non-negative decimal, got {value}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{at}.{name} must not be negative, got {value}")
        for low, high in (("min_quantity", "max_quantity"), ("min_notional", "max_notional")):
            lo, hi = getattr(layer, low), getattr(layer, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{at}.{low} {lo} is above {at}.{high} {hi}")


def resolve(settings: RiskSettings, account: str, symbol: str,
            runtime: AccountLimits | None = None) -> Limits:
    """The limits of an order of ``account`` in ``symbol``: the layers merged."""
    layers: list[SymbolLimits | None] = [settings.defaults,
                                         settings.defaults.symbols.get(symbol)]
    own = settings.accounts.get(account)
    if own is not None:
        layers += [own, own.symbols.get(symbol)]
    if runtime is not None:
        layers += [runtime, runtime.symbols.get(symbol)]
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in layer.__struct_fields__:
            value = getattr(layer, name)
            if value is not None and name in _FIELDS:
                merged[name] = value
    return Limits(**merged)


_decode_runtime = msgspec.json.Decoder(AccountLimits).decode
_encode = msgspec.json.Encoder().encode


def decode_runtime(data: bytes | str | None) -> AccountLimits | None:
    """Run-time limits as stored; None when there are none. Raises ValueError on what
    cannot be read (the caller denies: limits it cannot read are not limits it can
    enforce)."""
    if data is None:
        return None
    try:
        limits = _decode_runtime(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"stored run-time risk limits are unreadable: {exc}") from None
    return limits


def encode_runtime(limits: AccountLimits) -> bytes:
    return _encode(limits)


def apply_changes(current: AccountLimits | None, changes: dict[str, str],
                  symbol: str | None = None) -> AccountLimits:
    """``current`` with ``key=value`` changes applied (``none`` removes the key, so the
    configured value applies again). Raises ContractError naming the key on a bad one."""
    base: dict[str, Any] = msgspec.to_builtins(current or AccountLimits())
    target: dict[str, Any] = base
    allowed = AccountLimits.__struct_fields__
    if symbol is not None:
        target = base.setdefault("symbols", {}).setdefault(symbol, {})
        allowed = SymbolLimits.__struct_fields__
    for key, value in changes.items():
        if key not in allowed or key == "symbols":
            where = f"a symbol ({symbol})" if symbol is not None else "an account"
            raise ContractError(f"unknown risk limit {key!r} for {where}; known: "
                                f"{', '.join(k for k in allowed if k != 'symbols')}", key)
        if value.lower() in ("none", "null", ""):
            target.pop(key, None)
        elif key in ("allow_symbols", "deny_symbols"):
            target[key] = [s for s in (part.strip() for part in value.split(",")) if s]
        else:
            target[key] = value
    if symbol is not None and not target:
        base["symbols"].pop(symbol)
    try:
        limits: AccountLimits = msgspec.convert(base, AccountLimits, strict=False)
        check(limits, "risk")
    except (msgspec.ValidationError, ValueError) as exc:
        raise ContractError(f"invalid risk limits: {exc}") from None
    return limits
