"""The per-request pipeline of ARCHITECTURE.md, one module a step, in the order they run:

authenticate (the signature over the raw bytes, when keys are configured) -> decode
(bounds, decode + validate) -> authenticate again (fresh? may its key do this?) -> deadline
(stale?) -> amend (cancel the old order) -> idempotency (client id seen?) -> gate (circuit
breaker) -> risk -> persist (pending_submit + events, before any broker call) -> submit
(broker, retries, unknown outcome resolved by lookup); cancel handles the cancel and
cancel_all actions.

Each step takes the batch's jobs that are still undecided and decides some of them (sets
``job.result``) or prepares them for the next. A bug of ours met on one job fails that job
alone (guard.py, and the worker's ``_batch``).
"""
