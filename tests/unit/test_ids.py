from __future__ import annotations

import re

from producer.contract import CLIENT_ORDER_ID_PATTERN
from producer.ids import client_order_id_for_entry, new_client_order_id

ID = re.compile(CLIENT_ORDER_ID_PATTERN)


def test_ids_are_valid_traceable_and_unique() -> None:
    ids = {new_client_order_id("BTCUSDT", "buy", 1_700_000_000_000) for _ in range(10_000)}
    assert len(ids) == 10_000
    for cid in list(ids)[:50]:
        assert ID.fullmatch(cid)
        assert cid.startswith("BTCUSDT-B-")


def test_odd_symbols_still_give_valid_ids() -> None:
    for symbol in ("EUR_USD", "BRK.B", "BTC/USDT:USDT", "A" * 32):
        cid = new_client_order_id(symbol, "sell")
        assert ID.fullmatch(cid), cid
        assert "-S-" in cid


def test_worker_ids_come_from_the_entry_so_redelivery_gets_the_same_id() -> None:
    a = client_order_id_for_entry("ETHUSDT", "buy", "1700000000000-5")
    assert a == client_order_id_for_entry("ETHUSDT", "buy", "1700000000000-5")
    assert a != client_order_id_for_entry("ETHUSDT", "buy", "1700000000000-6")
    assert ID.fullmatch(a) and a.startswith("ETHUSDT-B-")
    longest = client_order_id_for_entry("A" * 32, "buy", f"{2**63 - 1}-{2**63 - 1}")
    assert ID.fullmatch(longest), longest
