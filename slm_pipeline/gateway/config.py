"""Gateway settings: every one has an environment variable (prefix `SLM_PIPELINE_GATEWAY_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from slm_pipeline.core.settings import Settings


class GatewayConfig(BaseSettings):
    """How the gateway reaches its upstream and its log store, and its limits."""

    model_config = SettingsConfigDict(env_prefix="SLM_PIPELINE_GATEWAY_", extra="ignore")

    upstream_url: str = Field(
        default="https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible upstream, with its `/v1`: the gateway forwards "
        "`/v1/chat/completions` to `<upstream_url>/chat/completions`.",
    )
    upstream_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY", "OPENAI_API_KEY"),
        description="Sent to the upstream as `Authorization: Bearer`; agents never see it. "
        "Env: SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY, else OPENAI_API_KEY.",
    )
    database_url: str | None = Field(
        default=None,
        description="Log store URL for the gateway's insert-only role. Unset: SLM_PIPELINE_DATABASE_URL, "
        "else the embedded SQLite store.",
    )
    upstream_timeout_s: float = Field(default=120.0, gt=0, description="Upstream answer deadline; then 504.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="Larger request bodies get 413.")
    upstream_max_connections: int = Field(default=512, gt=0, description="Connection pool to the upstream.")
    queue_size: int = Field(default=20_000, gt=0, description="Calls waiting to be logged; beyond it they spool.")
    batch_size: int = Field(default=500, gt=0, description="Calls per insert.")
    flush_interval_s: float = Field(default=0.05, gt=0, description="Longest wait to fill a batch.")
    retry_interval_s: float = Field(default=1.0, gt=0, description="How often a down store is retried.")
    key_refresh_s: float = Field(
        default=2.0, gt=0, description="API keys are reloaded this often: a revoked key is refused within it."
    )
    routing: bool = Field(
        default=True, description="S6: send calls of promoted task clusters to the SLM server, as the routing "
        "table says (no table yet: every call goes to the upstream).")
    serving_url: str | None = Field(
        default=None, description="Base URL of the SLM server (`slm-pipeline serve`), with its /v1. Unset: the "
        "routing table's serving_url.")
    slm_timeout_s: float = Field(default=30.0, gt=0, description="SLM answer deadline; then the LLM answers.")
    routing_refresh_s: float = Field(default=10.0, gt=0, description="How often the routing table is re-read.")
    spool_dir: Path | None = Field(
        default=None, description="Where calls wait while the store is down (sealed). Unset: `home`/gateway/spool."
    )

    quarantine_dir: Path | None = Field(
        default=None, description="Where spans received on /v1/traces that make no valid call go (sealed), with "
        "the reason. Unset: `home`/quarantine.")

    def resolved_quarantine_dir(self) -> Path:
        return (self.quarantine_dir or Settings().quarantine_dir).expanduser().resolve()

    def resolved_database_url(self) -> str:
        return self.database_url or Settings().resolved_database_url

    def resolved_spool_dir(self) -> Path:
        return (self.spool_dir or Settings().resolved_home / "gateway" / "spool").expanduser().resolve()

    def upstream_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.upstream_api_key is not None:
            headers["authorization"] = f"Bearer {self.upstream_api_key.get_secret_value()}"
        return headers


