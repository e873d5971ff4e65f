"""Every Redis key orderstream uses, in one place, so the data layout reads in one screen.

All keys start with the deployment prefix. A prefix in braces such as ``{orders}`` makes
every key share one Redis Cluster hash slot, so Lua scripts and MULTI can span them; on a
cluster it is required (``check_cluster_prefix``).
"""

from __future__ import annotations

GROUP = "executors"
DEFAULT_PREFIX = "orders"


def hash_tag(prefix: str) -> str | None:
    """The Redis Cluster hash tag that every key under ``prefix`` hashes by: the text between
    the prefix's first ``{`` and the first ``}`` after it, when that is not empty. None when
    the prefix has none, so each key would hash by its whole name (Redis's rule)."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1:end] if end > start + 1 else None


def check_cluster_prefix(prefix: str) -> None:
    """ValueError unless every key under ``prefix`` lands in one cluster hash slot."""
    if hash_tag(prefix) is None:
        raise ValueError(
            f"{prefix!r} has no hash tag: on a Redis Cluster the keys of a deployment must "
            "share one hash slot (its scripts and MULTI span them); write it in braces, "
            'e.g. "{orders}" or "{orders-0}"')


class Keys:
    __slots__ = (
        "algos_cancel",
        "assets",
        "audit",
        "cancels",
        "completed",
        "completed_readers",
        "events",
        "events_readers",
        "events_trimmed",
        "failed",
        "failed_readers",
        "legacy_lists",
        "lists_cancel",
        "open",
        "pending",
        "positions",
        "positions_base",
        "positions_base_cursor",
        "positions_cursor",
        "positions_indexed",
        "positions_lease",
        "prefix",
        "risk_limits",
        "trading",
        "workers",
    )

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.pending = f"{prefix}:pending"  # stream of requests, consumer group "executors"
        self.completed = f"{prefix}:completed"  # stream of successful results
        self.failed = f"{prefix}:failed"  # stream of failed results
        # Hash reader -> the last entry of that result stream it has durably processed: a
        # registered reader of the results (an archive); retention and the results cap never
        # trim past one (retention.py, finish.lua).
        self.completed_readers = f"{prefix}:completed:readers"
        self.failed_readers = f"{prefix}:failed:readers"
        self.events = f"{prefix}:events"  # stream of every order state transition
        # Hash reader -> the last events entry it has durably processed: a registered reader
        # of the events (an archive); the log is never trimmed past one (retention.py).
        self.events_readers = f"{prefix}:events:readers"
        # The id before which events may have been trimmed (absent: the log is whole).
        self.events_trimmed = f"{prefix}:events:trimmed"
        self.open = f"{prefix}:open"  # set of client ids of non-terminal orders
        # Hash client id -> request id of a cancel that came while the order was still
        # being submitted; the tracker sends it once the place lands.
        self.cancels = f"{prefix}:cancels"
        # Hash "<account>:<symbol>" -> Position JSON (executor/model/positions.py): the fold of
        # every fill event of orders:events, up to the entry id in positions_cursor.
        self.positions = f"{prefix}:positions"
        self.positions_cursor = f"{prefix}:positions:cursor"
        self.positions_lease = f"{prefix}:positions:lease"  # the one worker projecting
        # Set of every field of ``positions`` that the accounts' sets (``positions_of``)
        # hold: they are complete while it holds as many as the hash (SCARD = HLEN; nothing
        # deletes a field of the hash, so as many is the same fields). A field written by a
        # projector from before the sets is not in it, and the risk checks read the whole
        # hash until the next fold page indexes it (infra/lua/positions.lua).
        self.positions_indexed = f"{prefix}:positions:indexed"
        # The positions as of the events entry in positions_base_cursor, copied when the
        # events are trimmed: the log keeps every entry after it, so replay can still check
        # the positions (base + the fills after it) once the start of the log is gone.
        self.positions_base = f"{prefix}:positions:base"
        self.positions_base_cursor = f"{prefix}:positions:base:cursor"
        # Hash "<account>:<symbol>" -> JSON [base asset, quote asset] the projector folded the
        # symbol's fills with (what a commission's asset means for the position), so that
        # ``orderstream replay`` folds them the same way; written before the positions.
        self.assets = f"{prefix}:assets"
        self.workers = f"{prefix}:workers"  # zset consumer -> epoch ms of its last heartbeat
        # Hash scope ("global" or an account) -> trading state (executor/safety/trading.py).
        self.trading = f"{prefix}:trading"
        # Hash account -> risk limits JSON set at run time (``orderstream risk set``).
        self.risk_limits = f"{prefix}:risk:limits"
        self.audit = f"{prefix}:audit"  # stream of operator actions (risk set, kill, resume)
        # Hash entry client id -> JSON progress of a contingent list, of every account: where
        # workers before per-account lists (``lists``) kept them. Only read, to move what
        # such a worker wrote to its account's hash, so a list lives through a rolling
        # upgrade (executor/background/lists.py).
        self.legacy_lists = f"{prefix}:lists"
        # Hash entry client id -> the request id of a cancel of its list.
        self.lists_cancel = f"{prefix}:lists:cancel"
        # Hash parent client id -> the request id of a cancel of its algorithm.
        self.algos_cancel = f"{prefix}:algos:cancel"

    def order(self, client_order_id: str) -> str:
        """Hash with the current state of one order; also its idempotency record."""
        return f"{self.prefix}:order:{client_order_id}"

    def due(self, account: str) -> str:
        """Zset client id -> epoch ms when the tracker must next look at the account's open
        order (executor/infra/attention.py)."""
        return f"{self.prefix}:due:{account}"

    def positions_of(self, account: str) -> str:
        """Set of the account's fields of ``positions``: what its risk checks read of that
        hash, which holds every account's (infra/lua/reads.lua ``POSITIONS``)."""
        return f"{self.positions_of_prefix}{account}"

    @property
    def positions_of_prefix(self) -> str:
        return f"{self.prefix}:positions:of:"

    def worker(self, consumer: str) -> str:
        """Heartbeat of a live worker (expires when it stops beating)."""
        return f"{self.prefix}:worker:{consumer}"

    def risk(self, account: str, name: str) -> str:
        """Shared pre-trade risk state of an account (reservations, daily counters)."""
        return f"{self.prefix}:risk:{account}:{name}"

    def limits(self, account: str, name: str) -> str:
        """Shared rate-limit state of a broker account (window counters, pauses, bans)."""
        return f"{self.prefix}:limits:{account}:{name}"

    def limits_ip(self, group: str, name: str) -> str:
        """Rate-limit state shared by the accounts of one IP group (weight, pause, ban)."""
        return f"{self.prefix}:limits-ip:{group}:{name}"

    def breaker(self, account: str) -> str:
        """Hash with the circuit breaker of a broker account (executor/safety/breaker.py)."""
        return f"{self.prefix}:breaker:{account}"

    def emulated(self, account: str) -> str:
        """Set of the client ids of the account's orders the emulator holds or is
        releasing (executor/brokers/emulating.py)."""
        return f"{self.prefix}:emulated:{account}"

    def exits(self, account: str) -> str:
        """Hash symbol -> the stop-loss / take-profit of the account's position in it
        (executor/model/exits.py; ``orderstream sl-tp``)."""
        return f"{self.prefix}:exits:{account}"

    def exits_auto(self, account: str) -> str:
        """Hash symbol -> long / short: the position its automatic exit was made for."""
        return f"{self.prefix}:exits:{account}:auto"

    def exit_requests(self, account: str) -> str:
        """Hash symbol -> the pending entry id of the last closing request of its exit."""
        return f"{self.prefix}:exits:{account}:requests"

    def lists(self, account: str) -> str:
        """Hash entry client id -> JSON progress of the contingent list that order is the
        entry of (executor/model/lists.py), from its creation (infra/lua/begin.lua) until
        it and its exits have ended; watched by the worker emulating the account."""
        return f"{self.prefix}:emulated:{account}:lists"

    def algos(self, account: str) -> str:
        """Hash parent client id -> JSON progress of the execution algorithm (TWAP, VWAP)
        that order is the parent of (executor/background/algos.py), from its creation
        (infra/lua/begin.lua) until its schedule has ended; run by the worker emulating the
        account."""
        return f"{self.prefix}:emulated:{account}:algos"

    def emulator_lease(self, account: str) -> str:
        """The one worker emulating the account's conditional orders."""
        return f"{self.prefix}:emulated:{account}:lease"

    def paper(self, account: str, name: str) -> str:
        """State of the simulated exchange behind a paper account."""
        return f"{self.prefix}:paper:{account}:{name}"
