"""Native contingent lists at Alpaca (``native_lists = true``): an entry with take_profit
and stop_loss goes out as one order of class bracket (one level: oto) to the local Alpaca
API, which holds the legs until the entry has completely filled; the workers' exit
``<entry>-x1`` is then taken as those legs (adopted), never sent a second time; a capped or
later exit replaces them; a leg that traded refuses any other exit; a refused bracket falls
back to the plain entry and an unknown outcome is looked up, never resent; the legs'
updates and the reconciliation never take a leg for an order of its own; a list that ends
without an exit of ours cancels the legs; a worker SIGKILLed between the fill and the
adoption leaves one exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from devtools.alpaca_exchange import AlpacaExchangeServer
from devtools.alpaca_exchange.engine import AlpacaError
from executor.brokers.alpaca.broker import AlpacaBroker
from executor.brokers.base import BrokerOrder, BrokerStatus, PermanentError, UnknownOutcome
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
    TimeInForce,
    WireDecimal,
)
from producer.keys import Keys
from tests.fakes.alpaca import KEY_ENV, KEY_ID, SECRET, SECRET_ENV, alpaca, alpaca_account
from tests.fakes.feeds import Feed
from tests.fakes.threaded import in_thread

from .conftest import replace, running, settings_for, until
from .native_heir import killed_before_adoption
from .test_alpaca_stream import listening
from .test_lists import list_over, order_in

__all__ = ["alpaca"]  # fixture

K = Keys()
D = WireDecimal


@pytest.fixture
async def native(alpaca: AlpacaExchangeServer) -> AsyncIterator[AlpacaBroker]:
    b = AlpacaBroker("ap", alpaca_account(alpaca, native_lists=True))
    await b.start()
    yield b
    await b.close()


def entry(quantity: str = "5", price: str | None = "189", *, tp: str | None = "195",
          sl: str | None = "185", **kw: Any) -> OrderSpec:
    """A buy entry of AAPL (the market at 190), a limit at 189 unless told."""
    fields: dict[str, Any] = {"type": OrderType.LIMIT, "oto_trigger": OtoTrigger.FULL,
                              "time_in_force": TimeInForce.GTC,
                              "price": None if price is None else D(price), **kw}
    return OrderSpec(account="ap", symbol=fields.pop("symbol", "AAPL"), side=Side.BUY,
                     quantity=D(quantity), take_profit=None if tp is None else D(tp),
                     stop_loss=None if sl is None else D(sl), **fields)


def exit_of(cid: str, spec: OrderSpec, quantity: str, n: int = 1) -> OrderSpec:
    return spec_from_request(exit_request(cid, spec, Decimal(quantity), n), "ap")


def bodies(server: AlpacaExchangeServer) -> list[dict[str, Any]]:
    return [dict(r.body) for r in server.orders_sent()]


def legs(server: AlpacaExchangeServer, cid: str) -> list[dict[str, Any]]:
    """The entry's legs as the server holds them, the take-profit first."""
    parent = server.engine.get_by_client_id(cid)
    found = server.engine.get(parent["id"], nested=True)["legs"] or []
    return sorted(found, key=lambda leg: leg["type"] != "limit")


def statuses(server: AlpacaExchangeServer, cid: str) -> list[str]:
    return [leg["status"] for leg in legs(server, cid)]


async def filled(native: AlpacaBroker, server: AlpacaExchangeServer, cid: str,
                 spec: OrderSpec) -> None:
    """The entry (a limit at 189, the market at 190) sent natively and completely filled:
    Alpaca activates its legs."""
    server.set_price("AAPL", "190")
    report = await native.submit(cid, spec)
    assert report.native_exits
    server.set_price("AAPL", "189")
    assert (await native.get_order(cid, "AAPL")).status is BrokerStatus.FILLED


# -- the request as Alpaca receives it ----------

