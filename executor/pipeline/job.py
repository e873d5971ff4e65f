"""One request on its way through the pipeline: what was read, what was decided so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from producer.contract import Action, Event, OrderSpec, Request, Result

from ..model.order import Order
from .reads import Reads


@dataclass(slots=True, eq=False)
class Job:
    request_id: str  # the pending entry's stream id
    fields: Mapping[bytes, bytes]
    received_at: int
    request: Request | None = None
    action: Action = Action.PLACE
    client_order_id: str | None = None
    spec: OrderSpec | None = None
    order: Order | None = None
    expected_seq: int = 0  # the order's seq when we read it: finish is a compare-and-set
    resumed: bool = False  # the order was recorded by an earlier delivery of this request
    events: list[Event] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    replaces: Order | None = None  # an amend's old order, once it is the replacement's place
    result: Result | None = None  # set once the request is decided; later steps skip it
    reserved: bool = False  # the risk step reserved for it (pipeline/steps/risk.py)
    send_token: str = ""  # this delivery's send token, made once (Services.send_token)
    # Its order was taken by the exchange in the script that created it (risk.py's door):
    # the submit step's call only collects the answer, whatever the time.
    at_record: bool = False
    # Its outcome was written in that same script too (pipeline/steps/taken.py): later
    # steps and the final write pass it by.
    written: bool = False
    # Left pending without a result after a bug of ours once its order may have been
    # written or sent (pipeline/steps/guard.py): later steps skip it, redelivery redoes it.
    held: bool = False
    reads: Reads | None = None  # its batch's first read (pipeline/steps/prefetch.py)

    @property
    def open(self) -> bool:
        """Still to be decided by the next step: no result, not held, not written."""
        return self.result is None and not self.held and not self.written

    @property
    def enqueued_at(self) -> int:
        """When Redis accepted the request: the millisecond part of its stream id."""
        return int(self.request_id.partition("-")[0])

    @property
    def account(self) -> str | None:
        if self.spec is not None:
            return self.spec.account
        return self.request.account if self.request is not None else None
