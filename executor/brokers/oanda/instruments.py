"""The rules of OANDA's instruments (GET /v3/accounts/{id}/instruments) that an order must
meet before it is sent, and the number formats they imply. Pure: no I/O.

``displayPrecision``: the decimal places of prices; ``tradeUnitsPrecision``: of units (0
for currency pairs: whole units); ``minimumTradeSize`` and ``maximumOrderUnits``: the
smallest and largest order, in units.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from producer.contract import ContractError, OrderSpec

# Wide enough for any decimal the contract admits (20 integer and 20 fraction digits).
_EXACT = decimal.Context(prec=60)


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    base: str
    quote: str
    display_precision: int
    units_precision: int
    minimum_units: Decimal
    maximum_units: Decimal | None  # None: OANDA states no maximum


def assets(name: str) -> tuple[str, str]:
    """Base and quote asset of an instrument name: EUR_USD -> (EUR, USD)."""
    base, _, quote = name.rpartition("_")
    return (base, quote) if base else (name, "")


def parse(reply: Mapping[str, Any]) -> dict[str, Instrument]:
    """The rules of every instrument in an instruments reply, by name."""
    rules = {}
    for raw in reply.get("instruments", []):
        name = str(raw["name"])
        base, quote = assets(name)
        maximum = Decimal(str(raw.get("maximumOrderUnits", "0")))
        rules[name] = Instrument(
            name=name, base=base, quote=quote,
            display_precision=int(raw["displayPrecision"]),
            units_precision=int(raw.get("tradeUnitsPrecision", 0)),
            minimum_units=Decimal(str(raw.get("minimumTradeSize", "1"))),
            maximum_units=maximum if maximum > 0 else None)
    return rules


def places(value: Decimal) -> int:
    """Decimal places ``value`` needs (trailing zeros do not count): 1.2300 -> 2."""
    exponent = value.normalize(_EXACT).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def fixed(value: Decimal, precision: int) -> str:
    """``value`` written with exactly ``precision`` decimal places (it has no more)."""
    return format(value.quantize(Decimal(1).scaleb(-precision), context=_EXACT), "f")


def check(order: OrderSpec, inst: Instrument) -> None:
    """Raise ``ContractError`` naming the field and the rule if OANDA would refuse the
    order's size or prices (UNITS_PRECISION_EXCEEDED, UNITS_MIMIMUM_NOT_MET, units above
    maximumOrderUnits, PRICE_PRECISION_EXCEEDED)."""
    if order.quantity is None:
        raise ContractError("quote_quantity is not supported by OANDA: give quantity in "
                            "units", "quote_quantity")
    units = order.quantity
    if places(units) > inst.units_precision:
        raise ContractError(f"quantity {units} has more decimal places than {inst.name}'s "
                            f"tradeUnitsPrecision {inst.units_precision}", "quantity")
    if units < inst.minimum_units:
        raise ContractError(f"quantity {units} is below {inst.name}'s minimumTradeSize "
                            f"{inst.minimum_units}", "quantity")
    if inst.maximum_units is not None and units > inst.maximum_units:
        raise ContractError(f"quantity {units} is above {inst.name}'s maximumOrderUnits "
                            f"{inst.maximum_units}", "quantity")
    for field in ("price", "stop_price"):
        value = getattr(order, field)
        if value is not None and places(value) > inst.display_precision:
            raise ContractError(f"{field} {value} has more decimal places than "
                                f"{inst.name}'s displayPrecision {inst.display_precision}",
                                field)