async def test_a_bracket_entry_as_alpaca_receives_it(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    report = await native.submit("E1", entry())
    assert bodies(alpaca) == [{
        "symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "gtc",
        "client_order_id": "E1", "qty": "5", "limit_price": "189", "order_class": "bracket",
        "take_profit": {"limit_price": "195"}, "stop_loss": {"stop_price": "185"}}]
    parent = alpaca.engine.get_by_client_id("E1")
    assert (report.client_order_id, report.broker_order_id, report.status,
            report.quantity) == ("E1", parent["id"], BrokerStatus.NEW, Decimal(5))
    assert report.native_exits
    # Held (not working) until the entry has completely filled; sells for its quantity.
    found = legs(alpaca, "E1")
    assert [(leg["type"], leg["side"], leg["qty"], leg["status"]) for leg in found] == [
        ("limit", "sell", "5", "held"), ("stop", "sell", "5", "held")]
    assert all(leg["client_order_id"] not in ("E1", "E1-x1") for leg in found)
    alpaca.set_price("AAPL", "195")  # the take-profit's price, the entry unfilled
    assert statuses(alpaca, "E1") == ["held", "held"]
    # Looked up by its client id, it is still the entry alone, and still says so.
    looked = await native.get_order("E1", "AAPL")
    assert (looked.broker_order_id, looked.status, looked.native_exits) == (
        parent["id"], BrokerStatus.NEW, True)
    alpaca.set_price("AAPL", "189")
    assert (await native.get_order("E1", "AAPL")).status is BrokerStatus.FILLED
    assert statuses(alpaca, "E1") == ["new", "held"]  # the legs work now


@pytest.mark.parametrize(("tp", "sl", "levels"), [
    ("195", None, {"take_profit": {"limit_price": "195"}}),
    (None, "185", {"stop_loss": {"stop_price": "185"}}),
])
async def test_one_level_is_an_oto_and_a_market_entry_keeps_gtc(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer, tp: str | None,
        sl: str | None, levels: dict[str, Any]) -> None:
    alpaca.engine.hold_fills = True
    await native.submit("E2", entry(type=OrderType.MARKET, price=None, tp=tp, sl=sl))
    assert bodies(alpaca) == [{
        "symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "gtc",
        "client_order_id": "E2", "qty": "5", "order_class": "oto", **levels}]
    assert len(legs(alpaca, "E2")) == 1


@pytest.mark.parametrize("spec", [
    entry(oto_trigger=OtoTrigger.PARTIAL),  # an exit per part: Alpaca's legs wait for all
    entry(time_in_force=TimeInForce.DAY),  # day legs would expire at the close
    entry(quantity="0.5", price=None, type=OrderType.MARKET),  # fractions: simple only
    entry(symbol="BTC/USD", quantity="1", price="59000", tp="61000", sl="58000"),
    entry(price="185.005", sl="185"),  # the stop a cent beyond the entry's limit, or none
    entry(price="191", tp="195", sl="189.995"),  # ... and beyond the market (190)
], ids=["partial", "day", "fractional", "crypto", "stop-gap-limit", "stop-gap-market"])
async def test_what_alpaca_cannot_hold_goes_as_a_plain_entry(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer, spec: OrderSpec) -> None:
    await native.reference_price(spec.symbol)
    report = await native.submit("E3", spec)
    [body] = bodies(alpaca)
    assert "order_class" not in body and "take_profit" not in body and "stop_loss" not in body
    assert not report.native_exits


async def test_off_by_default(alpaca: AlpacaExchangeServer) -> None:
    plain = AlpacaBroker("ap", alpaca_account(alpaca))
    assert plain.config.native_lists is False
    await plain.start()
    try:
        report = await plain.submit("E4", entry())
    finally:
        await plain.close()
    [body] = bodies(alpaca)
    assert "order_class" not in body and not report.native_exits


async def test_a_refused_bracket_falls_back_to_the_plain_entry(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.inject("POST", "/v2/orders", 422, code=42210000,
                  message="bracket orders must be entry orders")
    report = await native.submit("E5", entry())
    first, second = bodies(alpaca)
    assert first["order_class"] == "bracket" and "order_class" not in second
    assert second["client_order_id"] == "E5" and alpaca.orders_for("E5") == 1
    assert report.status is BrokerStatus.NEW and not report.native_exits


async def test_an_unknown_outcome_is_looked_up_never_resent(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    alpaca.inject("POST", "/v2/orders", 500, after=True)  # stored, then a 500
    with pytest.raises(UnknownOutcome):
        await native.submit("E6", entry())
    assert len(bodies(alpaca)) == 1
    found = await native.get_order("E6", "AAPL")
    assert found.status is BrokerStatus.NEW and found.native_exits
    assert len(legs(alpaca, "E6")) == 2 and alpaca.orders_for("E6") == 1


async def test_the_local_alpaca_refuses_a_bracket_as_alpaca_does(
        alpaca: AlpacaExchangeServer) -> None:
    engine = alpaca.engine
    good = {"symbol": "AAPL", "side": "buy", "type": "limit", "limit_price": "189",
            "time_in_force": "gtc", "qty": "5", "order_class": "bracket",
            "take_profit": {"limit_price": "195"}, "stop_loss": {"stop_price": "185"}}
    bad: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "stop_loss"},
         "bracket orders require stop_loss.stop_price"),
        ({**good, "order_class": "oto"}, "oto orders require one of take_profit or stop_loss"),
        ({**good, "time_in_force": "ioc"}, "bracket orders take time_in_force day or gtc"),
        ({**good, "type": "trailing_stop"},
         "bracket orders take a market, limit, stop or stop_limit entry"),
        ({**good, "qty": "0.5"}, "bracket orders take a qty of whole shares"),
        ({**good, "extended_hours": True},
         "extended hours orders are not supported for bracket orders"),
        ({**good, "symbol": "BTC/USD", "qty": "1"},
         "crypto orders support the simple order class only"),
        ({**good, "take_profit": {"limit_price": "184"}},
         "take_profit.limit_price must be higher than stop_loss.stop_price"),
        ({**good, "stop_loss": {"stop_price": "188.995"}},
         "stop_price must be at least 0.01 below the base price 189"),
    ]
    for i, (body, message) in enumerate(bad):
        with pytest.raises(AlpacaError) as caught:
            engine.place({**body, "client_order_id": f"bad-{i}"})
        assert (caught.value.message, caught.value.status) == (message, 422)
    assert engine.orders == {}
    placed = engine.place(good)
    assert placed["order_class"] == "bracket" and len(placed["legs"]) == 2


