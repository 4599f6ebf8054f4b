"""The log store: every agent call, once, in SQLite or Postgres."""

from slm_pipeline.core.store.logstore import LogStore, SchemaError, StoredCall, normalise_url

__all__ = ["LogStore", "SchemaError", "StoredCall", "normalise_url"]
