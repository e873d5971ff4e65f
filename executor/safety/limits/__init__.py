"""Rate limits shared by every worker of a broker account: config and defaults
(config.py), the window and GCRA arithmetic (windows.py), the Redis limiter (limiter.py),
the bound on one worker's calls at once (gate.py).
The broker wrapper that applies them is brokers/limited.py."""

from .config import AccountLimits, Plan, Rate, Window, plan_for
from .gate import Gate
from .limiter import BAN, PAUSE, Grant, Limiter

__all__ = ["BAN", "PAUSE", "AccountLimits", "Gate", "Grant", "Limiter", "Plan", "Rate", "Window",
           "plan_for"]
