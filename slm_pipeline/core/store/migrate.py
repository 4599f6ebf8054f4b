"""Bring a log store's schema to the latest Alembic revision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from filelock import FileLock
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "slm_pipeline_alembic_version"
_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x51A7_0001  # advisory lock: two processes opening a new store migrate one at a time


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


@contextlib.contextmanager
def _exclusive(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that one process at a time holds: an advisory lock on Postgres, a file lock on SQLite."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        with FileLock(f"{database}.migrate.lock"), engine.begin() as connection:
            yield connection
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        yield connection


def upgrade(engine: sa.Engine) -> None:
    """Run pending migrations; a no-op when the store is at head."""
    head = head_revision()
    with engine.connect() as connection:
        if current_revision(connection) == head:
            return
    with _exclusive(engine) as connection:
        if current_revision(connection) == head:
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
