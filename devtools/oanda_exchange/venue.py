"""The local OANDA venue: instruments, prices, orders and the transactions that change
them, as v20 JSON (string numbers and ids, order id = its create transaction's id).

Matching: a market order fills at once at the ask (buy) or bid (sell); a limit order fills
at once when the price is at or better than its limit, else rests until ``set_price``
crosses it; a stop order triggers when the price reaches its price against the order and
fills at market. A MARKET_IF_TOUCHED order, as v20.json documents it, keeps the market price
at its creation (``initialMarketPrice``) and fills at market once the price touches or
crosses its price from that side (from below: on a rise, from above: on a fall), whatever
its side. Triggers compare the price ``triggerCondition`` names (DEFAULT: the ask for a
buy, the bid for a sell; INVERSE the other; BID, ASK, MID); fills are always at the default
side. Liquidity is unbounded. A client id is refused CLIENT_ORDER_ID_ALREADY_EXISTS if any
order of the account ever had it (OANDA documents "another pending Order": stricter here,
never looser).

Trades (a netting account, as v20's default): a fill first reduces the open trades of the
other side, oldest first (closing a trade cancels its dependent orders, LINKED_TRADE_CLOSED),
and opens a trade with the rest (trade id = the fill's id, its clientExtensions the order's
``tradeClientExtensions``). An entry's ``takeProfitOnFill`` / ``stopLossOnFill`` /
``trailingStopLossOnFill`` (v20.json TakeProfitDetails, StopLossDetails,
TrailingStopLossDetails) become, in the fill's batch, the opened trade's TAKE_PROFIT /
STOP_LOSS / TRAILING_STOP_LOSS order (reason ON_FILL, its ``clientExtensions``,
``tradeID``, ``clientTradeID``; found by ``@`` client id). Such an order closes the whole
trade once the price reaches it (a take-profit at its price or better, a stop-loss at or
past it, a trailing stop at its distance from the best price since; fills at the default
side); the trade closed, the others are cancelled (one cancels the others). Checked at
create (400): the on-fill prices' precision, their times in force (GTC, GTD, GFD), ids
repeated within the request (ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS); at fill (the
entry cancelled with the reason, as v20's OrderCancelReason lists them): an on-fill client
id in use (TAKE_PROFIT_ON_FILL_CLIENT_ORDER_ID_ALREADY_EXISTS, ...), a take-profit or a
stop-loss on the losing side of the fill price (TAKE_PROFIT_ON_FILL_LOSS,
STOP_LOSS_ON_FILL_LOSS).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

_ACCEPTS = {  # v20 order type -> the times in force it accepts
    "MARKET": {"FOK", "IOC"},
    "LIMIT": {"GTC", "GTD", "GFD", "FOK", "IOC"},
    "STOP": {"GTC", "GTD", "GFD"},
    "MARKET_IF_TOUCHED": {"GTC", "GTD", "GFD"},
}

# An entry's on-fill details -> the dependent order they make, and its reject prefix.
ON_FILL = {"takeProfitOnFill": ("TAKE_PROFIT", "TAKE_PROFIT_ON_FILL"),
           "stopLossOnFill": ("STOP_LOSS", "STOP_LOSS_ON_FILL"),
           "trailingStopLossOnFill": ("TRAILING_STOP_LOSS", "TRAILING_STOP_LOSS_ON_FILL")}
DEPENDENT_TIF = frozenset({"GTC", "GTD", "GFD"})

DEPENDENT_TYPES = frozenset({"TAKE_PROFIT", "STOP_LOSS", "TRAILING_STOP_LOSS"})

# OrderTriggerCondition -> the price it compares.
_TRIGGERS = {"DEFAULT": "default", "INVERSE": "inverse", "BID": "bid", "ASK": "ask",
             "MID": "mid"}


def instrument(name: str, display: int, units: int = 0, minimum: str = "1",
               maximum: str = "100000000") -> dict[str, Any]:
    return {"name": name, "type": "CURRENCY", "displayName": name.replace("_", "/"),
            "pipLocation": -4 if display >= 4 else -2, "displayPrecision": display,
            "tradeUnitsPrecision": units, "minimumTradeSize": minimum,
            "maximumOrderUnits": maximum, "maximumPositionSize": "0",
            "marginRate": "0.0333"}


INSTRUMENTS = {i["name"]: i for i in (instrument("EUR_USD", 5), instrument("USD_JPY", 3),
                                      instrument("XAU_USD", 3, units=2, minimum="0.01"))}
PRICES = {"EUR_USD": ("1.10000", "1.10010"), "USD_JPY": ("150.000", "150.020"),
          "XAU_USD": ("2000.000", "2000.500")}


class Rejected(Exception):
    """A v20 error reply: its HTTP status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("errorMessage", ""))
        self.status = status
        self.body = body


