"""Positions: one net position per (account, symbol), moved by fills, valued at average cost.

Method: AVERAGE COST. Adding to a position moves the average entry price to the
quantity-weighted mean of what is held and what is added; reducing it realizes
``(exit - average) * quantity`` for a long and ``(average - exit) * quantity`` for a short
and leaves the average where it was; a fill through zero first closes the whole position
(realizing its PnL) and opens the rest the other way at the fill's price; flat is quantity,
average and cost basis 0. We use average cost because a position here is one netted number
per symbol, and that is how exchanges and brokers value such a position (Binance futures'
entry price, Interactive Brokers' average cost), so what we show reconciles with what they
show. FIFO or tax lots need per-lot records; they can be derived later from the fills kept
in the event log without changing this.

Rounding: none, except for the average price.
- Quantities, cost basis, realized PnL and commissions are sums and products of decimals,
  computed exactly (a 200-digit context with Inexact trapped: a result that would need
  rounding raises rather than being rounded silently). Never float.
- The average price is a quotient, so it is rounded when set (on an add, a flip or an open)
  to ``AVERAGE_DIGITS`` significant digits, half-even. Significant digits, not places, so a
  price of 1e-10 keeps as many digits as a price of 50000. A reduce realizes at this stored
  average, as the formula says.
- The cost basis (``cost_basis``: signed quantity times entry price, negative for a short)
  is exact: an add puts the fill's exact cost in; a reduce leaves ``remaining quantity *
  average`` (so the average of what remains is the stored one, even when a dust remainder
  is left) and moves the rest into realized PnL, including the average's rounding (at most
  1e-34 of it); a close moves all that is left. So ``realized_pnl + unrealized(p)`` equals
  the sum of the fills' cash flows plus ``quantity * p`` exactly, for every price p, and a
  position that goes flat has realized exactly its cash flows.

Realized PnL is gross and cumulative (it carries on through flat); commissions are kept apart
in ``commission``, in the quote asset, so the net result is ``realized_pnl - commission``.

Commissions by the asset they were charged in (``apply_trade``):
- the quote asset (or no named asset): a cost, added to ``commission``;
- the base asset (Binance's default for a buy): the account holds that much less, on
  either side, so the position books the NET quantity (a buy of 1 BTC with a fee of
  0.001 BTC holds 0.999). The fee leaves the position as a disposal at the fill's own
  price whose proceeds are the commission: the quantity is exact, ``commission`` gets the
  fee valued at the price it was charged at (an exact product, no outside price), and the
  net result (realized - commission) is what the fee cost at the position's average;
- any other asset (BNB): kept per asset in ``other_commissions``, as charged, never added
  to the quote-asset amounts (it would need a price the events do not carry).
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_HALF_EVEN, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

import msgspec

from producer.contract import Fill, Side, WireDecimal, parse_decimal, wire, zero

AVERAGE_DIGITS = 34  # as IEEE 754 decimal128: far past any price's precision

_EXACT = decimal.Context(prec=200, rounding=ROUND_HALF_EVEN,
                         traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_AVERAGE = decimal.Context(prec=AVERAGE_DIGITS, rounding=ROUND_HALF_EVEN,
                           traps=[InvalidOperation, DivisionByZero, Overflow])


class Position(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The net position of one account in one symbol. Immutable: ``apply_fill`` returns a
    new one, so a caller can keep the old one until the new one is stored.

    Encoded with ``producer.contract.encode`` (fixed-point strings), read back with
    ``decode_position``: unlike a request's amounts, these can be negative."""

    account: str
    symbol: str
    quantity: WireDecimal = msgspec.field(default_factory=zero)  # long > 0, short < 0
    average_price: WireDecimal = msgspec.field(default_factory=zero)  # 0 when flat
    cost_basis: WireDecimal = msgspec.field(default_factory=zero)  # exact; sign of quantity
    realized_pnl: WireDecimal = msgspec.field(default_factory=zero)  # quote asset, gross
    # Quote asset, paid: fees in the quote asset, and fees in the base asset valued at
    # their fill's price.
    commission: WireDecimal = msgspec.field(default_factory=zero)
    # Fees in any other asset (BNB), per asset, as charged: in no quote-asset amount.
    other_commissions: dict[str, WireDecimal] = {}


