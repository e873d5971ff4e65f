"""The archive's schema versions: Alembic's migrations (migrations/versions), run on the
archive's own async engine. ``orderstream archive --init`` and ``--upgrade`` bring a
database to the newest version; the archive refuses to write to one that is not there."""

from __future__ import annotations

import logging
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# Alembic tells every run which dialect it found at INFO: noise on every command's output.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


class SchemaError(Exception):
    """The database is not at the schema version this code writes."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("executor.archive") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None  # there is at least the first migration
    return found


async def current(engine: AsyncEngine) -> str | None:
    """The database's schema version; None for a database the archive never set up."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(engine: AsyncEngine, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target``; returns the versions before and after."""
    before = await current(engine)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(config(sync), target))
    after = await current(engine)
    assert after is not None
    return before, after


async def check(engine: AsyncEngine) -> None:
    found, wanted = await current(engine), head()
    if found is None:
        raise SchemaError("the archive database has no tables yet: run "
                          "`orderstream archive --init` first")
    if found != wanted:
        raise SchemaError(f"the archive database is at schema version {found}, this "
                          f"orderstream writes {wanted}: run `orderstream archive --upgrade`")
