"""The stack's Postgres databases and roles: one database per store, a pipeline role that owns them and an
insert-only gateway role (granted on the log store's tables once they exist, by `core.store.roles`)."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from psycopg import sql

from slm_pipeline.stack.config import StackConfig

DATABASES = ("dagster", "mlflow", "logstore")
ROLES = ("pipeline", "gateway")


class DatabaseSetupError(RuntimeError):
    pass


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _connect(config: StackConfig) -> psycopg.Connection:
    try:
        return psycopg.connect(_libpq(config.admin_url), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        where = sa.make_url(config.admin_url).render_as_string(hide_password=True)
        raise DatabaseSetupError(
            f"cannot reach Postgres at {where}: {str(exc).strip()}. Start Postgres, or point "
            "SLM_PIPELINE_STACK_ADMIN_URL (--admin-url) at a role that may create databases and roles."
        ) from exc


def database_url(config: StackConfig, database: str, role: str, password: str) -> str:
    """URL of one of the stack's databases as one of its roles (plain `postgresql://`, which Dagster, MLflow and
    the log store each map to their driver)."""
    url = sa.make_url(_libpq(config.admin_url))
    return url.set(username=config.role(role), password=password,
                   database=config.database(database)).render_as_string(hide_password=False)


def ensure_databases(config: StackConfig, passwords: dict[str, str]) -> list[str]:
    """Create the roles (or reset their passwords) and the databases that are missing; returns what it created."""
    created = []
    try:
        with _connect(config) as admin:
            for purpose in ROLES:
                role = config.role(purpose)
                exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                admin.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(passwords[purpose])))
                if not exists:
                    created.append(f"role {role}")
            # Membership lets a non-superuser admin give the pipeline role databases (and drop them on purge).
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(config.role("pipeline"))))
            for purpose in DATABASES:
                name = config.database(purpose)
                if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(config.role("pipeline"))))
                    created.append(f"database {name}")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseSetupError(f"the admin role may not create roles or databases: {exc}") from exc
    return created


def drop_databases(config: StackConfig) -> list[str]:
    """Drop the stack's databases (closing their connections) and roles; returns what it dropped."""
    dropped = []
    with _connect(config) as admin:
        for purpose in DATABASES:
            name = config.database(purpose)
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
                dropped.append(f"database {name}")
        for purpose in ROLES:
            role = config.role(purpose)
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
                dropped.append(f"role {role}")
    return dropped
