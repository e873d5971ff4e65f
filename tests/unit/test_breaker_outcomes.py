import asyncio

import pytest

from executor.brokers.base import (
    AuthenticationFailed,
    Banned,
    DuplicateClientId,
    InconsistentRead,
    NotCancellable,
    OrderNotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    Throttled,
    UnknownOutcome,
)
from executor.safety.breaker import BreakerSettings, outcome_code


@pytest.mark.parametrize(("exc", "code"), [
    (None, "S"),
    (PermanentError("insufficient balance"), "S"),  # the broker answered
    (OrderNotFound("unknown order"), "S"),
    (NotCancellable("filled"), "S"),
    (RetryableError("503"), "F"),
    (UnknownOutcome("timeout"), "F"),
    # Answers: an earlier send of ours landed; an order that traded between two reads.
    (DuplicateClientId("-2010 Duplicate order sent."), "S"),
    (InconsistentRead("executedQty 0.003, trades 0.004"), "S"),
    (AuthenticationFailed("-2015 invalid api key"), "X"),
    (RateLimited("429", 1.0), ""),  # throttled is the limiter's business
    (Banned("418", 60.0), ""),
    (Throttled("our own limiter had no room before the deadline"), ""),
    (ValueError("our own bug"), ""),
    (asyncio.CancelledError(), ""),
])
def test_how_each_broker_outcome_counts(exc: BaseException | None, code: str) -> None:
    assert outcome_code(exc) == code


@pytest.mark.parametrize("bad", [
    {"consecutive_failures": 0}, {"cooldown_ms": 0}, {"error_rate_percent": 0},
    {"error_rate_percent": 101}, {"hold_max_ms": -1},
])
def test_bad_settings_are_refused_naming_the_key(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        BreakerSettings(**bad)  # type: ignore[arg-type]
