"""Where things live, read from the environment.

Every setting has an environment variable (prefix ``SLM_PIPELINE_``) and a
documented default. With no variable set the pipeline runs *embedded*: the log
store is SQLite, and the lake, the quarantine files and Dagster's home are
folders under ``SLM_PIPELINE_HOME``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Locations and limits of one pipeline installation."""

    model_config = SettingsConfigDict(env_prefix="SLM_PIPELINE_", extra="ignore")

    home: Path = Field(
        default=Path(".slm_pipeline"),
        description="Folder for everything the embedded mode keeps on disk.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the log store (Postgres). Unset: SQLite under `home`.",
    )
    lake_url: str | None = Field(
        default=None,
        description="Root of the Parquet lake: a folder or any fsspec URL (s3://...). Unset: `home`/lake.",
    )
    max_record_bytes: int = Field(
        default=8 * 1024 * 1024,
        description="A JSONL line longer than this is quarantined as `record_too_large`.",
    )

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'logstore.sqlite'}"

    @property
    def resolved_lake_url(self) -> str:
        return self.lake_url or str(self.resolved_home / "lake")

    @property
    def quarantine_dir(self) -> Path:
        return self.resolved_home / "quarantine"

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server or store. Unset: MLFLOW_TRACKING_URI, else SQLite under `home`.",
    )
    surrogate_salt: str | None = Field(
        default=None,
        description="Secret from which PII surrogates are derived. Unset: a random one kept in `home`/secrets.",
    )

    @property
    def resolved_mlflow_uri(self) -> str:
        return (self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                or f"sqlite:///{self.resolved_home / 'mlflow.db'}")

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.resolved_home / "mlartifacts"

    @property
    def cache_dir(self) -> Path:
        return self.resolved_home / "cache"

    model_cache: Path | None = Field(
        default=None,
        description="Where converted model weights are kept (the embedded GGUF as safetensors). "
        "Unset: `home`/cache/models.",
    )
    catalogue: Path | None = Field(
        default=None, description="Your SLM catalogue YAML. Unset: the one shipped in the package.",
    )

    @property
    def model_cache_dir(self) -> Path:
        return (self.model_cache or self.cache_dir / "models").expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        """Fine-tuning runs: checkpoints, adapters and reports, per agent and cluster."""
        return self.resolved_home / "models"

    def surrogate_salt_bytes(self) -> bytes:
        """The surrogate salt: from the environment, else created once (owner-only) under `home`."""
        if self.surrogate_salt:
            return self.surrogate_salt.encode()
        path = self.resolved_home / "secrets" / "surrogate_salt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_hex(32).encode())
        return path.read_bytes().strip()

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME when set, else the embedded one under `home`."""
        env = os.environ.get("DAGSTER_HOME")
        return Path(env) if env else self.resolved_home / "dagster"

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    retraining: Literal["auto", "on", "off"] = Field(
        "auto", description="Whether the `retrain_clusters` sensor starts running (launching trainings on its own): "
        "on, off, or auto (on with a database, i.e. a deployment; off when embedded, where a first training of "
        "every cluster with the full defaults is hours of CPU nobody asked for). Either way it can be turned on "
        "or off in the UI (Automation).")

    @property
    def retraining_starts_running(self) -> bool:
        return self.retraining == "on" or (self.retraining == "auto" and not self.embedded)

