"""The local Binance exchange checks signatures exactly as Binance documents them."""

from __future__ import annotations

from devtools.binance_exchange import signing

# Binance's published illustrative key pair and request (rest-api.md, "SIGNED Endpoint
# Examples").
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
PAYLOAD = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
           "&recvWindow=5000&timestamp=1499827319559")
SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_the_published_test_vector_verifies() -> None:
    assert signing.hmac_hex(SECRET, PAYLOAD) == SIGNATURE
    assert signing.verify(SECRET, PAYLOAD, SIGNATURE)
    assert signing.verify(SECRET, PAYLOAD, SIGNATURE.upper())  # hex compares case-blind
    assert not signing.verify(SECRET, PAYLOAD.replace("quantity=1", "quantity=2"), SIGNATURE)


def test_all_in_the_query_string() -> None:
    payload, sig = signing.rest_payload(f"{PAYLOAD}&signature={SIGNATURE}", "")
    assert (payload, sig) == (PAYLOAD, SIGNATURE)


def test_all_in_the_body() -> None:
    payload, sig = signing.rest_payload("", f"{PAYLOAD}&signature={SIGNATURE}")
    assert (payload, sig) == (PAYLOAD, SIGNATURE)


def test_mixed_query_and_body_are_concatenated_without_a_separator() -> None:
    # Binance's own example 3: query "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
    # body "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559".
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = f"quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature={SIGNATURE}"
    payload, sig = signing.rest_payload(query, body)
    assert payload == query + body.split("&signature=")[0]
    assert sig == SIGNATURE
    # The signature the doc gives for this split (same payload as example 1, so same HMAC
    # apart from the split): the concatenation is what is signed.
    assert signing.verify(
        SECRET, payload, "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77")


def test_no_signature() -> None:
    assert signing.rest_payload("a=1", "b=2") == ("a=1b=2", None)


def test_websocket_payload_is_sorted_and_urlencoded() -> None:
    params = {"timestamp": 5, "apiKey": "k", "signature": "x", "symbol": "BTCUSDT"}
    assert signing.ws_payload(params) == "apiKey=k&symbol=BTCUSDT&timestamp=5"
