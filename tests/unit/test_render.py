"""The one table shape of the operator commands."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executor.operations import render


def test_columns_are_padded_and_numbers_right_aligned() -> None:
    out = render.table(("cid", "qty", "avg price"),
                       [("a", Decimal("0.010"), None), ("long-id", Decimal("12"), True)],
                       right={1})
    assert out.splitlines() == [
        "cid        qty  avg price",
        "a        0.010  -",
        "long-id     12  yes",
    ]


def test_an_empty_table_is_its_header() -> None:
    assert render.table(("a", "bb"), []) == "a  bb"


def test_decimals_are_fixed_point_and_none_is_a_dash() -> None:
    assert render.cell(Decimal("1E-7")) == "0.0000001"
    assert render.cell(None) == render.DASH == "-"
    assert render.cell(False) == "no"


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0ms"), (-5, "0ms"), (850, "850ms"), (1_000, "1s"), (61_500, "1m1s"),
    (3_600_000, "1h"), (3_660_000, "1h1m"), (90_061_000, "1d1h"), (86_400_000 + 59_000, "1d"),
])
def test_age_shows_its_two_largest_units(ms: int, text: str) -> None:
    assert render.age(ms) == text
