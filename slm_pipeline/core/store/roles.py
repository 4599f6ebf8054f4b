"""Role-based access to the log store on Postgres: real GRANTs, least privilege.

* the **gateway** role logs calls: INSERT on `agent_calls` (no SELECT: it cannot read a call back,
  not even its own) and SELECT on `api_keys` to authenticate agents;
* the **pipeline** role reads calls for the lake (S1 collect) and imports logs: SELECT and INSERT
  on `agent_calls`, nothing on `api_keys`.

Both may read the migration version table, to check that the schema is current. The owner of the
tables (who runs the migrations, `slm-pipeline keys` and this grant) keeps everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from slm_pipeline.core.store.logstore import LogStore
from slm_pipeline.core.store.migrate import VERSION_TABLE

_TABLES = ("agent_calls", "api_keys", VERSION_TABLE)
PRIVILEGES = {
    "gateway": {"agent_calls": "INSERT", "api_keys": "SELECT", VERSION_TABLE: "SELECT"},
    "pipeline": {"agent_calls": "SELECT, INSERT", VERSION_TABLE: "SELECT"},
}


class RoleError(RuntimeError):
    """Grants that cannot be made; the message says what to do."""


@dataclass
class Grant:
    role: str
    kind: str
    created: bool
    privileges: dict[str, str]


def _quote(connection: sa.Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def grant_roles(store: LogStore, *, gateway: str | None = None, pipeline: str | None = None,
                create: bool = False) -> list[Grant]:
    """Give each role exactly its privileges (revoking any others on these tables)."""
    if store.dialect != "postgresql":
        raise RoleError("roles need a Postgres log store (SLM_PIPELINE_DATABASE_URL); the embedded SQLite store "
                        "has no users")
    done: list[Grant] = []
    with store.engine.begin() as connection:
        sequence = connection.scalar(sa.text("SELECT pg_get_serial_sequence('agent_calls', 'seq')"))
        for kind, role in (("gateway", gateway), ("pipeline", pipeline)):
            if role is None:
                continue
            exists = connection.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
            name = _quote(connection, role)
            if not exists:
                if not create:
                    raise RoleError(f"Postgres role {role!r} does not exist; create it (CREATE ROLE {role} LOGIN "
                                    "PASSWORD ...) or pass --create-roles")
                connection.execute(sa.text(f"CREATE ROLE {name} LOGIN"))
            for table in _TABLES:
                connection.execute(sa.text(f"REVOKE ALL ON {_quote(connection, table)} FROM {name}"))
            for table, privileges in PRIVILEGES[kind].items():
                connection.execute(sa.text(f"GRANT {privileges} ON {_quote(connection, table)} TO {name}"))
            if "INSERT" in PRIVILEGES[kind]["agent_calls"]:
                connection.execute(sa.text(f"GRANT USAGE ON SEQUENCE {sequence} TO {name}"))
            schema = connection.scalar(sa.text("SELECT current_schema()"))
            connection.execute(sa.text(f"GRANT USAGE ON SCHEMA {_quote(connection, schema)} TO {name}"))
            done.append(Grant(role, kind, not exists, PRIVILEGES[kind]))
    return done
