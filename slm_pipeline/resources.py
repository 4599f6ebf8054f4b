"""Dagster resources: thin handles on the core's log store and lake.

Unset fields fall back to the environment (`SLM_PIPELINE_*`, see
`slm_pipeline.core.settings`), so secrets such as database passwords never
appear in run config or in the UI.
"""

import dagster as dg
from pydantic import PrivateAttr

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.store import LogStore


class LogStoreResource(dg.ConfigurableResource):
    """The call log (SQLite when embedded, Postgres when `SLM_PIPELINE_DATABASE_URL` is set)."""

    database_url: str | None = None
    _store: LogStore | None = PrivateAttr(default=None)

    @property
    def url(self) -> str:
        return self.database_url or Settings().resolved_database_url

    def open(self) -> LogStore:
        if self._store is None:
            self._store = LogStore(self.url)
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: a folder, or any fsspec URL (`SLM_PIPELINE_LAKE_URL`)."""

    url: str | None = None

    def open(self) -> Lake:
        return Lake(self.url or Settings().resolved_lake_url)
