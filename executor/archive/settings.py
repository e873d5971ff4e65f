"""The ``[archive]`` section of the configuration."""

from __future__ import annotations

from pathlib import Path

import msgspec

DEFAULT_URL = "sqlite:///orderstream.db"


class ArchiveSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # SQLAlchemy URL: sqlite:///path (the default, a file in the working directory) or
    # postgresql://user@host/db (asyncpg). A URL with a password belongs in url_file.
    url: str = DEFAULT_URL  # ORDERSTREAM_ARCHIVE_URL
    url_file: str = ""  # a file holding the URL instead (its password stays out of config)
    # The name the archive registers under in the streams' readers hashes: retention
    # never trims what it has not stored. Two archives (SQLite and PostgreSQL) need two.
    reader: str = "archive"
    # Several deployments archiving into one database name themselves apart: their rows'
    # source is "<deployment>/<key prefix>" (two deployments' "orders" would otherwise mix
    # their cursors, and their paper fills' ids).
    deployment: str = ""
    batch: int = 1000  # entries read per stream per transaction
    block_ms: int = 1000  # an idle archive waits this long for new entries

    def __post_init__(self) -> None:
        if self.batch <= 0 or self.batch > 10_000:
            raise ValueError(f"archive.batch must be 1 to 10000, got {self.batch}")
        if self.block_ms <= 0:
            raise ValueError(f"archive.block_ms must be positive, got {self.block_ms}")
        if not self.reader or ":" in self.reader:
            raise ValueError(f"archive.reader must be a non-empty name without ':', "
                             f"got {self.reader!r}")
        if "/" in self.deployment:
            raise ValueError(f"archive.deployment must not hold '/', got {self.deployment!r}")

    def source(self, prefix: str) -> str:
        """What the rows of the streams under ``prefix`` are stored as."""
        return f"{self.deployment}/{prefix}" if self.deployment else prefix

    def database_url(self) -> str:
        """The URL to connect with: ``url_file``'s content when set, else ``url``."""
        if self.url_file:
            try:
                return Path(self.url_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"archive.url_file: cannot read {self.url_file}: "
                                 f"{exc.strerror}") from None
        return self.url
