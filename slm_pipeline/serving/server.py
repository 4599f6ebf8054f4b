"""Build the SLM server from its config (base model loaded, adapters synced) and run it on uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.models.catalogue import CatalogueError, availability, load_catalogue
from slm_pipeline.core.models.loading import ModelUnavailableError, weights_folder
from slm_pipeline.core.refine.routing import load_routing_table
from slm_pipeline.core.settings import Settings
from slm_pipeline.serving.adapters import AdapterSet, base_of_routes
from slm_pipeline.serving.app import SlmServer, create_app
from slm_pipeline.serving.config import DEFAULT_BASE_MODEL, ServingConfig
from slm_pipeline.serving.engine import Engine


class ServingSetupError(RuntimeError):
    """The server cannot start; the message says what to set or install."""


def build_server(config: ServingConfig, settings: Settings | None = None) -> SlmServer:
    """Load the base model (`config.base_model`, else the routes' base, else the default) and every
    adapter of the current routing table on it."""
    settings = settings or Settings()
    lake = Lake(settings.resolved_lake_url)
    table = load_routing_table(lake)
    base = config.base_model or base_of_routes(table) or DEFAULT_BASE_MODEL
    try:
        entry = load_catalogue(settings.catalogue).get(base)
        folder = weights_folder(availability(entry), settings.model_cache_dir)
    except KeyError as exc:
        raise ServingSetupError(f"{exc.args[0]} (--base-model / SLM_PIPELINE_SERVING_BASE_MODEL, or "
                                "SLM_PIPELINE_CATALOGUE for your own catalogue)") from None
    except (CatalogueError, ModelUnavailableError) as exc:
        raise ServingSetupError(str(exc)) from exc
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    engine = Engine(base, folder, dtype=config.dtype, device=config.device, context_length=entry.context_length)
    adapters = AdapterSet(engine, lake, settings, retry_interval_s=config.retry_interval_s)
    adapters.sync(table)
    return SlmServer(config, engine, adapters)


def build_app(config: ServingConfig, settings: Settings | None = None) -> FastAPI:
    return create_app(build_server(config, settings))


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8100, *, log_level: str = "info") -> None:
    """Run the server: one process (the model is in it), uvloop + httptools."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", access_log=False, log_level=log_level,
                timeout_graceful_shutdown=30)
