"""The SLM server's HTTP API, built by `create_app`.

    POST /v1/chat/completions   the base model, or an adapter by its serving model name (streaming too)
    GET  /v1/models             the base model and every adapter served (champions, and challengers for the shadow)
    GET  /healthz               liveness, the routing table version applied, the models, the routes skipped

A request to an adapter is rendered as the adapter was trained, through the same `SpecialistPrompt`
(core/specialist_prompt.py) its dataset was built with: the compact form (task prompt, tools, the
conversation after the agent's system prompt) or the agent's request as sent. A request to the base model's name
uses its own messages. Decoding is greedy. The model generates one answer at a time, in a worker
thread, so the event loop keeps answering /healthz and /v1/models meanwhile; requests wait their turn
in arrival order, and beyond `max_queued_requests` are refused with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from slm_pipeline.core.records import ChatRequest, describe_validation_error
from slm_pipeline.gateway.errors import GatewayError, bad_request
from slm_pipeline.serving.adapters import AdapterSet, ServedAdapter
from slm_pipeline.serving.config import ServingConfig
from slm_pipeline.serving.engine import AdapterNotLoaded, Engine, PromptTooLong
from slm_pipeline.serving.responses import chat_completion, stream_events

log = logging.getLogger(__name__)
OWNER = "slm_pipeline"


def parse_request(body: bytes) -> dict[str, Any]:
    """The body as a dict, checked as a chat request (400 in OpenAI's shape when it is not one)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc}.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    try:
        ChatRequest.model_validate(payload)
    except ValidationError as exc:
        _, where, message = describe_validation_error(exc)
        code = "missing_required_parameter" if exc.errors()[0]["type"] == "missing" else "invalid_value"
        raise bad_request(f"Invalid request: {message}.", code, where) from None
    return payload


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def base_messages(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The request's own messages, system prompt included, their content as text (what any chat template takes)."""
    return [{"role": m["role"], "content": _text(m.get("content"))} for m in payload["messages"]]


class SlmServer:
    """The request handling, apart from FastAPI's wiring."""

    def __init__(self, config: ServingConfig, engine: Engine, adapters: AdapterSet) -> None:
        self.config, self.engine, self.adapters = config, engine, adapters
        self.started = int(time.time())
        self.waiting = 0  # chat completions admitted and not yet answered
        self.turn = asyncio.Lock()  # one generation thread at a time; the others wait here, not in threads

    def models(self) -> list[str]:
        return [self.engine.name, *sorted(self.adapters.served)]

    def _target(self, model: str) -> ServedAdapter | None:
        if model == self.engine.name:
            return None
        adapter = self.adapters.served.get(model)
        if adapter is None:
            raise self._unknown(model)
        return adapter

    def _unknown(self, model: str) -> GatewayError:
        return GatewayError(404, f"The model {model!r} does not exist on this SLM server; it serves: "
                                 f"{', '.join(self.models())} (GET /v1/models).",
                            "invalid_request_error", "model_not_found", "model")

    def _max_tokens(self, payload: dict[str, Any]) -> int:
        field = "max_completion_tokens" if payload.get("max_completion_tokens") is not None else "max_tokens"
        value = payload.get(field)
        if value is None:
            return self.config.default_max_tokens
        limit = self.config.max_tokens_limit
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise bad_request(f"Invalid request: '{field}' must be an integer from 1 to {limit} "
                              "(SLM_PIPELINE_SERVING_MAX_TOKENS_LIMIT).", "invalid_value", field)
        return value

    async def chat_completions(self, request: Request) -> Response:
        try:
            payload = parse_request(await request.body())
            adapter = self._target(payload["model"])
            max_tokens = self._max_tokens(payload)
            if payload.get("n") not in (None, 1):
                raise bad_request("Invalid request: this server generates one choice; 'n' must be 1.",
                                  "invalid_value", "n")
            if self.waiting >= self.config.max_queued_requests:
                raise GatewayError(503, f"The SLM server has {self.waiting} requests waiting for the model "
                                        "(SLM_PIPELINE_SERVING_MAX_QUEUED_REQUESTS); try again or use the LLM.",
                                   "server_error", "server_busy")
        except GatewayError as error:
            return error.response()
        messages = base_messages(payload) if adapter is None else adapter.prompt.messages(payload)
        self.waiting += 1
        try:
            async with self.turn:
                generation = await asyncio.to_thread(self.engine.generate, messages, max_tokens,
                                                     adapter.peft_name if adapter else None)
        except AdapterNotLoaded:
            return self._unknown(payload["model"]).response()
        except PromptTooLong as exc:
            return bad_request(f"Invalid request: {exc}.", "context_length_exceeded", "messages").response()
        except Exception as exc:
            log.exception("generation failed for %s", payload["model"])
            return GatewayError(500, f"Generation failed: {exc.__class__.__name__}: {exc}.", "server_error",
                                "generation_failed").response()
        finally:
            self.waiting -= 1
        tools = bool(payload.get("tools")) and payload.get("tool_choice") != "none"
        json_mode = (payload.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        completion = chat_completion(payload["model"], generation.text, tools=tools, json_mode=json_mode,
                                     finish_reason=generation.finish_reason,
                                     prompt_tokens=generation.prompt_tokens,
                                     completion_tokens=generation.completion_tokens)
        if payload.get("stream") is True:
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            events = stream_events(completion, include_usage=include_usage)
            return StreamingResponse(iter(events), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return Response(orjson.dumps(completion), media_type="application/json")

    def model_list(self) -> dict[str, Any]:
        base = {"id": self.engine.name, "object": "model", "created": self.started, "owned_by": OWNER}
        adapters = [{"id": a.model, "object": "model", "created": a.loaded_at, "owned_by": OWNER,
                     "parent": self.engine.name, "registered_model": a.registered_model, "version": a.version,
                     "role": a.role, "agent_id": a.agent_id, "cluster_id": a.cluster_id}
                    for a in sorted(self.adapters.served.values(), key=lambda a: a.model)]
        return {"object": "list", "data": [base, *adapters]}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "routing_table_version": self.adapters.table_version,
                "base_model": self.engine.name, "models": self.models(),
                "skipped": [s.as_json() for _, s in sorted(self.adapters.skipped.items())],
                "waiting": self.waiting, "last_reload_error": self.adapters.last_error}

    async def watch_routing_table(self) -> None:
        """Re-read the routing table every `reload_interval_s`; a failure keeps the adapters loaded."""
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                await asyncio.to_thread(self.adapters.poll)
                self.adapters.last_error = None
            except Exception as exc:  # the lake is unreachable, the table unreadable, ...
                self.adapters.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("could not re-read the routing table (still serving the adapters loaded): %s", exc)


def create_app(server: SlmServer) -> FastAPI:
    """The FastAPI app; its lifespan runs the routing table watcher."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server.turn = asyncio.Lock()  # bound to the loop that serves
        watcher = asyncio.create_task(server.watch_routing_table())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    app = FastAPI(title="slm_pipeline SLM server", version="1", lifespan=lifespan,
                  description="The base SLM and its promoted LoRA adapters, OpenAI-compatible (S6 refine).")
    app.state.server = server

    @app.post("/v1/chat/completions",
              responses={400: {"description": "Bad request (OpenAI error shape)"},
                         404: {"description": "Unknown model; the message lists the models served"},
                         503: {"description": "Too many requests waiting for the model"}})
    async def chat_completions(request: Request) -> Response:
        """Create a chat completion with the base model or an adapter (streaming with `"stream": true`)."""
        return await server.chat_completions(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The base model and every adapter served, with its registered model and version."""
        return server.model_list()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return server.health()

    return app
