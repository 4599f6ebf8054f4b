"""The log store: every agent call stored once, on SQLite (embedded) or Postgres."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from slm_pipeline.core.store import migrate
from slm_pipeline.core.store.schema import agent_calls


class StoredCall(TypedDict):
    """A row of `agent_calls` as the importer (and later the gateway) writes it."""

    call_id: str
    agent_id: str
    workload_id: str | None
    timestamp: datetime
    latency_ms: float | None
    human_facing: bool | None
    status: str
    model: str | None
    tags: dict[str, Any] | None
    request_payload: bytes
    response_payload: bytes
    payload_key_id: str | None
    source: str
    ingested_at: datetime


_APPEND_COLUMNS = tuple(c.name for c in agent_calls.columns if c.name != "seq")
# Writers to Postgres take this transaction-level advisory lock before they draw `seq` values, so
# calls commit in `seq` order: a reader that sees seq N has seen every call below it, and S1's
# watermark never skips a call committed late by a concurrent writer. (SQLite's write lock already
# serialises writers.)
_WRITE_LOCK = 0x534C4D31  # "SLM1"


class SchemaError(RuntimeError):
    """The store's schema is not the one this version expects."""


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain `postgres://` / `postgresql://` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (Dagster runs) don't block the importer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class LogStore:
    """Calls, keyed by `call_id`; `seq` gives their arrival order."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = normalise_url(url)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # a bounded connect: an unreachable server is an error in seconds, not a hang
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        if create:
            migrate.upgrade(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A write transaction whose calls commit in `seq` order (see `_WRITE_LOCK`)."""
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            yield connection

    def __repr__(self) -> str:
        return f"LogStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------

    def insert(self, rows: Sequence[StoredCall]) -> set[str]:
        """Insert calls whose `call_id` is new; return the ids that were inserted."""
        if not rows:
            return set()
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(agent_calls)
            .on_conflict_do_nothing(index_elements=["call_id"])
            .returning(agent_calls.c.call_id)
        )
        with self._writing() as connection:
            return set(connection.scalars(statement, list(rows)))

    def append(self, rows: Sequence[StoredCall]) -> int:
        """Insert calls whose `call_id` is new; return how many were inserted.

        Unlike `insert`, this needs only INSERT privilege (no RETURNING, no conflict target: both
        would read the table), so the gateway's insert-only role can use it. It is the driver's
        `executemany` (psycopg pipelines it): 500 rows take ~20 ms, ten times less than SQLAlchemy's
        multi-row VALUES, which compiles every batch anew.
        """
        if not rows:
            return 0
        placeholder = "%s" if self.dialect == "postgresql" else "?"
        sql = (f"INSERT INTO agent_calls ({', '.join(_APPEND_COLUMNS)}) "
               f"VALUES ({', '.join([placeholder] * len(_APPEND_COLUMNS))}) ON CONFLICT DO NOTHING")
        parameters = [tuple(orjson.dumps(row["tags"]).decode() if name == "tags" and row["tags"] is not None
                            else row[name] for name in _APPEND_COLUMNS) for row in rows]  # type: ignore[literal-required]
        with self._writing() as connection:
            result = connection.exec_driver_sql(sql, parameters, execution_options={"preserve_rowcount": True})
            return result.rowcount

    def check_schema(self) -> None:
        """Raise `SchemaError` unless the store was migrated to the current revision (by its owner)."""
        with self.engine.connect() as connection:
            current = migrate.current_revision(connection)
        if current != migrate.head_revision():
            raise SchemaError(f"the log store is at revision {current or 'none'}, this version needs "
                              f"{migrate.head_revision()}: run any `slm-pipeline` command (for example "
                              "`slm-pipeline keys list`) as the owner of the database to migrate it")

    # --- reading -----------------------------------------------------------------------

    def watermarks(self) -> dict[str, int]:
        """The highest `seq` of each agent: which agents exist, and whether they have new calls."""
        query = sa.select(agent_calls.c.agent_id, sa.func.max(agent_calls.c.seq)).group_by(agent_calls.c.agent_id)
        with self.engine.connect() as connection:
            return {agent: int(seq) for agent, seq in connection.execute(query)}

    def agents(self) -> list[str]:
        return sorted(self.watermarks())

    def count(self, agent_id: str | None = None, *, after_seq: int = 0, up_to_seq: int | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(agent_calls).where(agent_calls.c.seq > after_seq)
        if agent_id is not None:
            query = query.where(agent_calls.c.agent_id == agent_id)
        if up_to_seq is not None:
            query = query.where(agent_calls.c.seq <= up_to_seq)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def iter_calls(
        self, agent_id: str, *, after_seq: int = 0, up_to_seq: int | None = None, batch_size: int = 5000
    ) -> Iterator[list[Mapping[str, Any]]]:
        """Batches of an agent's calls in `seq` order, from `after_seq` (exclusive) to `up_to_seq`."""
        while True:
            query = (
                sa.select(agent_calls)
                .where(agent_calls.c.agent_id == agent_id, agent_calls.c.seq > after_seq)
                .order_by(agent_calls.c.seq)
                .limit(batch_size)
            )
            if up_to_seq is not None:
                query = query.where(agent_calls.c.seq <= up_to_seq)
            with self.engine.connect() as connection:
                batch = [dict(row) for row in connection.execute(query).mappings()]
            if not batch:
                return
            yield batch
            after_seq = batch[-1]["seq"]
