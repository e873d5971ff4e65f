"""What the pipeline steps share: settings, the store, the brokers, the clock, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .brokers.base import Broker
from .config import Settings
from .metrics import Metrics
from .store import Store


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    brokers: dict[str, Broker]
    metrics: Metrics
    worker: str
    clock: Callable[[], int] = field(default=wall_clock_ms)
