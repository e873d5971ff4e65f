"""The request pipeline: a batch's jobs (job.py), the steps each request passes through
(steps/: decode, authenticate, guard, deadline, idempotency, gate, risk, persist, submit,
cancel, amend), the services they share, the claims held on requests in hand, and the
results they end with. The worker loop that runs it is executor/worker.py."""
