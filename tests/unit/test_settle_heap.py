"""A started worker tunes the collector: what exists is frozen out of full collections and
young collections run less often (a tenth of the CPU per order went to collections)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from executor.worker import settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_heap_freezes_what_exists_and_collects_young_objects_less_often(
        restored_gc: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1_000)]  # objects alive when the worker has started
    settle_heap()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold()[0] >= 10 * 700  # the default young threshold is 700
    # Frozen objects are still alive and collectable later if unfrozen: nothing is lost.
    assert kept[999] == [999]
