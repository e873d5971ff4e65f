"""Fuzz: 100,000 generated hostile entries through decode and validate (the worker's decode
step: the bounds, the strict decoder, the contract's rules and the paper broker's checks),
in batches as the worker reads them. Every entry is decided on its own: it is refused
``invalid`` or becomes a request, nothing raises, nothing is an ``internal_error`` (a bug of
ours), and every result and order can be written (encoded). A seeded generator, so a
failure is reproduced by its seed; it prints how many entries it ran and how long it took.

Kinds of entries: deep nesting (objects, arrays, either, closed or not, in any field),
numbers (huge and tiny exponents, long digit runs, signs, leading zeros, NaN and
Infinity), unicode (controls, quotes, escapes, lone surrogates, emoji), invalid UTF-8,
wrong types, huge strings (around the size limit), duplicate and unknown keys, missing
fields, random field combinations of every action and type, byte-level mutations and
truncations of valid requests, other top-level values, and entries without ``data``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from executor.pipeline.job import Job
from executor.pipeline.steps.decode import Decode
from producer.contract import Action, OrderType, ReasonCode, Request, TimeInForce, encode

from .test_decode_step import services

SEED = 20_260_513
ENTRIES = 100_000
BATCH = 200

FIELDS = list(Request.__struct_fields__)
DECIMALS = ["quantity", "quote_quantity", "price", "stop_price", "stop_limit_price"]
EPOCHS = ["expire_at", "deadline", "issued_at"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "EUR_USD", "DOGEUSDT", "btcusdt", "BTC/USDT"]
UNICODE = ["\u0000", "\u001f", "\"", "\\", "/", "\u2028", "\ud800", "\udfff", "\U0001f600",
           "\u00e9", "\u202e", "\ufeff", "x", "0", " ", "\n", "{", "]"]

Gen = Callable[[random.Random], bytes]
# Digits and bracket runs are cut from pools (making each one at random would make the
# generator, not the decoder, what this test spends its time on).
_POOL = bytes(random.Random(SEED).choices(b"0123456789", k=20_000))
_MIXED = bytes(random.Random(SEED + 1).choices(b"[{", k=20_000)).replace(b"{", b'{"k":')


def digits(rng: random.Random, count: int) -> bytes:
    start = rng.randrange(len(_POOL) - count)
    return _POOL[start:start + count]


def number(rng: random.Random) -> bytes:
    """Number-like text: mostly JSON numbers of every size, some not numbers at all."""
    odd = rng.random()
    if odd < 0.08:
        return rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1.", b".5", b"1e", b"-",
                           b"0x10", b"01", b"+1", b"1e+", b"--1", b"1_000"])
    sign = b"-" if rng.random() < 0.2 else b""
    size = rng.choice([1, 1, 2, 5, 19, 20, 21, 40, 400, 5000])
    whole = str(rng.randint(1, 9)).encode() + digits(rng, size - 1)
    if rng.random() < 0.2:
        whole = b"0"
    frac = b""
    if rng.random() < 0.5:
        frac = b"." + digits(rng, rng.choice([1, 3, 20, 21, 30, 2000]))
    exp = b""
    if rng.random() < 0.4:
        exp = (rng.choice([b"e", b"E"]) + rng.choice([b"", b"+", b"-"])
               + digits(rng, rng.choice([1, 2, 6, 7, 10, 12, 300])))
    return sign + whole + frac + exp


def string(rng: random.Random) -> bytes:
    """A JSON string of hostile characters, escaped or raw (raw controls and lone
    surrogates make invalid JSON or invalid UTF-8)."""
    text = "".join(rng.choices(UNICODE, k=rng.choice([0, 1, 5, 40, 300])))
    if rng.random() < 0.5:
        return json.dumps(text).encode()
    return b'"' + text.encode("utf-8", "surrogatepass") + b'"'


def huge_string(rng: random.Random) -> bytes:
    return b'"' + b"x" * rng.choice([1_000, 60_000, 65_400, 65_600, 80_000]) + b'"'


def deep(rng: random.Random) -> bytes:
    levels = rng.choice([2, 30, 31, 32, 33, 100, 1_100, 5_000, 20_000])
    kind = rng.random()
    if kind < 0.4:
        opened, closed = b"[" * levels, b"]" * levels
    elif kind < 0.8:
        opened, closed = b'{"a":' * levels, b"}" * levels
    else:
        start = rng.randrange(len(_MIXED) // 2)
        opened = _MIXED[start:start + 3 * levels]
        opened = opened[:opened.rfind(b"[") + 1]  # never a key cut in half
        closed = opened[::-1].replace(b':"k"{', b"}").replace(b"[", b"]")
    leaf = rng.choice([b"1", b"null", b'"x"', b"[]", b"{}", number(rng)])
    if rng.random() < 0.1:
        closed = closed[: len(closed) // 2]  # unterminated
    return opened + leaf + closed


def scalar(rng: random.Random) -> bytes:
    return rng.choice([b"null", b"true", b"false", b"0", b"-1", b"[]", b"{}", b'""',
                       b'"buy"', b'"limit"', b'"gtd"', b'"place"', b'"cancel_all"',
                       str(rng.randint(0, 2**64)).encode()])


HOSTILE: list[Gen] = [number, number, string, huge_string, deep, scalar]


def valid_place(rng: random.Random) -> dict[str, bytes]:
    """A plausible place request as field -> JSON text (mostly valid, for mutation)."""
    kind = rng.choice(list(OrderType))
    fields = {
        "client_order_id": json.dumps(f"f-{rng.randrange(10**9)}").encode(),
        "symbol": json.dumps(rng.choice(SYMBOLS[:4])).encode(),
        "side": rng.choice([b'"buy"', b'"sell"']),
        "type": json.dumps(kind.value).encode(),
        "quantity": rng.choice([b'"0.01"', b'"1"', b"0.5", b"2", b'"0.00001"']),
    }
    if kind not in (OrderType.MARKET, OrderType.STOP, OrderType.TAKE_PROFIT):
        fields["price"] = rng.choice([b'"50000"', b"3000.5", b'"1.10"'])
    if kind not in (OrderType.MARKET, OrderType.LIMIT, OrderType.LIMIT_MAKER):
        fields["stop_price"] = rng.choice([b'"49000"', b"3100", b'"1.2"'])
    if rng.random() < 0.3:
        fields["time_in_force"] = json.dumps(rng.choice(list(TimeInForce)).value).encode()
    if rng.random() < 0.3:
        fields["metadata"] = b'{"note":' + string(rng) + b',"n":' + number(rng) + b"}"
    return fields


def random_fields(rng: random.Random) -> dict[str, bytes]:
    """Any subset of the request's fields, of any action, each with a value of its kind or
    a hostile one."""
    fields: dict[str, bytes] = {}
    for name in rng.sample(FIELDS, rng.randint(0, len(FIELDS))):
        if name in DECIMALS:
            value = number(rng) if rng.random() < 0.5 else b'"' + number(rng) + b'"'
        elif name in EPOCHS:
            value = number(rng)
        elif name == "action":
            value = json.dumps(rng.choice([*(a.value for a in Action), "buy"])).encode()
        else:
            value = rng.choice(HOSTILE)(rng)
        fields[name] = value
    return fields


def serialize(fields: dict[str, bytes], rng: random.Random) -> bytes:
    pairs = [json.dumps(k).encode() + b":" + v for k, v in fields.items()]
    if pairs and rng.random() < 0.1:  # a key given twice, the second time hostile
        key = rng.choice(list(fields))
        pairs.append(json.dumps(key).encode() + b":" + rng.choice(HOSTILE)(rng))
    if rng.random() < 0.05:
        pairs.append(string(rng) + b":" + scalar(rng))  # an unknown (maybe invalid) key
    rng.shuffle(pairs)
    return b"{" + b",".join(pairs) + b"}"


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: flips, inserts, deletions, truncation, invalid UTF-8."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        at = rng.randrange(len(out))
        op = rng.random()
        if op < 0.3:
            out[at] = rng.randrange(256)
        elif op < 0.5:
            out[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"\\",
                                     b"{", b"[", b"e9999999", b"-", b","])
        elif op < 0.7:
            del out[at]
        else:
            del out[at:]
    return bytes(out)


def entry(rng: random.Random) -> dict[bytes, bytes]:
    """One hostile pending entry (its fields)."""
    kind = rng.random()
    if kind < 0.05:  # valid, with hostile but legal text and metadata
        fields = valid_place(rng)
        legal = [c for c in UNICODE if not 0xD800 <= ord(c) <= 0xDFFF]
        fields["strategy_id"] = json.dumps("".join(rng.choices(legal, k=40))).encode()
        levels = rng.randint(0, 30)
        fields["metadata"] = (b'{"a":' + b"[" * levels
                              + json.dumps("".join(rng.choices(legal, k=100))).encode()
                              + b"]" * levels + b"}")
        data = serialize(fields, rng)
    elif kind < 0.35:  # a place with one to three fields made hostile, some left out
        fields = valid_place(rng)
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(FIELDS)
            if rng.random() < 0.2:
                fields.pop(name, None)
            else:
                fields[name] = rng.choice(HOSTILE)(rng)
        data = serialize(fields, rng)
    elif kind < 0.65:
        data = serialize(random_fields(rng), rng)
    elif kind < 0.85:
        data = mutate(serialize(valid_place(rng), rng), rng)
    elif kind < 0.95:  # not an object at all
        data = rng.choice(HOSTILE)(rng)
    elif kind < 0.98:
        data = rng.randbytes(rng.randint(0, 64))
    else:
        return rng.choice([{}, {b"payload": b"{}"}, {b"data": b"", b"sig": b"zz"}])
    return {b"data": data}


def test_one_hundred_thousand_hostile_entries_are_each_decided_alone() -> None:
    rng = random.Random(SEED)
    decode = Decode(services())
    counts = {"invalid": 0, "request": 0}
    started = time.perf_counter()
    seen = 0
    while seen < ENTRIES:
        jobs = [Job(f"1700000000000-{seen + i}", entry(rng), received_at=1_700_000_000_001)
                for i in range(BATCH)]
        decode(jobs)
        for job in jobs:
            if job.result is not None:
                # Refused, as input: never a bug of ours, and the answer can be written.
                assert job.result.reason_code == ReasonCode.INVALID, (
                    job.fields, job.result.reason)
                assert len(job.result.reason or "") <= 600, job.result.reason
                encode(job.result)
                counts["invalid"] += 1
            else:
                assert job.request is not None
                encode(job.request)
                if job.spec is not None:
                    encode(job.spec)
                counts["request"] += 1
        seen += len(jobs)
    elapsed = time.perf_counter() - started
    print(f"\nfuzz: {seen} hostile entries through decode and validate in {elapsed:.1f} s: "
          f"{counts['invalid']} refused invalid, {counts['request']} valid requests, "
          "0 exceptions")
    assert seen >= 100_000
    assert sum(counts.values()) == seen
    # The generator reaches both sides: it is not all noise, nor all valid.
    assert counts["request"] > 1_000 and counts["invalid"] > 50_000
