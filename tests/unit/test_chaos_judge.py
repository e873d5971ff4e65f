"""The chaos run's consistency count (devtools/chaos.py ``judge``): results against the
client ids the exchange received, per client id."""

from __future__ import annotations

from devtools.chaos import RequestId, judge
from producer.contract import Action, Result, ResultStatus


def said(n: int, cid: str, status: ResultStatus, *, reached: bool = False,
         reason: str | None = None) -> tuple[RequestId, Result]:
    return ("orders", f"1-{n}"), Result(
        request_id=f"1-{n}", action=Action.PLACE, status=status, client_order_id=cid,
        reason_code=reason, broker_order_id=f"B{n}" if reached else None)


DENIED = ResultStatus.DENIED


def test_a_retry_placed_after_a_denial_speaks_for_the_client_id() -> None:
    # The first request was denied (no order), a producer's retry of it was placed.
    firsts = [said(1, "c1", DENIED, reason="risk_denied:reference_price"),
              said(2, "c1", ResultStatus.FILLED, reached=True)]
    assert judge(firsts, {"c1"}) == (0, [])


def test_a_denial_of_a_client_id_the_exchange_received_with_no_other_claim_disagrees() -> None:
    denied = said(1, "c1", DENIED, reason="risk_denied:notional")
    assert judge([denied], {"c1"}) == (0, [denied])
    assert judge([denied], set()) == (0, [])


def test_a_claim_the_exchange_never_saw_disagrees() -> None:
    filled = said(1, "c1", ResultStatus.FILLED, reached=True)
    assert judge([filled], set()) == (0, [filled])
    assert judge([filled], {"c1"}) == (0, [])


def test_two_claims_on_one_client_id_disagree() -> None:
    first = said(1, "c1", ResultStatus.FILLED, reached=True)
    second = said(2, "c1", ResultStatus.ACCEPTED, reached=True)
    assert judge([first, second], {"c1"}) == (0, [second])


def test_duplicates_and_poison_name_another_request_s_order_and_are_not_judged() -> None:
    placed = said(1, "c1", ResultStatus.FILLED, reached=True)
    duplicate = said(2, "c1", ResultStatus.FAILED, reached=True, reason="duplicate")
    poison = said(3, "c2", ResultStatus.FAILED, reason="poison")
    assert judge([placed, duplicate, poison], {"c1", "c2"}) == (0, [])


def test_a_submitted_result_leaves_its_client_id_unjudged_and_is_counted_unknown() -> None:
    submitted = said(1, "c1", ResultStatus.SUBMITTED)
    denied = said(2, "c1", DENIED, reason="halted")
    assert judge([submitted, denied], {"c1"}) == (1, [])
    assert judge([submitted], set()) == (1, [])
