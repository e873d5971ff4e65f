"""Native contingent lists at OANDA (``native_lists = true``): an entry with take_profit and
stop_loss goes out with takeProfitOnFill / stopLossOnFill, so the local v20 venue makes the
trade's TAKE_PROFIT and STOP_LOSS orders in the fill's batch; the workers' exit
``<entry>-x1`` is then taken as those orders (adopted), never sent nor emulated a second
time; a capped or later exit replaces them; a list that ends without an exit of ours
cancels them; one that has filled is never followed by another exit; their transactions
reach the adopted exit, and nothing of them before; a worker SIGKILLed between the fill
and the adoption leaves one exit, adopted by its heir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.oanda_exchange import OandaExchangeServer
from executor.brokers.base import BrokerOrder, BrokerStatus, PermanentError, UnknownOutcome
from executor.brokers.oanda.broker import OandaBroker
from executor.config import Settings
from executor.model.lists import exit_request
from executor.model.order import spec_from_request
from producer.client import OrderClient
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    OtoTrigger,
    ResultStatus,
    Side,
    WireDecimal,
)
from producer.keys import Keys
from tests.fakes.oanda import (
    ACCOUNT_ENV,
    ACCOUNT_ID,
    TOKEN,
    TOKEN_ENV,
    account_for,
    oanda,
    venue,
)
from tests.fakes.threaded import in_thread

from .conftest import running, until
from .native_heir import killed_before_adoption
from .test_lists import list_over, order_in
from .test_oanda_worker import oanda_settings

__all__ = ["oanda", "venue"]  # fixtures

K = Keys()
D = WireDecimal


@pytest.fixture
async def native(venue: OandaExchangeServer) -> AsyncIterator[OandaBroker]:
    b = OandaBroker("oa", account_for(venue, native_lists=True))
    await b.start()
    yield b
    await b.close()


def entry(quantity: str = "1000", price: str | None = None, *, tp: str | None = "1.12",
          sl: str | None = "1.08", side: Side = Side.BUY, **kw: Any) -> OrderSpec:
    fields: dict[str, Any] = {"type": OrderType.MARKET if price is None else OrderType.LIMIT,
                              "oto_trigger": OtoTrigger.FULL,
                              "price": None if price is None else D(price), **kw}
    return OrderSpec(account="oa", symbol="EUR_USD", side=side, quantity=D(quantity),
                     take_profit=None if tp is None else D(tp),
                     stop_loss=None if sl is None else D(sl), **fields)


def exit_of(cid: str, spec: OrderSpec, quantity: str, n: int = 1) -> OrderSpec:
    return spec_from_request(exit_request(cid, spec, Decimal(quantity), n), "oa")


def sent(server: OandaExchangeServer) -> list[dict[str, Any]]:
    return [r.body["order"] for r in server.orders_sent()]


def state_at(server: OandaExchangeServer, cid: str) -> str:
    order = server.venue.find(f"@{cid}")
    assert order is not None, cid
    return str(order["state"])


def cancel_reason(server: OandaExchangeServer, cid: str) -> str:
    order = server.venue.find(f"@{cid}")
    assert order is not None
    return str(server.venue.transactions[order["cancellingTransactionID"]]["reason"])


def exit_orders(server: OandaExchangeServer) -> list[dict[str, Any]]:
    """The orders that close a position: the trades' dependent ones and reduce-only ones."""
    return [o for o in server.venue.orders.values()
            if o["type"] in ("TAKE_PROFIT", "STOP_LOSS") or o.get("positionFill") ==
            "REDUCE_ONLY"]


# -- the request as OANDA receives it ----------

