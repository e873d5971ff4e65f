"""Crash injection at named points of the pipeline, for the tests that prove a crash there
loses nothing and sends nothing twice.

``ORDERSTREAM_FAILPOINT=<name>`` (read once, at import) makes the process kill itself with
SIGKILL the first time it reaches ``failpoint(<name>)``: no cleanup, no flush, exactly what
a power cut or the OOM killer does. Unset, a failpoint costs one comparison.

Points: ``after_persist`` (order recorded pending_submit, broker not called yet),
``after_submit`` (broker answered, outcome not written yet) and ``after_pending_cancel``
(a cancel, amend or cancel_all wrote ``pending_cancel``, the broker not asked yet).
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"after_persist", "after_submit", "after_pending_cancel"})

_armed = os.environ.get("ORDERSTREAM_FAILPOINT", "")
if _armed and _armed not in POINTS:
    raise RuntimeError(f"ORDERSTREAM_FAILPOINT={_armed!r} is not one of {sorted(POINTS)}")


def failpoint(name: str) -> None:
    if name == _armed:
        os.kill(os.getpid(), signal.SIGKILL)
