"""The Dagster instance that `slm-pipeline` uses: DAGSTER_HOME if set, else an embedded one."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from slm_pipeline.core.settings import Settings

EMBEDDED_DAGSTER_YAML = """\
# Embedded Dagster instance of slm_pipeline: SQLite storage in this folder.
# Set DAGSTER_HOME to a folder with the repository's dagster.yaml for Postgres storage.
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  # Assets in a pool run at most `default_limit` at a time across all runs: training and evaluation are in
  # pool "gpu" (one per accelerator; raise it with `dagster instance concurrency set gpu N`).
  pools:
    default_limit: 1
telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home(settings: Settings | None = None) -> Path:
    """Set DAGSTER_HOME (to the embedded folder unless it is set) and make sure it exists."""
    settings = settings or Settings()
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if "DAGSTER_HOME" not in os.environ:
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(EMBEDDED_DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(home.resolve())
    return Path(os.environ["DAGSTER_HOME"])


def get_instance(settings: Settings | None = None) -> dg.DagsterInstance:
    ensure_dagster_home(settings)
    return dg.DagsterInstance.get()