async def test_a_bracket_entry_carries_its_exits_on_fill_under_the_exits_ids(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    report = await native.submit("E1", entry(price="1.09"))
    assert sent(venue) == [{
        "type": "LIMIT", "instrument": "EUR_USD", "units": "1000", "timeInForce": "GTC",
        "positionFill": "DEFAULT", "price": "1.09000",
        "clientExtensions": {"id": "E1"}, "tradeClientExtensions": {"id": "E1"},
        "takeProfitOnFill": {"price": "1.12000", "timeInForce": "GTC",
                             "clientExtensions": {"id": "E1-x1-tp"}},
        "stopLossOnFill": {"price": "1.08000", "timeInForce": "GTC",
                           "clientExtensions": {"id": "E1-x1-sl"}}}]
    assert (report.client_order_id, report.status, report.quantity) == (
        "E1", BrokerStatus.NEW, Decimal("1000"))
    assert report.native_exits
    assert venue.venue.find("@E1-x1-tp") is None  # made only when the entry fills
    looked = await native.get_order("E1", "EUR_USD")
    assert looked.status is BrokerStatus.NEW and looked.native_exits
    venue.set_price("EUR_USD", "1.08990", "1.09000")  # the ask at the limit: filled
    assert (state_at(venue, "E1"), state_at(venue, "E1-x1-tp"),
            state_at(venue, "E1-x1-sl")) == ("FILLED", "PENDING", "PENDING")
    tp = venue.venue.find("@E1-x1-tp")
    assert tp is not None and (tp["type"], tp["price"], tp["clientTradeID"]) == (
        "TAKE_PROFIT", "1.12000", "E1")


@pytest.mark.parametrize(("tp", "sl", "key", "cid"), [
    ("1.12", None, "takeProfitOnFill", "E2-x1-tp"),
    (None, "1.08", "stopLossOnFill", "E2-x1-sl"),
])
async def test_one_level_is_one_on_fill_order(
        native: OandaBroker, venue: OandaExchangeServer, tp: str | None, sl: str | None,
        key: str, cid: str) -> None:
    report = await native.submit("E2", entry(tp=tp, sl=sl, oto_trigger=OtoTrigger.PARTIAL))
    [body] = sent(venue)
    assert {k: v for k, v in body.items() if k.endswith("OnFill")} == {
        key: {"price": "1.12000" if tp else "1.08000", "timeInForce": "GTC",
              "clientExtensions": {"id": cid}}}
    # A market entry fills at once: the trade's exit is there in the same batch.
    assert report.status is BrokerStatus.FILLED and report.native_exits
    assert state_at(venue, cid) == "PENDING"


@pytest.mark.parametrize("spec", [
    entry(price="1.09", tp="1.085"),  # a take-profit below a buy's limit: a loss at fill
    entry(price="1.09", sl="1.095"),  # a stop-loss above it
    entry(tp="1.120005"),  # finer than EUR_USD's displayPrecision: the exit would be refused
    entry(reduce_only=True),  # REDUCE_ONLY opens no trade
    entry(type=OrderType.STOP, stop_price=D("1.2")),
], ids=["losing-tp", "losing-sl", "precision", "reduce-only", "stop"])
async def test_what_oanda_cannot_hold_goes_as_a_plain_entry(
        native: OandaBroker, venue: OandaExchangeServer, spec: OrderSpec) -> None:
    try:
        report = await native.submit("E3", spec)
    except PermanentError:
        report = None  # refused for itself (not for on-fill orders): nothing sent natively
    assert all(not any(k.endswith("OnFill") for k in body) for body in sent(venue))
    assert report is None or not report.native_exits


async def test_off_by_default(oanda: OandaBroker, venue: OandaExchangeServer) -> None:
    report = await oanda.submit("E4", entry())
    [body] = sent(venue)
    assert "takeProfitOnFill" not in body and "stopLossOnFill" not in body
    assert not report.native_exits and venue.venue.find("@E4-x1-tp") is None


async def test_an_entry_refused_for_its_on_fill_part_goes_plain(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    """OANDA refuses the on-fill part (here a take-profit finer than the precision it
    takes, which it lowered after our rules were read): nothing was placed, so the entry
    goes again without it, once; any other refusal is the entry's own."""
    venue.venue.instruments["EUR_USD"]["displayPrecision"] = 4
    report = await native.submit("E5", entry(price="1.09", tp="1.12005"))
    first, second = sent(venue)
    assert "takeProfitOnFill" in first and "takeProfitOnFill" not in second
    assert second["clientExtensions"] == {"id": "E5"}
    assert not report.native_exits and report.status is BrokerStatus.NEW
    assert venue.orders_for("E5") == 1
    with pytest.raises(PermanentError, match="UNITS_MIMIMUM_NOT_MET"):
        venue.venue.instruments["EUR_USD"]["minimumTradeSize"] = "5000"
        await native.submit("E5b", entry())
    assert len(sent(venue)) == 3  # the entry's own refusal: not sent again


async def test_an_unknown_outcome_is_looked_up_by_client_id_never_sent_twice(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    """A 5xx after OANDA placed the entry: the lookup by client id (what the submit step
    does next) finds it, filled, with its on-fill exits, and says so."""
    venue.inject("create", after=True)
    with pytest.raises(UnknownOutcome):
        await native.submit("U1", entry())
    found = await native.get_order("U1", "EUR_USD")
    assert found.status is BrokerStatus.FILLED and found.native_exits
    assert venue.received["U1"] == 1 and state_at(venue, "U1-x1-tp") == "PENDING"


async def test_a_market_entry_cancelled_at_its_fill_for_its_exits_is_not_sent_again(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    """The market is past the take-profit: OANDA creates the entry and cancels it at its
    fill (TAKE_PROFIT_ON_FILL_LOSS). It was placed, so it is not sent again: rejected with
    OANDA's reason, nothing filled, nothing left."""
    venue.set_price("EUR_USD", "1.12990", "1.13000")
    report = await native.submit("M1", entry(tp="1.125", sl="1.08"))
    assert (report.status, report.reason) == (BrokerStatus.REJECTED,
                                              "oanda: TAKE_PROFIT_ON_FILL_LOSS")
    assert len(sent(venue)) == 1 and venue.venue.positions() == []
    assert venue.venue.find("@M1-x1-tp") is None


# -- adoption: the workers' exit is what OANDA made ----------

async def test_the_exit_is_taken_as_the_orders_oanda_made_never_sent_again(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    spec = entry()
    await native.submit("E6", spec)
    report = await native.submit("E6-x1", exit_of("E6", spec, "1000"))
    assert (report.client_order_id, report.status, report.quantity) == (
        "E6-x1", BrokerStatus.NEW, Decimal("1000"))
    assert report.broker_order_id == f"on-fill:{venue.venue.find('@E6-x1-tp')['tradeID']}"
    assert len(sent(venue)) == 1 and venue.venue.find("@E6-x1") is None
    assert venue.venue.duplicates == {}
    venue.set_price("EUR_USD", "1.11999", "1.12009")  # the bid a pip short of the profit
    assert (await native.get_order("E6-x1", "EUR_USD")).status is BrokerStatus.NEW
    venue.set_price("EUR_USD", "1.12000", "1.12010")  # the bid at the take-profit
    filled = await native.get_order("E6-x1", "EUR_USD")
    assert (filled.status, filled.filled_quantity) == (BrokerStatus.FILLED, Decimal("1000"))
    assert [(f.price, f.quantity) for f in filled.fills] == [(Decimal("1.12"),
                                                              Decimal("1000"))]
    # The trade closed: OANDA cancelled the stop-loss (one cancels the other).
    assert cancel_reason(venue, "E6-x1-sl") == "LINKED_TRADE_CLOSED"
    assert venue.venue.positions() == []


async def test_the_native_stop_loss_closes_the_trade_and_cancels_the_take_profit(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    spec = entry(side=Side.SELL, tp="1.08", sl="1.12")
    await native.submit("E10", spec)
    await native.submit("E10-x1", exit_of("E10", spec, "1000"))
    venue.set_price("EUR_USD", "1.11990", "1.12000")  # the ask at a short's stop-loss
    stopped = await native.get_order("E10-x1", "EUR_USD")
    assert (stopped.status, stopped.filled_quantity) == (BrokerStatus.FILLED, Decimal("1000"))
    assert cancel_reason(venue, "E10-x1-tp") == "LINKED_TRADE_CLOSED"
    assert len(sent(venue)) == 1


async def test_a_capped_exit_replaces_the_native_ones(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    spec = entry(sl=None)
    await native.submit("E7", spec)
    report = await native.submit("E7-x1", exit_of("E7", spec, "600"))
    assert cancel_reason(venue, "E7-x1-tp") == "CLIENT_REQUEST"
    assert (report.status, report.quantity, report.broker_order_id.isdigit()) == (
        BrokerStatus.NEW, Decimal("600"), True)
    assert sent(venue)[-1] == {
        "type": "LIMIT", "instrument": "EUR_USD", "units": "-600", "timeInForce": "GTC",
        "positionFill": "REDUCE_ONLY", "price": "1.12000",
        "clientExtensions": {"id": "E7-x1"}, "tradeClientExtensions": {"id": "E7-x1"}}
    assert [o["state"] for o in exit_orders(venue)] == ["CANCELLED", "PENDING"]


async def test_a_later_exit_cancels_the_native_one_first(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    """The first exit refused before it reached OANDA: the next one must not stand beside
    the native one."""
    spec = entry(tp=None)
    await native.submit("E9", spec)
    await native.submit("E9-x2", exit_of("E9", spec, "1000", n=2))
    assert (state_at(venue, "E9-x1-sl"), state_at(venue, "E9-x2")) == ("CANCELLED",
                                                                        "PENDING")


async def test_a_native_exit_that_filled_refuses_any_other_exit(
        native: OandaBroker, venue: OandaExchangeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    spec = entry()
    await native.submit("E11", spec)
    venue.set_price("EUR_USD", "1.12000", "1.12010")  # the take-profit fills: flat
    with pytest.raises(PermanentError, match="has filled"):
        await native.submit("E11-x2", exit_of("E11", spec, "1000", n=2))
    assert "check the position" in caplog.text
    assert len(sent(venue)) == 1 and venue.venue.positions() == []
    # The first exit itself is taken as it, filled: never placed again.
    report = await native.submit("E11-x1", exit_of("E11", spec, "1000"))
    assert (report.status, report.filled_quantity) == (BrokerStatus.FILLED, Decimal("1000"))
    assert len(sent(venue)) == 1


async def test_end_native_exits_cancels_only_what_is_pending(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    assert await native.end_native_exits("N1", "EUR_USD", True)  # none: nothing to do
    await native.submit("N1", entry())
    assert await native.end_native_exits("N1", "EUR_USD", True)
    assert cancel_reason(venue, "N1-x1-tp") == cancel_reason(venue, "N1-x1-sl") == \
        "CLIENT_REQUEST"
    cancels = sum(1 for r in venue.log if r.name == "cancel")
    assert await native.end_native_exits("N1", "EUR_USD", True)  # ended: nothing more
    assert sum(1 for r in venue.log if r.name == "cancel") == cancels


async def test_the_dependent_orders_transactions_reach_the_adopted_exit_only(
        native: OandaBroker, venue: OandaExchangeServer) -> None:
    """Pushed: the take-profit of B filling before its exit was adopted tells nothing (no
    order of ours yet, never an orphan's report); A's, adopted, tells A's exit."""
    spec = entry()
    await native.submit("A", spec)
    await native.submit("A-x1", exit_of("A", spec, "1000"))
    await native.submit("B", entry(tp="1.1205"))
    venue.set_price("EUR_USD", "1.12050", "1.12060")  # both take-profits fill
    seen: list[BrokerOrder] = []

    async def collect() -> None:
        async for report in native.updates():
            seen.append(report)
    task = asyncio.create_task(collect())
    try:
        await until(lambda: _async(any(r.client_order_id == "A-x1" for r in seen)), 10)
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
    assert {r.client_order_id for r in seen} <= {"A", "B", "A-x1"}
    exit_ = [r for r in seen if r.client_order_id == "A-x1"][-1]
    assert (exit_.status, exit_.filled_quantity) == (BrokerStatus.FILLED, Decimal("1000"))


async def _async(value: bool) -> bool:
    return value


async def test_reconciliation_takes_no_dependent_order_for_an_orphan(
        redis_client: aioredis.Redis, venue: OandaExchangeServer) -> None:
    b = OandaBroker("default", account_for(venue, native_lists=True, orphans="cancel"),
                    redis_client, K)
    await b.start()
    try:
        await b.submit("R1", entry())
        assert b.store is not None
        drift = await b.reconciler.run(b.store)
    finally:
        await b.close()
    assert drift.orphans == []
    assert state_at(venue, "R1-x1-tp") == state_at(venue, "R1-x1-sl") == "PENDING"


# -- through workers ----------

def unwatched(redis_url: str, server: OandaExchangeServer, **account: Any) -> Settings:
    """Worker settings with native lists and the lists watcher all but stopped (a pass a
    minute): what OANDA does alone between an entry's fill and the exit's adoption."""
    settings = oanda_settings(redis_url, server, native_lists=True, **account)
    settings.worker.emulator_interval_ms = 60_000
    return settings


async def filled_natively(client: OrderClient, cid: str) -> None:
    """A bracket market entry placed with its on-fill exits, filled at once."""
    sub = await client.place("EUR_USD", "buy", "market", "1000", client_order_id=cid,
                             take_profit="1.12", stop_loss="1.08")
    result = await client.wait_result(sub, timeout=20)
    assert result.status is ResultStatus.FILLED and result.native_exits, result
    await order_in(client, cid, OrderState.FILLED, timeout=20)


async def test_the_oco_exit_is_adopted_once_never_emulated(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    """The workers' oco exit (which OANDA has not, so the emulator would hold it) is taken
    as the trade's take-profit and stop-loss: no order sent, nothing held by the emulator;
    it fills at the stop-loss, pushed."""
    async with running(unwatched(redis_url, venue)):
        await filled_natively(client, "W1")
        assert state_at(venue, "W1-x1-tp") == "PENDING"
        assert await client.order("W1-x1") is None
    async with running(oanda_settings(redis_url, venue, native_lists=True)):
        exit_ = await order_in(client, "W1-x1", OrderState.ACCEPTED, timeout=20)
        assert exit_.spec.quantity == Decimal("1000") and not exit_.emulated
        assert exit_.broker_order_id is not None
        assert exit_.broker_order_id.startswith("on-fill:")
        assert await redis_client.smembers(K.emulated("default")) == set()
        venue.set_price("EUR_USD", "1.07990", "1.08000")  # the bid past the stop-loss
        done = await order_in(client, "W1-x1", OrderState.FILLED, timeout=20)
        assert done.filled_quantity == Decimal("1000")
        await list_over(redis_client, "W1")
    assert len(sent(venue)) == 1 and venue.venue.find("@W1-x1") is None
    assert venue.venue.positions() == []


async def test_a_position_reduced_first_is_closed_by_the_native_exit_it_shrank(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    """Before the exit is published, 400 of the position are sold by another order: OANDA
    reduces the oldest trade (the entry's), so its take-profit and stop-loss now close
    600, the exit the workers publish (capped by the position): adopted, not replaced."""
    async with running(unwatched(redis_url, venue)):
        await filled_natively(client, "P1")
        # Not reduce_only (a netting account reduces the trade all the same): the fold
        # need not have the entry's fill yet.
        sold = await client.place("EUR_USD", "sell", "market", "400", client_order_id="P2")
        assert (await client.wait_result(sold, timeout=10)).status is ResultStatus.FILLED
        trade = venue.venue.trade("@P1")
        assert trade is not None and trade["currentUnits"] == "600"
    async with running(oanda_settings(redis_url, venue, native_lists=True)):
        exit_ = await order_in(client, "P1-x1", OrderState.ACCEPTED, timeout=20)
        assert exit_.spec.quantity == Decimal("600") and not exit_.emulated
        venue.set_price("EUR_USD", "1.12000", "1.12010")
        done = await order_in(client, "P1-x1", OrderState.FILLED, timeout=20)
        assert done.filled_quantity == Decimal("600")
    assert [o["clientExtensions"]["id"] for o in exit_orders(venue)] == ["P1-x1-tp",
                                                                         "P1-x1-sl"]
    assert len(sent(venue)) == 2 and venue.venue.positions() == []


async def test_an_adopted_exit_is_cancelled_at_oanda_by_its_id(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    """A cancel of the adopted exit (by its id, as the list's cancel or a person sends it)
    cancels the trade's take-profit and stop-loss; the exit's record ends cancelled."""
    async with running(oanda_settings(redis_url, venue, native_lists=True)):
        await filled_natively(client, "X1")
        await order_in(client, "X1-x1", OrderState.ACCEPTED, timeout=20)
        cancel = await client.cancel("X1-x1")
        result = await client.wait_result(cancel, timeout=10)
        assert result.status is ResultStatus.CANCELLED, result
    assert cancel_reason(venue, "X1-x1-tp") == cancel_reason(venue, "X1-x1-sl") == \
        "CLIENT_REQUEST"
    assert len(sent(venue)) == 1


async def test_a_list_that_ends_without_an_exit_of_ours_cancels_the_native_ones(
        redis_url: str, redis_client: aioredis.Redis, venue: OandaExchangeServer,
        client: OrderClient) -> None:
    """The entry filled natively, then cancelled by its id before any watcher pass (which
    cancels its list): the watcher never publishes an exit, so the trade's take-profit
    and stop-loss are cancelled before the list ends, never left there untracked."""
    async with running(unwatched(redis_url, venue)):
        await filled_natively(client, "C1")
        cancel = await client.cancel("C1")
        assert (await client.wait_result(cancel, timeout=10)).status is ResultStatus.FAILED
    assert state_at(venue, "C1-x1-tp") == "PENDING"
    async with running(oanda_settings(redis_url, venue, native_lists=True)):
        await list_over(redis_client, "C1")
    assert state_at(venue, "C1-x1-tp") == state_at(venue, "C1-x1-sl") == "CANCELLED"
    assert await client.order("C1-x1") is None


async def test_a_worker_killed_between_the_fill_and_the_adoption_leaves_one_exit(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(ACCOUNT_ENV, ACCOUNT_ID)
    server = OandaExchangeServer(TOKEN, ACCOUNT_ID)
    with in_thread(server):
        config = (f'[accounts.default]\nbroker = "oanda"\n'
                  f'account_id_env = "{ACCOUNT_ENV}"\ntoken_env = "{TOKEN_ENV}"\n'
                  f'practice = true\nbase_url = "{server.url}"\nnative_lists = true\n')
        exit_ = await killed_before_adoption(
            redis_url, redis_client, tmp_path, config,
            lambda client: filled_natively(client, "K1"),
            oanda_settings(redis_url, server, native_lists=True))
    assert exit_.spec.quantity == Decimal("1000") and not exit_.emulated
    assert await redis_client.smembers(K.emulated("default")) == set()  # no copy held
    assert len(sent(server)) == 1 and server.venue.find("@K1-x1") is None
    assert server.received == {"K1": 1}
    assert [o["state"] for o in exit_orders(server)] == ["PENDING", "PENDING"]
