"""A delivery's send token (pipeline/steps/submit.py): one per delivery, kept for all its
sends; never the same for two deliveries of one request, in one process or in a worker
restarted under the same name."""

from __future__ import annotations

from fakeredis import FakeAsyncRedis

from executor.config import load_settings
from executor.infra.metrics import Metrics
from executor.infra.store import Store
from executor.pipeline.job import Job
from executor.pipeline.services import Services
from executor.pipeline.steps.submit import Submit
from producer.keys import Keys


def submit_step() -> Submit:
    settings = load_settings(None, {"ORDERSTREAM_CONSUMER": "w1"})
    store = Store(FakeAsyncRedis(), Keys(), results_maxlen=100, order_ttl_ms=1000)
    return Submit(Services(settings, store, {}, Metrics(), "w1"))


def test_a_delivery_keeps_its_token_and_no_other_delivery_has_it() -> None:
    step, restarted = submit_step(), submit_step()  # the same worker name, twice
    first, again = Job("5-0", {}, 0), Job("5-0", {}, 0)  # two deliveries of one request
    token = step._token(first)
    assert step._token(first) == token == first.send_token  # its retries pass the guard
    assert token.startswith("w1:5-0:")
    tokens = {token, step._token(again), restarted._token(Job("5-0", {}, 0))}
    assert len(tokens) == 3
