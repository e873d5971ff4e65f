"""Plain-text rendering for the operator commands: one table shape, one way to show an age
and an absent value, so every view reads alike."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal

from producer.contract import decimal_text

DASH = "-"  # a value that is absent or unknown


def cell(value: object) -> str:
    if value is None:
        return DASH
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
          right: Collection[int] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; the columns numbered in
    ``right`` (numbers) are right-aligned so their digits line up."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def age(ms: int) -> str:
    """A duration as its two largest units: ``3d4h``, ``5m12s``, ``850ms``."""
    if ms < 1_000:
        return f"{max(ms, 0)}ms"
    parts: list[str] = []
    for unit, size in _UNITS:
        if ms >= size or parts:
            parts.append(f"{ms // size}{unit}")
            ms %= size
        if len(parts) == 2:
            break
    return "".join(p for p in parts if not p.startswith("0")) or parts[0]
