"""Settings of the local stack: where it keeps its state, which Postgres it uses, its ports."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackConfig(BaseSettings):
    """Every field has an environment variable `SLM_PIPELINE_STACK_<NAME>` and a CLI option of `stack up`."""

    model_config = SettingsConfigDict(env_prefix="SLM_PIPELINE_STACK_", extra="ignore")

    home: Path = Field(
        default=Path(".slm_pipeline/stack"),
        description="State of the stack: pids, logs, secrets (owner-only), the Dagster home, the lake, artifacts.",
    )
    admin_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="A Postgres role that may create databases and roles; used only by `up` and `down --purge`.",
    )
    database_prefix: str = Field(
        default="slm_stack", pattern=r"^[a-z_][a-z0-9_]{0,40}$",
        description="Names of the databases (<prefix>_dagster, _mlflow, _logstore) and roles (_pipeline, _gateway).",
    )
    host: str = Field(default="127.0.0.1", description="Interface every service listens on.")
    dagster_port: int = Field(default=3000, description="dagster-webserver (the UI and its GraphQL API).")
    code_server_port: int = Field(default=4266, description="The Dagster code location's gRPC server.")
    mlflow_port: int = Field(default=5000, description="The MLflow tracking server (UI and REST API).")
    gateway_port: int = Field(default=8080, description="The logging gateway (agents' OpenAI base_url).")
    serving_port: int = Field(default=8100, description="The SLM server (OpenAI-compatible).")
    upstream_url: str | None = Field(
        default=None,
        description="The LLM the gateway forwards to. Unset: SLM_PIPELINE_GATEWAY_UPSTREAM_URL, else OpenAI.",
    )
    startup_timeout_s: float = Field(default=240, description="How long each service may take to become healthy.")
    stop_timeout_s: float = Field(default=30, description="Grace period after SIGTERM before SIGKILL.")

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def database(self, purpose: str) -> str:
        return f"{self.database_prefix}_{purpose}"

    def role(self, purpose: str) -> str:
        return f"{self.database_prefix}_{purpose}"

    def url(self, port: int, path: str = "") -> str:
        return f"http://{self.host}:{port}{path}"
