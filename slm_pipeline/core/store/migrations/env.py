"""Alembic environment: run by `slm_pipeline.core.store.migrate` with an open connection."""

from alembic import context

from slm_pipeline.core.store.schema import metadata
from slm_pipeline.core.store.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,  # not `alembic_version`: Dagster's storage may share the database
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
