"""MLflow tracking: one place that knows where runs go (a server, or SQLite under SLM_PIPELINE_HOME)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from slm_pipeline.core.settings import Settings


def experiment_id(name: str, settings: Settings | None = None) -> str:
    """The experiment's id, creating it (with its artifacts under SLM_PIPELINE_HOME when embedded)."""
    import mlflow

    settings = settings or Settings()
    mlflow.set_tracking_uri(settings.resolved_mlflow_uri)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if settings.resolved_mlflow_uri.startswith("sqlite:"):
        location = (settings.mlflow_artifact_root / name.replace("/", "_")).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_run(experiment: str, run_name: str, *, params: dict[str, Any], metrics: dict[str, float | None],
            tags: dict[str, str], artifacts: dict[str, bytes], settings: Settings | None = None) -> str:
    """Record a finished run with its params, metrics, tags and artifacts; return the run id."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id(experiment, settings), run_name=run_name, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        with tempfile.TemporaryDirectory() as folder:
            for name, data in artifacts.items():
                path = Path(folder) / name
                path.write_bytes(data)
                mlflow.log_artifact(str(path))
        return run.info.run_id


def start_run(experiment: str, run_name: str, *, tags: dict[str, str], params: dict[str, Any] | None = None,
              settings: Settings | None = None) -> str:
    """Create a RUNNING run that another process (the trainer) fills in; return its id."""
    from mlflow import MlflowClient

    settings = settings or Settings()
    client = MlflowClient(settings.resolved_mlflow_uri)
    run = client.create_run(experiment_id(experiment, settings), run_name=run_name, tags=tags)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, str(value)[:500])
    return run.info.run_id


def finish_run(run_id: str, status: str, *, tags: dict[str, str] | None = None, settings: Settings | None = None
               ) -> None:
    """End a run with FINISHED, FAILED or KILLED, and tags saying why."""
    from mlflow import MlflowClient

    client = MlflowClient((settings or Settings()).resolved_mlflow_uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)


def stale_runs(experiment: str, filter_string: str, settings: Settings | None = None) -> list[str]:
    """Ids of RUNNING runs matching the filter (left behind by a killed process)."""
    from mlflow import MlflowClient

    settings = settings or Settings()
    client = MlflowClient(settings.resolved_mlflow_uri)
    found = client.search_runs([experiment_id(experiment, settings)],
                               filter_string=f"{filter_string} and attributes.status = 'RUNNING'")
    return [run.info.run_id for run in found]
