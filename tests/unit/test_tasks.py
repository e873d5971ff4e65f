"""Ending tasks that swallow a cancel (executor/infra/tasks.py), as redis-py can when the
cancel lands inside a command (its issue 2028): the tracker's push feeds end all the same."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from executor.infra.tasks import cancel_and_wait


async def swallows_one_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):  # lost inside a command
        await asyncio.sleep(30)
    await asyncio.sleep(30)  # the loop goes on to its next read


async def test_a_task_that_swallowed_a_cancel_is_cancelled_again_until_it_ends() -> None:
    polite = asyncio.create_task(asyncio.sleep(30))
    stubborn = asyncio.create_task(swallows_one_cancel())
    await asyncio.sleep(0)
    left = await asyncio.wait_for(cancel_and_wait([polite, stubborn], "test", wait_s=0.05), 2)
    assert left == set() and polite.cancelled() and stubborn.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_logged_and_returned(
        caplog: pytest.LogCaptureFixture) -> None:
    heard = False

    async def deaf() -> None:
        while not heard:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    task = asyncio.create_task(deaf(), name="stuck")
    await asyncio.sleep(0)
    try:
        left = await asyncio.wait_for(cancel_and_wait([task], "deaf", wait_s=0.01, rounds=3),
                                      2)
        assert left == {task} and not task.done()
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
            "deaf ['stuck'] did not stop within 0.03 s; left running"]
    finally:
        heard = True  # lets it end, whatever the assertions said
        task.cancel()
        await task
