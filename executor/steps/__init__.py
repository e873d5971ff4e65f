"""The per-request pipeline of ARCHITECTURE.md, one module a step, in the order they run:

decode (decode + validate) -> deadline (stale?) -> idempotency (client id seen?) ->
persist (pending_submit + events, before any broker call) -> submit (broker, retries,
unknown outcome resolved by lookup) ; cancel handles the cancel and cancel_all actions.

Each step takes the batch's jobs that are still undecided and decides some of them (sets
``job.result``) or prepares them for the next. Risk checks, authentication and limits slot
in between idempotency and persist as further steps of the same shape.
"""
