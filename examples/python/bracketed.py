"""An order component that wraps another's order in a bracket: a take-profit and a
stop-loss at configured distances (a price amount, or basis points) from the entry's
price, or from the market price for a market entry. The workers place them as one oco
once the entry fills (docs/wire-contract.md, "Contingent lists: brackets and OTO").

A buy's take-profit is above its entry and its stop-loss below; a sell's the other way
round. Both are rounded to the symbol's tick, the take-profit away from the entry and the
stop-loss towards it: the reward is never less and the risk never more than configured.

Run it against a worker (the risk-sized BTCUSDT buy of examples/python/risk_sized.py with
its take-profit 200 bps above the ask and its stop-loss 100 bps below):

    REDIS_URL=redis://localhost:6379/0 python -m examples.python.bracketed
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal

import msgspec

from producer import MarketData, OrderComponent, Request, Side, Signal
from producer.components import COMPONENT_KEY, VERSION_KEY, require_decimals
from producer.contract import ContractError, OtoTrigger, wire_opt

from .publish import run
from .risk_sized import RiskSized, RiskSizedConfig

_EXACT = Context(prec=200)  # as in risk_sized.py: no rounding but the tick's


class Unit(enum.StrEnum):
    PRICE = "price"  # an amount of the quote currency
    BPS = "bps"  # basis points of the entry's price (100 bps = 1%)


class BracketConfig(msgspec.Struct, frozen=True, kw_only=True):
    tick: Decimal  # the symbol's price increment
    take_profit: Decimal | None = None  # distances from the entry, in ``unit``
    stop_loss: Decimal | None = None
    unit: Unit = Unit.PRICE
    oto_trigger: OtoTrigger | None = None  # the workers' default: full

    def __post_init__(self) -> None:
        require_decimals(self, "tick", "take_profit", "stop_loss")
        if self.take_profit is None and self.stop_loss is None:
            raise ValueError("a bracket needs take_profit or stop_loss")


def bracket(side: Side, entry: Decimal,
            config: BracketConfig) -> tuple[Decimal | None, Decimal | None]:
    """(take_profit, stop_loss) for an entry at ``entry``; a ContractError naming
    ``stop_loss`` when it rounds onto the entry (closer than a tick)."""
    buy = side == Side.BUY
    # Up for a buy, down for a sell: away from the entry for its take-profit (above a
    # buy's), towards it for its stop-loss (below a buy's).
    rounding = ROUND_CEILING if buy else ROUND_FLOOR

    def level(distance: Decimal | None, towards_profit: bool) -> Decimal | None:
        if distance is None:
            return None
        if config.unit is Unit.BPS:
            distance = _EXACT.divide(_EXACT.multiply(entry, distance), 10_000)
        up = buy == towards_profit
        exact = _EXACT.add(entry, distance) if up else _EXACT.subtract(entry, distance)
        ticks = _EXACT.divide(exact, config.tick).to_integral_value(rounding=rounding)
        return _EXACT.multiply(ticks, config.tick)

    take_profit = level(config.take_profit, towards_profit=True)
    stop_loss = level(config.stop_loss, towards_profit=False)
    if stop_loss is not None and (stop_loss >= entry if buy else stop_loss <= entry):
        raise ContractError(f"stop_loss {config.stop_loss} {config.unit} from {entry} is "
                            f"{stop_loss} at tick {config.tick}: not beyond the entry",
                            "stop_loss")
    return take_profit, stop_loss


class Bracketed(OrderComponent):
    name = "bracketed"
    version = "1.0.0"

    def __init__(self, inner: OrderComponent, config: BracketConfig) -> None:
        self.inner = inner
        self.config = config

    def generate_order(self, market: MarketData, signal: Signal | None) -> Request | None:
        request = self.inner.generate_order(market, signal)
        if request is None or request.side is None:
            return request  # no order; or one without a side, which order() refuses
        for field in ("take_profit", "stop_loss"):
            if getattr(request, field) is not None:
                raise ContractError(f"{field} is set by {self.inner.name} already: wrap an "
                                    "order without levels", field)
        # As the contract checks the levels: against the price, else the trigger.
        entry = request.price if request.price is not None else request.stop_price
        take_profit, stop_loss = bracket(
            request.side, market.price(request.side) if entry is None else entry,
            self.config)
        # The wrapped component's name and version, beside this one's own stamp.
        wraps = {COMPONENT_KEY: self.inner.name, VERSION_KEY: self.inner.version}
        return msgspec.structs.replace(
            request, take_profit=wire_opt(take_profit), stop_loss=wire_opt(stop_loss),
            oto_trigger=self.config.oto_trigger,
            metadata={**(request.metadata or {}), "wraps": wraps})


def main() -> None:
    sized = RiskSized(RiskSizedConfig(risk=Decimal("100"), lot_step=Decimal("0.001")))
    run(Bracketed(sized, BracketConfig(tick=Decimal("0.01"), take_profit=Decimal("200"),
                                       stop_loss=Decimal("100"), unit=Unit.BPS)))


if __name__ == "__main__":
    main()
