"""SLM server settings: every one has an environment variable (prefix `SLM_PIPELINE_SERVING_`).

Where the routing table, the registry and the weights are comes from the pipeline's own settings
(`slm_pipeline.core.settings.Settings`: SLM_PIPELINE_HOME, SLM_PIPELINE_LAKE_URL, ...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


class ServingConfig(BaseSettings):
    """Which base model the server loads, how it generates, and how often it re-reads the routing table."""

    model_config = SettingsConfigDict(env_prefix="SLM_PIPELINE_SERVING_", extra="ignore")

    base_model: str | None = Field(
        default=None,
        description="Catalogue name of the base SLM. Unset: the base model of the routing table's SLM routes "
        f"(the most common one), else {DEFAULT_BASE_MODEL}. Routes on another base are skipped.",
    )
    reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often the routing table's version is checked; a new version loads "
        "new champions and unloads removed ones.",
    )
    retry_interval_s: float = Field(
        default=60.0, gt=0, description="How often routes that could not be loaded (registry down, champion not "
        "yet the one the table names) are tried again while the table stays the same.",
    )
    default_max_tokens: int = Field(default=256, gt=0, description="Tokens generated when a request names no "
                                    "max_tokens.")
    max_tokens_limit: int = Field(default=4096, gt=0, description="Requests asking for more get 400.")
    max_queued_requests: int = Field(
        default=64, gt=0, description="Chat completions waiting for the model (it generates one at a time); "
        "beyond it requests get 503 at once, so that the gateway falls back to the LLM instead of waiting.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="float32", description="Weights' dtype.")
    device: str = Field(default="cpu", description="Torch device: cpu, cuda, cuda:1, mps.")
    torch_threads: int | None = Field(default=None, gt=0, description="CPU threads for generation. Unset: "
                                      "torch's default (all cores).")
