"""Logging: one JSON object per line for machines (the worker's default) or plain text for
people, with the order a line is about as fields, and known secrets masked.

- Level: ``--log-level``, else ``ORDERSTREAM_LOG_LEVEL``, else INFO.
- Format: ``ORDERSTREAM_LOG_FORMAT`` = ``json`` or ``text``; the default is json for the
  worker, text for the commands people type.
- A line about an order passes ``extra=about(client_order_id, request_id)``; the JSON has
  them as fields ``client_order_id`` and ``request_id`` (text appends ``[cid=... rid=...]``).
- Secrets: whoever reads one (the Redis password, a broker's API secret, a signing key)
  calls ``redact(value)``; every formatted line has such values replaced by ``***``. This
  is a safety net: code still never puts a secret into a message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MASK = "***"
# The fields a line about an order carries (they come from ``extra=``).
ORDER_FIELDS = ("client_order_id", "request_id")
_MIN_SECRET = 4  # shorter values would mask ordinary words; no real secret is that short

_secrets: set[str] = set()


class LogConfigError(ValueError):
    pass


def redact(secret: str | None) -> None:
    """Mask ``secret`` in every log line from now on."""
    if secret and len(secret) >= _MIN_SECRET:
        _secrets.add(secret)


def masked(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def about(client_order_id: str | None, request_id: str | None = None) -> dict[str, str]:
    """The ``extra=`` of a log call about one order (or one request)."""
    fields: dict[str, str] = {}
    if client_order_id:
        fields["client_order_id"] = client_order_id
    if request_id:
        fields["request_id"] = request_id
    return fields


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg"[, "client_order_id", "request_id"][, "exc"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": masked(record.getMessage()),
        }
        for name in ORDER_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exc"] = masked(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = masked(record.exc_text)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [f"{short}={record.__dict__[name]}"
                for name, short in zip(ORDER_FIELDS, ("cid", "rid"), strict=True)
                if record.__dict__.get(name) is not None]
        if tags:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{' '.join(tags)}]{newline}{rest}"
        return masked(text)


def settings(level: str | None, fmt: str | None, env: Mapping[str, str],
             default_format: str) -> tuple[str, str]:
    """The level and format to use, checked; LogConfigError names the bad value."""
    level = (level or env.get("ORDERSTREAM_LOG_LEVEL") or "INFO").upper()
    if level not in LEVELS:
        raise LogConfigError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    fmt = (fmt or env.get("ORDERSTREAM_LOG_FORMAT") or default_format).lower()
    if fmt not in FORMATS:
        raise LogConfigError(f"ORDERSTREAM_LOG_FORMAT must be json or text, got {fmt!r}")
    return level, fmt


def setup(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Send every logger's lines to ``stream`` (stderr) in ``fmt`` at ``level``."""
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    # Replaces an earlier setup's handler only: others (a test runner's capture) stay.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class _Handler(logging.StreamHandler[IO[str]]):
    """The handler ``setup`` installs, told apart from anyone else's."""


class Every:
    """Whether a repeated condition is to be logged now: once per ``period_ms`` for each
    key (a background pass finds the same trouble every pass, and would flood the log).
    Keys not seen for a period are forgotten, so one per order or list does not pile up."""

    def __init__(self, period_ms: int = 60_000) -> None:
        self.period_ms = period_ms
        self._at: dict[Any, int] = {}

    def due(self, key: Any, now: int) -> bool:
        last = self._at.get(key)
        if last is not None and now - last < self.period_ms:
            return False
        if len(self._at) >= 1024:
            self._at = {k: t for k, t in self._at.items() if now - t < self.period_ms}
        self._at[key] = now
        return True