def apply_fill(position: Position, side: Side, quantity: Decimal, price: Decimal,
               commission: Decimal = Decimal(0)) -> Position:
    """The position after one fill of ``quantity`` (> 0) at ``price`` (> 0), paying
    ``commission`` in the quote asset (negative for a rebate)."""
    if quantity <= 0 or price <= 0:
        raise ValueError(f"a fill needs a positive quantity and price, got {quantity} @ {price}")
    with decimal.localcontext(_EXACT):
        signed = quantity if side is Side.BUY else -quantity
        held = position.quantity
        after = held + signed
        paid = position.commission + commission
        if held == 0 or (held > 0) == (signed > 0):
            cost = position.cost_basis + signed * price
            return msgspec.structs.replace(
                position, quantity=wire(after), cost_basis=wire(cost),
                average_price=wire(_average(cost, after)), commission=wire(paid))
        direction = 1 if held > 0 else -1
        if quantity < abs(held):
            # What stays keeps the stored average exactly (cost basis = quantity * average):
            # the rounding of the average, at most 1e-34 of it, is realized now rather than
            # left in the cost basis, where a reduce to dust would make it the whole of the
            # average of what remains.
            kept = after * position.average_price
            removed = position.cost_basis - kept
            return msgspec.structs.replace(
                position, quantity=wire(after), cost_basis=wire(kept),
                realized_pnl=wire(position.realized_pnl + direction * price * quantity - removed),
                commission=wire(paid))
        # Closes all that was held (whatever the rounded average says, all of the cost basis
        # goes); what is left of the fill opens the other way at its price.
        realized = position.realized_pnl + price * held - position.cost_basis
        cost = after * price
        return msgspec.structs.replace(
            position, quantity=wire(after), cost_basis=wire(cost),
            average_price=wire(_average(cost, after)), realized_pnl=wire(realized),
            commission=wire(paid))


def unrealized(position: Position, reference_price: Decimal) -> Decimal:
    """What closing the whole position at ``reference_price`` would realize:
    ``(price - average) * quantity`` for a long or a short alike, taken on the exact cost
    basis rather than on the rounded average."""
    with decimal.localcontext(_EXACT):
        return position.quantity * reference_price - position.cost_basis


def decode_position(data: bytes | str) -> Position:
    return _decoder.decode(data)


# The contract's grammar (fixed-point digits, no exponent) with a sign in front, but wider:
# a request's amounts have at most 20 places, while a position's are computed (an average
# of AVERAGE_DIGITS digits, a cost basis that is such an average times a quantity), so they
# have as many digits as the exact 200-digit context gives them.
_POSITION_DECIMAL = re.compile(r"-?[0-9]{1,200}(\.[0-9]{1,200})?")


def _signed_decimal(tp: type, obj: object) -> object:
    if tp is WireDecimal:
        if isinstance(obj, str):
            if not _POSITION_DECIMAL.fullmatch(obj):
                raise ValueError(f"Expected a decimal string like '-0.010', got {obj!r}")
            # Decimal(str) is exact whatever the context (unary minus would round to 28).
            return WireDecimal(obj)
        return parse_decimal(obj)
    raise NotImplementedError(f"no decoder for {tp!r}")


_decoder = msgspec.json.Decoder(Position, dec_hook=_signed_decimal, float_hook=Decimal)


def _average(cost: Decimal, quantity: Decimal) -> Decimal:
    if quantity == 0:
        return Decimal(0)
    return _AVERAGE.divide(cost.copy_abs(), quantity.copy_abs())


def position_key(account: str, symbol: str) -> str:
    """The field of a position in the positions hash (account names have no ':')."""
    return f"{account}:{symbol}"


def apply_trade(position: Position, side: Side, fill: Fill, base_asset: str | None,
                quote_asset: str | None) -> Position:
    """The position after ``fill`` and its commission, by the asset it was charged in (see
    the module doc). A symbol whose base asset is unknown cannot tell a base-asset fee from
    a third asset's: such a fee is kept per asset, and the quantity stays gross."""
    asset, fee = fill.commission_asset, fill.commission
    if asset is None or asset == quote_asset:
        return apply_fill(position, side, fill.quantity, fill.price, fee)
    after = apply_fill(position, side, fill.quantity, fill.price)
    if asset == base_asset:
        if fee == 0:
            return after
        # The fee leaves (or, a rebate, joins) what is held, at the fill's price.
        return apply_fill(after, Side.SELL if fee > 0 else Side.BUY, fee.copy_abs(),
                          fill.price, _EXACT.multiply(fee, fill.price))
    others = dict(after.other_commissions)
    others[asset] = wire(_EXACT.add(others.get(asset, Decimal(0)), fee))
    return msgspec.structs.replace(after, other_commissions=others)


def split_key(key: str) -> tuple[str, str]:
    """The account and symbol of a ``position_key``; a symbol may contain ':', an account
    cannot."""
    account, _, symbol = key.partition(":")
    return account, symbol


def fold_fill(book: dict[str, Position], account: str, symbol: str, side: Side, fill: Fill,
              base_asset: str | None, quote_asset: str | None) -> Position:
    """Apply one fill to the position it moves in ``book`` (created flat if absent)."""
    key = position_key(account, symbol)
    position = book.get(key) or Position(account=account, symbol=symbol)
    book[key] = apply_trade(position, side, fill, base_asset, quote_asset)
    return book[key]
