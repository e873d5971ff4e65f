"""An order component that sizes a position by the risk it takes: the quantity whose loss,
should the price go from the entry to the signal's stop, is the configured risk amount.

    quantity = risk / |entry - stop|, rounded down to the symbol's lot step

so a wider stop buys less. Run it against a worker (a BTCUSDT market buy risking 100 USDT
with its stop 500 below the ask: 0.2 BTC):

    REDIS_URL=redis://localhost:6379/0 python -m examples.python.risk_sized
"""

from __future__ import annotations

from decimal import Context, Decimal

import msgspec

from producer import MarketData, OrderComponent, OrderType, Request, Side, Signal
from producer.components import require_decimals
from producer.contract import decimal_text, wire

from .publish import run

# Prices and quantities have up to 20 + 20 digits: the default context (28 digits) would
# round their products, and a quantity rounded up risks more than the budget.
_EXACT = Context(prec=200)


class RiskSizedConfig(msgspec.Struct, frozen=True, kw_only=True):
    risk: Decimal  # the quote amount lost if the stop is hit
    lot_step: Decimal  # the symbol's quantity step: the quantity is a multiple of it
    # market, or limit at the signal's entry (without one, at the bid for a buy, the ask
    # for a sell: joining the book rather than crossing it)
    entry: OrderType = OrderType.MARKET

    def __post_init__(self) -> None:
        require_decimals(self, "risk", "lot_step")
        if self.entry not in (OrderType.MARKET, OrderType.LIMIT):
            raise ValueError(f"entry must be market or limit, got {self.entry}")


def risk_quantity(risk: Decimal, entry: Decimal, stop: Decimal, side: Side,
                  lot_step: Decimal) -> Decimal | None:
    """The most whole lots whose loss from ``entry`` to ``stop`` is at most ``risk``,
    exactly; None when the stop is not on the losing side of the entry (at it, or beyond it
    on the winning side: the signal is void) or not even one lot fits the risk."""
    distance = _EXACT.subtract(entry, stop) if side == Side.BUY else _EXACT.subtract(stop, entry)
    if distance <= 0:
        return None
    lots = _EXACT.divide_int(risk, _EXACT.multiply(distance, lot_step))
    return _EXACT.multiply(lots, lot_step) if lots > 0 else None


class RiskSized(OrderComponent):
    name = "risk_sized"
    version = "1.0.0"

    def __init__(self, config: RiskSizedConfig) -> None:
        self.config = config

    def generate_order(self, market: MarketData, signal: Signal | None) -> Request | None:
        if signal is None or signal.stop is None:
            return None  # no stop, no size
        limit = self.config.entry == OrderType.LIMIT
        if not limit:
            entry = market.price(signal.side)
        elif signal.entry is not None:
            entry = signal.entry
        else:
            entry = market.bid if signal.side == Side.BUY else market.ask
        quantity = risk_quantity(self.config.risk, entry, signal.stop, signal.side,
                                 self.config.lot_step)
        if quantity is None:
            return None
        return Request(symbol=market.symbol, side=signal.side, type=self.config.entry,
                       quantity=wire(quantity), price=wire(entry) if limit else None,
                       metadata={"risk": decimal_text(self.config.risk),
                                 "stop": decimal_text(signal.stop)})


def main() -> None:
    run(RiskSized(RiskSizedConfig(risk=Decimal("100"), lot_step=Decimal("0.001"))))


if __name__ == "__main__":
    main()
