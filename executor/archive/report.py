"""The daily report: per UTC day, account and symbol, the fills, the volume bought and sold,
the notional traded, the fees per asset and the realized PnL, added up in Decimal from the
archived fills (SQL never sums an amount: SQLite would do it in floats)."""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import WireDecimal, wire, zero

_EXACT = decimal.Context(prec=200, traps=[decimal.Inexact, decimal.InvalidOperation])


class DayLine(msgspec.Struct, kw_only=True):
    day: str  # YYYY-MM-DD, UTC
    account: str
    symbol: str
    fills: int = 0
    bought: WireDecimal = msgspec.field(default_factory=zero)  # base quantity
    sold: WireDecimal = msgspec.field(default_factory=zero)
    notional: WireDecimal = msgspec.field(default_factory=zero)  # sum of price * quantity
    fees: dict[str, WireDecimal] = {}  # per asset charged ("" : the quote asset)
    realized_pnl: WireDecimal = msgspec.field(default_factory=zero)  # quote asset, gross
    # Fills whose order's side was not archived: in the counts, not in bought/sold or PnL.
    unknown_side: int = 0


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def daily(fills: Iterable[Mapping[str, Any]]) -> list[DayLine]:
    lines: dict[tuple[str, str, str], DayLine] = {}
    for f in fills:
        key = (day_of(f["at"]), f["account"], f["symbol"])
        line = lines.get(key) or DayLine(day=key[0], account=key[1], symbol=key[2])
        lines[key] = line
        quantity: Decimal = f["quantity"]
        line.fills += 1
        line.notional = wire(_EXACT.add(line.notional, _EXACT.multiply(f["price"], quantity)))
        if f["side"] == "buy":
            line.bought = wire(_EXACT.add(line.bought, quantity))
        elif f["side"] == "sell":
            line.sold = wire(_EXACT.add(line.sold, quantity))
        else:
            line.unknown_side += 1
        if f["commission"]:
            asset = f["commission_asset"] or ""
            fees = dict(line.fees)
            fees[asset] = wire(_EXACT.add(fees.get(asset, Decimal(0)), f["commission"]))
            line.fees = fees
        if f["realized_pnl"] is not None:
            line.realized_pnl = wire(_EXACT.add(line.realized_pnl, f["realized_pnl"]))
    return [lines[k] for k in sorted(lines)]