def places(text: str) -> int:
    exponent = Decimal(text).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


class Venue:
    def __init__(self, account_id: str, currency: str = "USD",
                 clock: Callable[[], int] | None = None) -> None:
        self.account_id = account_id
        self.currency = currency
        self.clock = clock or time.time_ns  # nanoseconds
        self.instruments = {k: dict(v) for k, v in INSTRUMENTS.items()}
        self.prices = {k: (Decimal(b), Decimal(a)) for k, (b, a) in PRICES.items()}
        self.orders: dict[str, dict[str, Any]] = {}  # order id -> v20 Order
        self.by_client: dict[str, str] = {}  # clientExtensions.id -> order id
        self.transactions: dict[str, dict[str, Any]] = {}
        self.commission_per_unit = Decimal(0)
        self.created: Counter[str] = Counter()  # orders stored per clientExtensions.id
        self.duplicates: Counter[str] = Counter()  # refused: the client id was taken
        self._ids = itertools.count(1)
        self.last_id = "0"
        # Told of every transaction as it is made (the transactions stream).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # Told of the instrument whose price (or tradeable state) changed (the pricing
        # stream).
        self.price_listeners: list[Callable[[str], None]] = []
        self.halted: set[str] = set()  # instruments not tradeable now
        self.trades: dict[str, dict[str, Any]] = {}  # trade id -> v20 Trade

    # -- transactions -------------------------------------------------------------------

    def _tx(self, kind: str, **fields: Any) -> dict[str, Any]:
        tx_id = str(next(self._ids))
        tx = {"id": tx_id, "time": self.clock(), "accountID": self.account_id,
              "userID": 1, "batchID": tx_id, "type": kind, **fields}
        self.transactions[tx_id] = tx
        self.last_id = tx_id
        for listener in list(self.listeners):
            listener(tx)
        return tx

    def since(self, last: int, limit: int = 1000) -> list[dict[str, Any]]:
        """GET transactions/sinceid: the transactions after id ``last``, oldest first (at
        most ``limit``; OANDA's page size is [unverified])."""
        return [tx for key, tx in self.transactions.items() if int(key) > last][:limit]

    def reject(self, status: int, request: dict[str, Any], reason: str,
               message: str) -> Rejected:
        kind = str(request.get("type", "MARKET"))
        tx = self._tx(f"{kind}_ORDER_REJECT", rejectReason=reason,
                      **{k: v for k, v in request.items() if k != "type"})
        return Rejected(status, {"orderRejectTransaction": tx, "relatedTransactionIDs": [
            tx["id"]], "lastTransactionID": self.last_id, "errorCode": reason,
            "errorMessage": message})

    # -- orders -------------------------------------------------------------------------

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST orders: the 201 body, or ``Rejected`` (400 with orderRejectTransaction)."""
        self.validate(request)
        kind = request["type"]
        tif = request.get("timeInForce") or ("FOK" if kind == "MARKET" else "GTC")
        fields = {k: v for k, v in request.items() if k != "type"}
        fields.update(timeInForce=tif, positionFill=request.get("positionFill", "DEFAULT"))
        created = self._tx(f"{kind}_ORDER", reason="CLIENT_ORDER", **fields)
        order = {"id": created["id"], "createTime": created["time"], "type": kind,
                 "state": "PENDING", **fields}
        if kind != "MARKET":
            order["triggerCondition"] = request.get("triggerCondition", "DEFAULT")
        if kind == "MARKET_IF_TOUCHED":
            order["initialMarketPrice"] = str(self._trigger_price(order))
        self.orders[order["id"]] = order
        cid = (request.get("clientExtensions") or {}).get("id")
        if cid:
            self.by_client[cid] = order["id"]
            self.created[cid] += 1
        reply: dict[str, Any] = {"orderCreateTransaction": created}
        related = [created["id"]]
        done = self._match(order)
        if done is None and tif in ("FOK", "IOC"):
            done = self._cancel(order, "TIME_IN_FORCE_EXPIRED")
        if done is not None:
            key = ("orderFillTransaction" if done["type"] == "ORDER_FILL"
                   else "orderCancelTransaction")
            reply[key] = done
            related.append(done["id"])
        reply.update(relatedTransactionIDs=related, lastTransactionID=self.last_id)
        return reply

    def validate(self, request: dict[str, Any]) -> None:
        kind = request.get("type")
        if kind not in _ACCEPTS:
            raise Rejected(400, {"errorMessage": "Invalid value specified for 'type'"})
        name = request.get("instrument")
        inst = self.instruments.get(str(name))
        if inst is None:
            raise self.reject(400, request, "INSTRUMENT_UNKNOWN",
                              "Invalid value specified for 'instrument'")
        units = str(request.get("units", ""))
        try:
            amount = abs(Decimal(units))
        except ArithmeticError:
            raise self.reject(400, request, "UNITS_INVALID", "Invalid units") from None
        if places(units) > inst["tradeUnitsPrecision"]:
            raise self.reject(400, request, "UNITS_PRECISION_EXCEEDED",
                              "Units precision exceeded")
        if amount < Decimal(inst["minimumTradeSize"]):
            raise self.reject(400, request, "UNITS_MIMIMUM_NOT_MET", "Units minimum not met")
        if kind != "MARKET":
            price = request.get("price")
            if price is None:
                raise self.reject(400, request, "PRICE_MISSING", "Price missing")
            if places(str(price)) > inst["displayPrecision"]:
                raise self.reject(400, request, "PRICE_PRECISION_EXCEEDED",
                                  "Price precision exceeded")
        if request.get("triggerCondition", "DEFAULT") not in _TRIGGERS:
            raise self.reject(400, request, "TRIGGER_CONDITION_INVALID",
                              "Invalid value specified for 'triggerCondition'")
        tif = request.get("timeInForce")
        if tif is not None and tif not in _ACCEPTS[kind]:
            raise self.reject(400, request, "TIME_IN_FORCE_INVALID", "Time in force invalid")
        if tif == "GTD" and not request.get("gtdTime"):
            raise self.reject(400, request, "TIME_IN_FORCE_GTD_TIMESTAMP_MISSING",
                              "GTD time missing")
        self._validate_on_fill(request, inst)
        cid = (request.get("clientExtensions") or {}).get("id")
        if cid and cid in self.by_client:
            self.duplicates[cid] += 1
            raise self.reject(400, request, "CLIENT_ORDER_ID_ALREADY_EXISTS",
                              "The client order ID specified is already in use")

    def _validate_on_fill(self, request: dict[str, Any], inst: dict[str, Any]) -> None:
        ids = [(request.get("clientExtensions") or {}).get("id")]
        for key, (_, prefix) in ON_FILL.items():
            details = request.get(key)
            if details is None:
                continue
            field = "distance" if key == "trailingStopLossOnFill" else "price"
            value = details.get(field)
            if value is None:
                raise self.reject(400, request, f"{prefix}_PRICE_MISSING"
                                  if field == "price" else f"{prefix}_PRICE_DISTANCE_MISSING",
                                  f"{key} {field} missing")
            if places(str(value)) > inst["displayPrecision"]:
                raise self.reject(400, request, f"{prefix}_PRICE_PRECISION_EXCEEDED"
                                  if field == "price"
                                  else f"{prefix}_PRICE_DISTANCE_PRECISION_EXCEEDED",
                                  f"{key} {field} precision exceeded")
            if details.get("timeInForce", "GTC") not in DEPENDENT_TIF:
                raise self.reject(400, request, f"{prefix}_TIME_IN_FORCE_INVALID",
                                  f"{key} time in force invalid")
            ids.append((details.get("clientExtensions") or {}).get("id"))
        named = [i for i in ids if i]
        if len(named) != len(set(named)):
            raise self.reject(400, request, "ORDERS_ON_FILL_DUPLICATE_CLIENT_ORDER_IDS",
                              "Client order IDs of the order and its on-fill orders repeat")

    def find(self, specifier: str) -> dict[str, Any] | None:
        """An order by id or ``@`` client id."""
        if specifier.startswith("@"):
            order_id = self.by_client.get(specifier[1:])
            return None if order_id is None else self.orders.get(order_id)
        return self.orders.get(specifier)

    def cancel(self, specifier: str) -> dict[str, Any]:
        """PUT orders/{specifier}/cancel: the 200 body, or ``Rejected`` (404)."""
        order = self.find(specifier)
        if order is None or order["state"] != "PENDING":
            tx = self._tx("ORDER_CANCEL_REJECT", rejectReason="ORDER_DOESNT_EXIST",
                          orderID=None if order is None else order["id"],
                          clientOrderID=specifier[1:] if specifier.startswith("@") else None)
            raise Rejected(404, {"orderCancelRejectTransaction": tx,
                                 "relatedTransactionIDs": [tx["id"]],
                                 "lastTransactionID": self.last_id,
                                 "errorCode": "ORDER_DOESNT_EXIST",
                                 "errorMessage": "The order ID specified does not exist"})
        tx = self._cancel(order, "CLIENT_REQUEST")
        return {"orderCancelTransaction": tx, "relatedTransactionIDs": [tx["id"]],
                "lastTransactionID": self.last_id}

    def positions(self) -> list[dict[str, Any]]:
        """GET openPositions: per instrument, the net units of every fill (a netting
        account: one side holds them, the other "0"; instruments netting to zero are not
        open), as v20 Position objects (the amounts of money left at zero, no tradeIDs)."""
        net: dict[str, Decimal] = {}
        for tx in self.transactions.values():
            if tx["type"] == "ORDER_FILL":
                name = tx["instrument"]
                net[name] = net.get(name, Decimal(0)) + Decimal(tx["units"])
        out = []
        for name, units in sorted(net.items()):
            if not units:
                continue
            sides = {"long": _side(max(units, Decimal(0))),
                     "short": _side(min(units, Decimal(0)))}
            out.append({"instrument": name, "pl": "0.0000", "unrealizedPL": "0.0000",
                        "marginUsed": "0.0000", "resettablePL": "0.0000",
                        "financing": "0.0000", "commission": "0.0000", **sides})
        return out

    def price(self, name: str) -> dict[str, Any]:
        """The v20 ClientPrice of instrument ``name`` now (its time in epoch ns)."""
        bid, ask = self.prices[name]
        tradeable = name not in self.halted
        return {"type": "PRICE", "instrument": name, "time": self.clock(),
                "tradeable": tradeable, "status": "tradeable" if tradeable else "non-tradeable",
                "bids": [{"price": str(bid), "liquidity": 10_000_000}],
                "asks": [{"price": str(ask), "liquidity": 10_000_000}],
                "closeoutBid": str(bid), "closeoutAsk": str(ask)}

    def set_tradeable(self, name: str, tradeable: bool) -> None:
        """Halt (or reopen) an instrument: its prices say ``tradeable: false``."""
        if tradeable:
            self.halted.discard(name)
        else:
            self.halted.add(name)
        for listener in list(self.price_listeners):
            listener(name)

    def set_price(self, name: str, bid: str, ask: str) -> None:
        """Move the market: the pricing stream tells it, resting orders it reaches fill."""
        self.prices[name] = (Decimal(bid), Decimal(ask))
        for listener in list(self.price_listeners):
            listener(name)
        for order in list(self.orders.values()):
            if order["state"] == "PENDING" and self._instrument(order) == name:
                self._match(order)

    def _instrument(self, order: dict[str, Any]) -> str:
        """An order's instrument (a trade's dependent order names its trade's)."""
        if "instrument" in order:
            return str(order["instrument"])
        return str(self.trades[order["tradeID"]]["instrument"])

    def expire(self) -> None:
        """GTD orders past their time are cancelled TIME_IN_FORCE_EXPIRED."""
        now = self.clock()
        for order in list(self.orders.values()):
            if (order["state"] == "PENDING" and order.get("timeInForce") == "GTD"
                    and Decimal(str(order["gtdTime"])) * 10**9 <= now):
                self._cancel(order, "TIME_IN_FORCE_EXPIRED")

    def _match(self, order: dict[str, Any]) -> dict[str, Any] | None:
        """Fill ``order`` if the market reaches it now: its ORDER_FILL (or the ORDER_CANCEL
        of an entry whose on-fill orders cannot be made), else None."""
        if order["type"] in DEPENDENT_TYPES:
            return self._match_dependent(order)
        bid, ask = self.prices[order["instrument"]]
        buy = Decimal(order["units"]) > 0
        market = ask if buy else bid
        kind = order["type"]
        if kind != "MARKET":
            price = Decimal(str(order["price"]))
            if kind == "MARKET_IF_TOUCHED":
                if not self._touched(order, price):
                    return None
            elif not {"LIMIT": market <= price if buy else market >= price,
                      "STOP": market >= price if buy else market <= price}[kind]:
                return None
        refusal = self._on_fill_refusal(order, market, buy)
        if refusal is not None:
            return self._cancel(order, refusal)
        fill = self._fill(order, Decimal(order["units"]), market, f"{kind}_ORDER")
        order.update(state="FILLED", fillingTransactionID=fill["id"], filledTime=fill["time"])
        opened = fill.get("tradeOpened")
        if opened is not None:
            order["tradeOpenedID"] = opened["tradeID"]
            self._dependents(order, self.trades[opened["tradeID"]], fill)
        return fill

    def _on_fill_refusal(self, order: dict[str, Any], market: Decimal,
                         buy: bool) -> str | None:
        """Why an entry's on-fill orders cannot be made at a fill at ``market`` (the entry
        is then cancelled with that reason), else None."""
        for key, (_, prefix) in ON_FILL.items():
            details = order.get(key)
            if details is None:
                continue
            cid = (details.get("clientExtensions") or {}).get("id")
            if cid and cid in self.by_client:
                return f"{prefix}_CLIENT_ORDER_ID_ALREADY_EXISTS"
            if key == "trailingStopLossOnFill":
                continue
            price = Decimal(str(details["price"]))
            profit = key == "takeProfitOnFill"
            losing = (price <= market if buy else price >= market) if profit else (
                price >= market if buy else price <= market)
            if losing:
                return f"{prefix}_LOSS"
        return None

    def _fill(self, order: dict[str, Any], units: Decimal, market: Decimal,
              reason: str) -> dict[str, Any]:
        """The ORDER_FILL of ``units`` of ``order`` at ``market``: open trades of the other
        side reduced (oldest first), a trade opened with the rest."""
        name = self._instrument(order)
        bid, ask = self.prices[name]
        left = units
        closed: list[dict[str, Any]] = []
        reduced: dict[str, Any] | None = None
        for trade in sorted((t for t in self.trades.values()
                             if t["state"] == "OPEN" and t["instrument"] == name
                             and (Decimal(t["currentUnits"]) > 0) != (units > 0)),
                            key=lambda t: int(t["id"])):
            if not left:
                break
            current = Decimal(trade["currentUnits"])
            take = min(abs(left), abs(current))
            change = {"tradeID": trade["id"], "units": str(-current / abs(current) * take),
                      "price": str(market)}
            if take == abs(current):
                closed.append(change)
            else:
                reduced = change
            trade["currentUnits"] = str(current - current / abs(current) * take)
            left -= left / abs(left) * take
        fields: dict[str, Any] = {}
        if closed:
            fields["tradesClosed"] = closed
        if reduced is not None:
            fields["tradeReduced"] = reduced
        if left and order["type"] not in DEPENDENT_TYPES \
                and order.get("positionFill") != "REDUCE_ONLY":
            fields["tradeOpened"] = {"tradeID": None, "units": str(left),
                                     "price": str(market),
                                     "clientExtensions": order.get("tradeClientExtensions")}
        fill = self._tx(
            "ORDER_FILL", orderID=order["id"], instrument=name,
            units=str(units), price=str(market), fullVWAP=str(market),
            fullPrice={"bids": [{"price": str(bid)}], "asks": [{"price": str(ask)}]},
            reason=reason, pl="0.0000", financing="0.0000",
            commission=str(abs(units) * self.commission_per_unit),
            guaranteedExecutionFee="0.0000", accountBalance="100000.0000",
            halfSpreadCost="0.0000", **fields, **_client_order_id(order))
        if "tradeOpened" in fill:
            fill["tradeOpened"]["tradeID"] = fill["id"]
            self.trades[fill["id"]] = {
                "id": fill["id"], "instrument": name, "price": str(market),
                "openTime": fill["time"], "state": "OPEN", "initialUnits": str(left),
                "currentUnits": str(left), "best": str(market),
                "clientExtensions": order.get("tradeClientExtensions")}
        for change in closed:
            trade = self.trades[change["tradeID"]]
            trade.update(state="CLOSED", closeTime=fill["time"])
            for dependent in self._dependents_of(trade):
                self._cancel(dependent, "LINKED_TRADE_CLOSED")
        return fill

    def _dependents(self, order: dict[str, Any], trade: dict[str, Any],
                    fill: dict[str, Any]) -> None:
        """The trade's dependent orders an entry's on-fill details ask for."""
        client_trade = (trade.get("clientExtensions") or {}).get("id")
        for key, (kind, _) in ON_FILL.items():
            details = order.get(key)
            if details is None:
                continue
            fields = {k: v for k, v in details.items() if k != "clientExtensions"}
            fields.setdefault("timeInForce", "GTC")
            fields.update(tradeID=trade["id"], triggerCondition="DEFAULT")
            if client_trade:
                fields["clientTradeID"] = client_trade
            if details.get("clientExtensions"):
                fields["clientExtensions"] = details["clientExtensions"]
            created = self._tx(f"{kind}_ORDER", reason="ON_FILL",
                               orderFillTransactionID=fill["id"], **fields)
            dependent = {"id": created["id"], "createTime": created["time"], "type": kind,
                         "state": "PENDING", **fields}
            if kind == "TRAILING_STOP_LOSS":
                dependent["trailingStopValue"] = str(self._trail(dependent, trade))
            self.orders[dependent["id"]] = dependent
            cid = (details.get("clientExtensions") or {}).get("id")
            if cid:
                self.by_client[cid] = dependent["id"]
                self.created[cid] += 1

    def _dependents_of(self, trade: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for o in self.orders.values()
                if o["state"] == "PENDING" and o.get("tradeID") == trade["id"]]

    def _trail(self, order: dict[str, Any], trade: dict[str, Any]) -> Decimal:
        distance = Decimal(str(order["distance"]))
        best = Decimal(trade["best"])
        return best - distance if Decimal(trade["currentUnits"]) > 0 else best + distance

    def _match_dependent(self, order: dict[str, Any]) -> dict[str, Any] | None:
        """A trade's TAKE_PROFIT / STOP_LOSS / TRAILING_STOP_LOSS: the whole trade closed
        at market once the price reaches it (the closing side: the bid for a long
        trade)."""
        trade = self.trades[order["tradeID"]]
        long = Decimal(trade["currentUnits"]) > 0
        bid, ask = self.prices[trade["instrument"]]
        market = bid if long else ask
        kind = order["type"]
        if kind == "TRAILING_STOP_LOSS":
            best = Decimal(trade["best"])
            trade["best"] = str(max(best, market) if long else min(best, market))
            order["trailingStopValue"] = str(self._trail(order, trade))
            price = Decimal(order["trailingStopValue"])
        else:
            price = Decimal(str(order["price"]))
        reached = (market >= price if long else market <= price) if kind == "TAKE_PROFIT" \
            else (market <= price if long else market >= price)
        if not reached:
            return None
        units = -Decimal(trade["currentUnits"])
        fill = self._fill(order, units, market, f"{kind}_ORDER")
        order.update(state="FILLED", fillingTransactionID=fill["id"], filledTime=fill["time"],
                     tradeClosedIDs=[trade["id"]])
        return fill

    def _trigger_price(self, order: dict[str, Any]) -> Decimal:
        """The price ``order``'s triggerCondition compares with its price."""
        bid, ask = self.prices[order["instrument"]]
        buy = Decimal(order["units"]) > 0
        side = _TRIGGERS[order.get("triggerCondition", "DEFAULT")]
        if side == "mid":
            return (bid + ask) / 2
        if side == "default":
            return ask if buy else bid
        if side == "inverse":
            return bid if buy else ask
        return bid if side == "bid" else ask

    def _touched(self, order: dict[str, Any], price: Decimal) -> bool:
        """Whether a MARKET_IF_TOUCHED order's trigger price reached its price from the side
        the market was on at its creation (at its price then: touched at once)."""
        now = self._trigger_price(order)
        initial = Decimal(order["initialMarketPrice"])
        if initial > price:
            return now <= price
        if initial < price:
            return now >= price
        return True

    def trade(self, specifier: str) -> dict[str, Any] | None:
        """A trade by id or ``@`` client id."""
        if specifier.startswith("@"):
            return next((t for t in self.trades.values()
                         if (t.get("clientExtensions") or {}).get("id") == specifier[1:]),
                        None)
        return self.trades.get(specifier)

    def _cancel(self, order: dict[str, Any], reason: str) -> dict[str, Any]:
        tx = self._tx("ORDER_CANCEL", orderID=order["id"], reason=reason,
                      **_client_order_id(order))
        order.update(state="CANCELLED", cancellingTransactionID=tx["id"],
                     cancelledTime=tx["time"])
        return tx


def _side(units: Decimal) -> dict[str, Any]:
    """One side of a v20 Position (PositionSide): its units, negative for a short."""
    return {"units": str(units), "pl": "0.0000", "unrealizedPL": "0.0000",
            "resettablePL": "0.0000", "financing": "0.0000"}


def _client_order_id(order: dict[str, Any]) -> dict[str, Any]:
    cid = (order.get("clientExtensions") or {}).get("id")
    return {} if cid is None else {"clientOrderID": cid}