# -- adoption: the workers' exit is the legs Alpaca placed ----------

async def test_the_exit_is_taken_as_the_legs_never_sent_again(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await filled(native, alpaca, "A1", spec)
    assert statuses(alpaca, "A1") == ["new", "held"]
    report = await native.submit("A1-x1", exit_of("A1", spec, "5"))
    parent = alpaca.engine.get_by_client_id("A1")
    assert (report.client_order_id, report.status, report.quantity) == (
        "A1-x1", BrokerStatus.NEW, Decimal(5))
    assert report.broker_order_id == f"legs-of:{parent['id']}"
    assert len(bodies(alpaca)) == 1 and alpaca.orders_for("A1-x1") == 0
    alpaca.set_price("AAPL", "194.99")  # a cent short of the take-profit
    assert (await native.get_order("A1-x1", "AAPL")).status is BrokerStatus.NEW
    alpaca.set_price("AAPL", "195")
    done = await native.get_order("A1-x1", "AAPL")
    assert (done.status, done.filled_quantity) == (BrokerStatus.FILLED, Decimal(5))
    tp = legs(alpaca, "A1")[0]
    assert [(f.fill_id, f.quantity, f.price) for f in done.fills] == [
        (f"{tp['id']}:5", 5, 195)]
    assert statuses(alpaca, "A1") == ["filled", "canceled"]
    # Adopted again (a redelivered request): the same legs, still nothing sent.
    again = await native.submit("A1-x1", exit_of("A1", spec, "5"))
    assert again.status is BrokerStatus.FILLED and len(bodies(alpaca)) == 1


async def test_an_adopted_stop_fires_at_its_stop_and_a_cancel_cancels_both_legs(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await filled(native, alpaca, "A2", spec)
    await native.submit("A2-x1", exit_of("A2", spec, "5"))
    alpaca.set_price("AAPL", "185.01")
    assert statuses(alpaca, "A2") == ["new", "held"]
    alpaca.set_price("AAPL", "185")
    stopped = await native.get_order("A2-x1", "AAPL")
    assert (stopped.status, stopped.filled_quantity) == (BrokerStatus.FILLED, Decimal(5))
    assert [(f.quantity, f.price) for f in stopped.fills] == [(5, 185)]
    assert statuses(alpaca, "A2") == ["canceled", "filled"]
    # Another one, cancelled by the exit's id: both legs go (one DELETE).
    await filled(native, alpaca, "A3", spec)
    await native.submit("A3-x1", exit_of("A3", spec, "5"))
    deletes = sum(r.method == "DELETE" for r in alpaca.log)
    cancelled = await native.cancel("A3-x1", "AAPL")
    assert cancelled.status is BrokerStatus.CANCELLED
    assert statuses(alpaca, "A3") == ["canceled", "canceled"]
    assert sum(r.method == "DELETE" for r in alpaca.log) == deletes + 1


async def test_a_one_level_exit_is_its_one_leg(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry(sl=None)
    await filled(native, alpaca, "A4", spec)
    report = await native.submit("A4-x1", exit_of("A4", spec, "5"))
    assert report.status is BrokerStatus.NEW and len(bodies(alpaca)) == 1
    alpaca.set_price("AAPL", "195")
    done = await native.get_order("A4-x1", "AAPL")
    assert (done.status, done.filled_quantity) == (BrokerStatus.FILLED, Decimal(5))


async def test_a_capped_exit_replaces_the_legs(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await filled(native, alpaca, "C1", spec)
    report = await native.submit("C1-x1", exit_of("C1", spec, "3"))
    assert statuses(alpaca, "C1") == ["canceled", "canceled"]
    [_, placed] = bodies(alpaca)
    assert (placed["client_order_id"], placed["order_class"], placed["qty"]) == (
        "C1-x1", "oco", "3")
    assert (report.quantity, report.status) == (Decimal(3), BrokerStatus.NEW)
    alpaca.set_price("AAPL", "185")
    assert (await native.get_order("C1-x1", "AAPL")).filled_quantity == Decimal(3)


async def test_a_later_exit_cancels_the_legs_first(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    """The first exit refused before it reached Alpaca (trading halted, say): the next
    one must not stand beside the legs."""
    spec = entry()
    await filled(native, alpaca, "C2", spec)
    await native.submit("C2-x2", exit_of("C2", spec, "5", n=2))
    assert statuses(alpaca, "C2") == ["canceled", "canceled"]
    assert bodies(alpaca)[-1]["client_order_id"] == "C2-x2"


async def test_a_leg_that_traded_refuses_any_other_exit(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await filled(native, alpaca, "T1", spec)
    tp = legs(alpaca, "T1")[0]
    alpaca.engine.fill(tp["client_order_id"], Decimal(2), Decimal("195.10"))
    with pytest.raises(PermanentError, match="has traded"):
        await native.submit("T1-x2", exit_of("T1", spec, "5", n=2))
    assert len(bodies(alpaca)) == 1 and statuses(alpaca, "T1") == ["partially_filled", "held"]
    # The first exit, capped (3 left to protect): the legs have traded, so they are it.
    taken = await native.submit("T1-x1", exit_of("T1", spec, "3"))
    assert (taken.filled_quantity, taken.quantity) == (Decimal(2), Decimal(5))
    assert [(f.quantity, f.price) for f in taken.fills] == [(2, D("195.10"))]
    assert len(bodies(alpaca)) == 1


async def test_an_entry_cancelled_after_a_part_fill_gets_the_workers_exit(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await native.submit("P1", spec)
    alpaca.engine.fill("P1", Decimal(2))
    cancelled = await native.cancel("P1", "AAPL")
    assert (cancelled.status, cancelled.filled_quantity) == (BrokerStatus.CANCELLED, 2)
    assert statuses(alpaca, "P1") == ["canceled", "canceled"]  # never active
    report = await native.submit("P1-x1", exit_of("P1", spec, "2"))
    assert report.status is BrokerStatus.NEW and bodies(alpaca)[-1]["qty"] == "2"
    assert bodies(alpaca)[-1]["order_class"] == "oco"


async def test_an_exit_of_an_entry_still_working_waits(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    spec = entry()
    await native.submit("P2", spec)
    with pytest.raises(Exception, match="not active yet"):
        await native.submit("P2-x1", exit_of("P2", spec, "5"))
    assert len(bodies(alpaca)) == 1


async def test_end_native_exits_cancels_only_what_is_open(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    assert await native.end_native_exits("N1", "AAPL", True)  # none: nothing to do
    await filled(native, alpaca, "N1", entry())
    assert await native.end_native_exits("N1", "AAPL", True)
    assert statuses(alpaca, "N1") == ["canceled", "canceled"]
    deletes = sum(r.method == "DELETE" for r in alpaca.log)
    assert await native.end_native_exits("N1", "AAPL", True)  # ended: nothing more
    assert sum(r.method == "DELETE" for r in alpaca.log) == deletes


async def test_the_legs_updates_are_nobodys_until_adopted_then_the_exits(
        native: AlpacaBroker, alpaca: AlpacaExchangeServer) -> None:
    feed = Feed(native)
    try:
        await until(lambda: listening(alpaca))
        spec = entry()
        await native.submit("U1", spec)
        alpaca.set_price("AAPL", "189")
        seen: list[BrokerOrder] = []
        while not seen or seen[-1].status is not BrokerStatus.FILLED:
            seen.append(await feed.next())
        await native.submit("U1-x1", exit_of("U1", spec, "5"))
        alpaca.set_price("AAPL", "195")
        while seen[-1].client_order_id != "U1-x1" or (
                seen[-1].status is not BrokerStatus.FILLED):
            seen.append(await feed.next())
    finally:
        await feed.stop()
    assert {r.client_order_id for r in seen} == {"U1", "U1-x1"}
    assert [(f.quantity, f.price) for f in seen[-1].fills] == [(5, 195)]


# -- through workers ----------

def native_settings(redis_url: str, server: AlpacaExchangeServer, *,
                    watched: bool = True) -> Settings:
    """A worker on ``server`` with native lists; not ``watched``: the lists watcher all
    but stopped (a pass a minute), what Alpaca does alone between an entry's fill and the
    exit's adoption."""
    settings = replace(settings_for(redis_url, track_interval_ms=100),
                       accounts={"default": alpaca_account(server, native_lists=True)})
    if not watched:
        settings.worker.emulator_interval_ms = 60_000
    return settings


async def filled_natively(client: OrderClient, server: AlpacaExchangeServer,
                          cid: str) -> None:
    sub = await client.place("AAPL", "buy", "limit", "5", price="189", client_order_id=cid,
                             take_profit="195", stop_loss="185")
    result = await client.wait_result(sub, timeout=20)
    assert result.status is ResultStatus.ACCEPTED and result.native_exits, result
    server.set_price("AAPL", "189")
    await order_in(client, cid, OrderState.FILLED, timeout=20)


async def test_legs_work_before_any_watcher_pass_and_are_adopted_once(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    """The watcher all but stopped: the entry fills and Alpaca's legs work at once, and the
    reconciliation takes none of them for an orphan. Then a worker with the watcher on
    publishes the exit, taken as the legs: one POST at Alpaca; after a restart it closes at
    take-profit."""
    async with running(native_settings(redis_url, alpaca, watched=False)):
        await filled_natively(client, alpaca, "W1")
        assert statuses(alpaca, "W1") == ["new", "held"]
        assert await client.order("W1-x1") is None
        adapter = AlpacaBroker("default", alpaca_account(alpaca, native_lists=True),
                               redis_client, K)
        await adapter.start()
        try:
            assert adapter.store is not None
            assert await adapter.reconcile(adapter.store) == []
        finally:
            await adapter.close()
    async with running(native_settings(redis_url, alpaca)):
        exit_ = await order_in(client, "W1-x1", OrderState.ACCEPTED, timeout=20)
        assert exit_.spec.quantity == Decimal(5)
    # Restarted: the exit, which Alpaca knows by no client id of ours, is found from its
    # record (the entry's Alpaca id) and its legs' fill reaches it.
    async with running(native_settings(redis_url, alpaca)):
        alpaca.set_price("AAPL", "195")
        done = await order_in(client, "W1-x1", OrderState.FILLED)
        assert done.filled_quantity == Decimal(5)
    assert len(bodies(alpaca)) == 1 and alpaca.orders_for("W1-x1") == 0


async def test_a_list_that_ends_without_an_exit_of_ours_cancels_the_legs(
        redis_url: str, redis_client: aioredis.Redis, alpaca: AlpacaExchangeServer,
        client: OrderClient) -> None:
    """The entry filled natively, then cancelled by its id before any watcher pass (which
    cancels its list): no exit is published, so the legs are cancelled before the list
    ends, never left working at Alpaca untracked."""
    async with running(native_settings(redis_url, alpaca, watched=False)):
        await filled_natively(client, alpaca, "L1")
        cancel = await client.cancel("L1")
        assert (await client.wait_result(cancel, timeout=10)).status is ResultStatus.FAILED
    assert statuses(alpaca, "L1") == ["new", "held"]
    async with running(native_settings(redis_url, alpaca)):
        await list_over(redis_client, "L1")
    assert statuses(alpaca, "L1") == ["canceled", "canceled"]
    assert await client.order("L1-x1") is None


async def test_a_worker_killed_between_the_fill_and_the_adoption_leaves_one_exit(
        tmp_path: Path, redis_url: str, redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_ID)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = AlpacaExchangeServer(KEY_ID, SECRET, rate_limit=10**9)
    client = OrderClient(redis_client)
    with in_thread(server):
        config = (f'[accounts.default]\nbroker = "alpaca"\n'
                  f'key_id_env = "{KEY_ENV}"\nsecret_env = "{SECRET_ENV}"\n'
                  f'paper = true\nbase_url = "{server.url}"\n'
                  'symbols = ["AAPL"]\nnative_lists = true\n')

        async def fill(_: OrderClient) -> None:
            await filled_natively(client, server, "K1")
            assert statuses(server, "K1") == ["new", "held"]
        heir = replace(settings_for(redis_url, track_interval_ms=100),
                       accounts={"default": alpaca_account(server, native_lists=True,
                                                           symbols=["AAPL"])})
        exit_ = await killed_before_adoption(redis_url, redis_client, tmp_path, config,
                                             fill, heir)
        assert exit_.spec.quantity == Decimal(5)
        # The legs are the exit: their stop's fill is its fill.
        async with running(heir):
            server.set_price("AAPL", "185")
            await order_in(client, "K1-x1", OrderState.FILLED, timeout=20)
    assert len(server.orders_sent()) == 1 and server.orders_for("K1-x1") == 0
    assert statuses(server, "K1") == ["canceled", "filled"]
