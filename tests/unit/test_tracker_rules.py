"""The tracker's pure rules: who follows an order, and when an open order is overdue."""

from __future__ import annotations

from executor.background.tracker import overdue, owner
from executor.infra.attention import Attention, market_like
from executor.model.order import Context, Order, new_order
from producer.contract import (
    OrderSpec,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    parse_decimal,
)


def test_every_order_has_one_owner_and_a_departure_moves_only_the_leavers_orders() -> None:
    peers = ["w-a", "w-b", "w-c"]
    ids = [f"cid-{i}" for i in range(3_000)]
    before = {cid: owner(cid, peers) for cid in ids}
    counts = {p: sum(1 for o in before.values() if o == p) for p in peers}
    assert all(800 < n < 1_200 for n in counts.values()), counts  # shared out evenly
    after = {cid: owner(cid, ["w-a", "w-c"]) for cid in ids}
    moved = [cid for cid in ids if before[cid] != after[cid]]
    assert moved and all(before[cid] == "w-b" for cid in moved)
    assert {after[cid] for cid in moved} == {"w-a", "w-c"}
    # The same answer in any process and in any peer order (no randomized hash).
    assert owner("cid-1", ["w-c", "w-a", "w-b"]) == before["cid-1"]


def order_of(type_: OrderType, tif: TimeInForce, created_at: int,
             expire_at: int | None = None) -> Order:
    spec = OrderSpec(account="default", symbol="BTCUSDT", side=Side.BUY, type=type_,
                     quantity=parse_decimal("1"),
                     price=None if type_ is OrderType.MARKET else parse_decimal("100"),
                     time_in_force=tif, expire_at=expire_at)
    order, _ = new_order("c1", "1-0", spec, Context(now=created_at, worker="w"))
    return order


def test_market_like_orders_time_out_and_gtc_never_does() -> None:
    market = order_of(OrderType.MARKET, TimeInForce.GTC, created_at=1_000)
    ioc = order_of(OrderType.LIMIT, TimeInForce.IOC, created_at=1_000)
    gtc = order_of(OrderType.LIMIT, TimeInForce.GTC, created_at=1_000)
    assert market_like(market) and market_like(ioc) and not market_like(gtc)
    assert overdue(market, 1_000 + 299_999, 300_000) is None
    why = overdue(market, 1_000 + 300_000, 300_000)
    assert why is not None and "market_timeout_ms" in why
    assert overdue(ioc, 10**12, 300_000) is not None
    assert overdue(gtc, 10**12, 300_000) is None


def test_a_gtd_order_is_overdue_at_its_expire_at() -> None:
    gtd = order_of(OrderType.LIMIT, TimeInForce.GTD, created_at=1_000, expire_at=5_000)
    assert overdue(gtd, 4_999, 300_000) is None
    why = overdue(gtd, 5_000, 300_000)
    assert why is not None and "expire_at" in why



def test_an_auction_order_waits_for_its_auction_not_the_market_timeout() -> None:
    """A market order on open or close (opg, cls) may wait hours for its auction: the
    tracker's market timeout, meant for what should be done at once, leaves it alone."""
    for tif, expected in ((TimeInForce.GTC, True), (TimeInForce.IOC, True),
                          (TimeInForce.DAY, True), (TimeInForce.OPG, False),
                          (TimeInForce.CLS, False)):
        order = order_of(OrderType.MARKET, tif, created_at=0)
        assert market_like(order) is expected, tif
        assert (overdue(order, 10**9, 1_000) is not None) is expected, tif


def test_an_order_is_due_no_earlier_than_a_period_after_its_record_was_written() -> None:
    """A tracker pass reads its clock when it begins; a record written while the pass
    loads it is newer than that clock, and its next look counts from the record's write."""
    gtc = order_of(OrderType.LIMIT, TimeInForce.GTC, created_at=1_000)
    gtc.state = OrderState.ACCEPTED
    attention = Attention(reconcile_ms=30_000)
    assert attention.due(gtc, 999) == 1_000 + 30_000  # the pass's clock was a ms behind
    assert attention.due(gtc, 5_000) == 5_000 + 30_000  # looked up later: from the look
