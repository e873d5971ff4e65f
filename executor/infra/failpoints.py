"""Crash injection at named points of the pipeline, for the tests that prove a crash there
loses nothing and sends nothing twice.

``ORDERSTREAM_FAILPOINT=<name>`` (read once, at import) makes the process kill itself with
SIGKILL the first time it reaches ``failpoint(<name>)``: no cleanup, no flush, exactly what
a power cut or the OOM killer does. ``<name>:stop`` makes it stop itself with SIGSTOP
instead, as a debugger, an overloaded host or a long GC pause would: it goes on where it
was once it gets SIGCONT, unaware of the time that passed. Unset, a failpoint costs one
comparison.

Points: ``after_persist`` (order recorded pending_submit, broker not called yet),
``before_send`` (send tokens taken, broker not called yet; for the paper exchange, which
takes the tokens in the script that takes the orders, right before that script),
``after_submit`` (broker answered, outcome not written yet) and ``after_pending_cancel`` (a
cancel, amend or cancel_all wrote ``pending_cancel``, the broker not asked yet).
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"after_persist", "before_send", "after_submit", "after_pending_cancel"})

_armed, _, _how = os.environ.get("ORDERSTREAM_FAILPOINT", "").partition(":")
if _armed and (_armed not in POINTS or _how not in ("", "stop")):
    raise RuntimeError(f"ORDERSTREAM_FAILPOINT={_armed}{':' if _how else ''}{_how!r} is not "
                       f"one of {sorted(POINTS)}, optionally followed by :stop")


def failpoint(name: str) -> None:
    global _armed
    if name == _armed:
        if _how == "stop":
            _armed = ""  # once: after SIGCONT it carries on
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
