"""The gateway: an OpenAI-compatible proxy that logs every call (S1), built by `create_app`.

    POST /v1/chat/completions   proxied to the upstream, streaming or not, and logged
    GET  /v1/models             passed through
    GET  /healthz               liveness, and whether the log store answers
    GET  /metrics               counters in Prometheus' text format (they reconcile, see below)

Every request to /v1/chat/completions is counted once: `received = rejected + logged`, where a
rejected request (bad key, bad body) gets a 4xx in OpenAI's error shape and is not a call, and a
logged one was handed to the call log, whatever the upstream answered (upstream errors and
timeouts are logged as failed calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from slm_pipeline.core.records import ChatRequest
from slm_pipeline.core.store.keys import ApiKey
from slm_pipeline.gateway.auth import KeyCache
from slm_pipeline.gateway.calllog import CallLog, FinishedCall, response_json
from slm_pipeline.gateway.chat_payloads import MAX_MODEL_CHARS, chat_fields
from slm_pipeline.gateway.config import GatewayConfig
from slm_pipeline.gateway.errors import GatewayError, bad_request
from slm_pipeline.gateway.routing import RouteDecision, Router, agrees, slm_request, validate_answer
from slm_pipeline.gateway.sse import StreamAssembler, completion_events
from slm_pipeline.gateway.traces import TraceReceiver
from slm_pipeline.gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

log = logging.getLogger(__name__)

HUMAN_FACING_HEADER = "x-slm-human-facing"
WORKLOAD_HEADER = "x-slm-workload-id"
CALL_ID_HEADER = "x-slm-call-id"
ROUTE_HEADER = "x-slm-route"
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with each `$ref` replaced by the definition it names: the OpenAPI document has no
    `components/schemas` for the body's models, so references to them would dangle."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _inlined(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inlined(value, defs) for value in node]
    return node


_CHAT_SCHEMA = ChatRequest.model_json_schema()
_CHAT_SCHEMA = _inlined(_CHAT_SCHEMA, _CHAT_SCHEMA.get("$defs", {}))
_CHAT_SCHEMA["properties"]["model"]["maxLength"] = MAX_MODEL_CHARS  # longer names get 400 (`chat_fields`)
_REQUEST_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": _CHAT_SCHEMA}}}}


_NOT_FORWARDED = frozenset({"authorization", "host", "content-length", "content-type", "accept-encoding",
                            "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                            "proxy-authorization", "proxy-connection", "cookie"})


_NOT_RETURNED = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding", "connection",
                           "keep-alive", "date", "server", "set-cookie"})


def _returned(upstream: UpstreamResponse, call_id: str) -> dict[str, str]:
    """The upstream's response headers an agent may use (`x-ratelimit-*`, `openai-processing-ms`,
    `x-request-id`, `retry-after`), and the call id."""
    headers = {name: value for name, value in upstream.headers.items() if name not in _NOT_RETURNED}
    headers[CALL_ID_HEADER] = call_id
    return headers


def _forwarded(headers: dict[str, str], call_id: str) -> dict[str, str]:
    """The client's headers that the upstream may need (OpenAI-Beta, ...), not its credentials or ours."""
    forwarded = {name: value for name, value in headers.items()
                 if name not in _NOT_FORWARDED and not name.startswith("x-slm-")}
    forwarded[CALL_ID_HEADER] = call_id
    return forwarded


def request_headers(scope: Scope) -> dict[str, str]:
    """An ASGI request's headers by (lowercase) name; of a repeated header, the first."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


class RawResponse(Response):
    """Starlette's `Response` minus its header normalising, on the gateway's busiest path."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str], media_type: str) -> None:
        self.body, self.status_code, self.background = body, status, None
        self.raw_headers = [(b"content-length", str(len(body)).encode()),
                            (b"content-type", media_type.encode("latin-1")),
                            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())]


class ClientGone(Exception):
    """The agent hung up before its request body arrived."""


class Gateway:
    """The request handling, apart from FastAPI's wiring."""

    def __init__(self, config: GatewayConfig, keys: KeyCache, call_log: CallLog, router: Router | None = None
                 ) -> None:
        self.config, self.keys, self.call_log, self.router = config, keys, call_log, router
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.logged = 0
        self.client: UpstreamClient | None = None
        self.slm_clients: dict[str, UpstreamClient] = {}  # by the SLM server's base URL
        self._shadows: set[asyncio.Task[None]] = set()
        self._id_prefix, self._ids = secrets.token_hex(6), itertools.count()  # call ids: unique, and cheap

    def open(self) -> None:
        """The upstream client (`upstream.py`: a lean keep-alive pool; benchmarks/RESULTS.md has what
        httpx and aiohttp cost per request)."""
        self.client = UpstreamClient(self.config.upstream_url, headers=self.config.upstream_headers(),
                                     max_connections=self.config.upstream_max_connections, connect_timeout_s=10,
                                     read_timeout_s=self.config.upstream_timeout_s)

    def _slm_client(self, url: str) -> UpstreamClient:
        client = self.slm_clients.get(url)
        if client is None:  # a new table may name a new server; the URLs seen stay few
            client = self.slm_clients[url] = UpstreamClient(
                url, headers={"content-type": "application/json"}, max_connections=self.config.upstream_max_connections,
                connect_timeout_s=5, read_timeout_s=self.config.slm_timeout_s)
        return client

    async def aclose(self) -> None:
        if self._shadows:
            await asyncio.wait(self._shadows, timeout=self.config.slm_timeout_s)
        if self.client is not None:
            await self.client.close()
        for client in self.slm_clients.values():
            await client.close()

    # --- checks ----------------------------------------------------------------------------

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise GatewayError(415, f"Content-Type must be application/json, got {media_type or 'none'!r}.",
                               "invalid_request_error", "unsupported_media_type")
        limit = self.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> GatewayError:
        return GatewayError(413, f"Request body exceeds the gateway's limit of {self.config.max_body_bytes:,} bytes "
                                 "(SLM_PIPELINE_GATEWAY_MAX_BODY_BYTES).", "invalid_request_error", "request_too_large")

    @staticmethod
    def _human_facing(headers: dict[str, str], key: ApiKey) -> bool:
        value = headers.get(HUMAN_FACING_HEADER)
        if value is None:
            return key.human_facing
        if value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad_request(f"Header {HUMAN_FACING_HEADER} must be true or false, got {value[:20]!r}.",
                          "invalid_header", HUMAN_FACING_HEADER)

    # --- handlers --------------------------------------------------------------------------

    async def chat_completions(self, headers: dict[str, str], receive: Receive) -> Response | None:
        """The response to POST /v1/chat/completions (None: the agent hung up before sending its body)."""
        started = time.perf_counter()
        timestamp = datetime.now(timezone.utc)
        self.received += 1
        try:
            key = await self.keys.authenticate(headers.get("authorization"))
            body = await self._body(headers, receive)
            model, stream = chat_fields(body)
            human_facing = self._human_facing(headers, key)
            workload = headers.get(WORKLOAD_HEADER)
            if workload is not None and len(workload) > 256:
                raise bad_request(f"Header {WORKLOAD_HEADER} is longer than 256 characters.", "invalid_header",
                                  WORKLOAD_HEADER)
        except GatewayError as error:
            self.rejected[error.reason] += 1
            return error.response()
        except ClientGone:
            self.rejected["client_disconnected"] += 1
            return None
        call = FinishedCall(call_id=f"gw-{self._id_prefix}{next(self._ids):010x}", agent_id=key.agent_id,
                            timestamp=timestamp, latency_ms=0.0, human_facing=human_facing, workload_id=workload,
                            model=model, tags={"route": "llm", "stream": stream}, request=body, response={})
        decision = None
        if self.router is not None and self.router.routes_agent(key.agent_id):
            if human_facing:
                call.tags["route_reason"] = "human-facing calls stay on the LLM"
            else:
                request_json = orjson.loads(body)
                try:
                    decision = await asyncio.to_thread(self.router.decide, key.agent_id, request_json)
                except Exception as exc:  # routing must never cost the agent its answer: the LLM gives it
                    log.exception("routing failed; the LLM answers")
                    decision = RouteDecision("llm", f"routing failed: {exc.__class__.__name__}: {exc}")
                call.tags.update(decision.tags(self.router.version))
                if decision.route == "slm" and decision.entry is not None:
                    answered = await self._ask_slm(decision.entry.serving_model or "", request_json,
                                                   decision.entry.answer_kind, call)
                    if answered is not None:
                        return self._slm_reply(call, started, answered, stream)
        if call.tags["route"] == "shadow" and stream:
            call.tags.update(route="llm", route_reason="streamed calls are not shadowed")
        self.routes[call.tags["route"]] += 1
        assert self.client is not None
        call.upstream_started = time.perf_counter()
        try:
            upstream = await self.client.request("POST", "chat/completions", body, _forwarded(headers, call.call_id))
        except (TimeoutError, UpstreamError) as exc:
            return self._failed(call, started, {CALL_ID_HEADER: call.call_id}, self._upstream_error(exc))
        call.tags["upstream_status"] = upstream.status
        media_type = upstream.headers.get("content-type", "application/json")
        returned = _returned(upstream, call.call_id)
        if upstream.status == 200 and media_type.startswith("text/event-stream"):
            return StreamingResponse(self._relay(upstream, call, started), status_code=200, media_type=media_type,
                                     headers={"cache-control": "no-cache", **returned})
        try:
            content = await upstream.read()
        except (TimeoutError, UpstreamError) as exc:
            return self._failed(call, started, returned, self._upstream_error(exc))
        finally:
            upstream.release()
        call.response = content
        if upstream.status >= 400 and "error" not in (response_json(content) or {}):
            call.response = {"error": {"message": f"the upstream answered HTTP {upstream.status}",
                                       "type": "upstream_error", "code": upstream.status},
                             "upstream_body": content[:4096].decode("utf-8", "replace")}
        if call.tags["route"] == "shadow" and upstream.status == 200 and decision and decision.entry:
            self._shadow(call, started, request_json, content, decision.entry.shadow_model or "")
        else:
            if call.tags["route"] == "shadow":
                call.tags.update(route="llm", route_reason=f"the LLM answered HTTP {upstream.status}: not shadowed")
            self._log(call, started)
        return RawResponse(content, upstream.status, returned, media_type)

    # --- S6: the SLM route -------------------------------------------------------------------

    def _serving_url(self) -> str | None:
        url = self.config.serving_url or (self.router.table.serving_url if self.router and self.router.table
                                          else None)
        return url.rstrip("/") if url else None

    async def _ask_slm(self, model: str, request: dict[str, Any], answer_kind: str | None,
                       call: FinishedCall) -> bytes | None:
        """The SLM's chat completion when it passes validation; else None, with the reason in the call's tags."""
        url, asked = self._serving_url(), time.perf_counter()
        reason, content = None, b""
        if url is None:
            reason = "no SLM server configured (SLM_PIPELINE_GATEWAY_SERVING_URL or the table's serving_url)"
        else:
            try:
                async with asyncio.timeout(self.config.slm_timeout_s):
                    answer = await self._slm_client(url).request("POST", "chat/completions",
                                                                 slm_request(request, model))
                    try:
                        content, status = await answer.read(), answer.status
                    finally:
                        answer.release()
                if status != 200:
                    reason = f"the SLM server answered HTTP {status}"
                else:
                    completion = response_json(content)
                    reason = "the SLM server's answer is not JSON" if completion is None else \
                        validate_answer(request, completion, answer_kind)
            except TimeoutError:
                reason = f"the SLM server did not answer within {self.config.slm_timeout_s:g} s"
            except (UpstreamError, ValueError) as exc:  # ValueError: the URL is not http(s)
                reason = f"the SLM server did not answer: {exc.__class__.__name__}: {exc}"[:300]
        call.tags.update(slm_model=model, slm_ms=round((time.perf_counter() - asked) * 1000, 3))
        if reason is not None:
            call.tags.update(route="fallback", fallback_reason=reason)
            return None
        return content

    def _slm_reply(self, call: FinishedCall, started: float, content: bytes, stream: bool) -> Response:
        call.response = content
        self.routes["slm"] += 1
        self._log(call, started)
        headers = {CALL_ID_HEADER: call.call_id, ROUTE_HEADER: "slm"}
        if stream:
            events = completion_events(orjson.loads(content))
            return StreamingResponse(iter([events]), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", **headers})
        return Response(content, 200, headers=headers, media_type="application/json")

    def _shadow(self, call: FinishedCall, started: float, request: dict[str, Any], llm_answer: bytes,
                model: str) -> None:
        """Ask the challenger after the LLM's answer went out; log the call with whether they agree."""
        call.response = llm_answer
        finished = time.perf_counter()

        async def compare() -> None:
            try:
                slm_answer = await self._ask_slm(model, request, None, call)
                llm, slm = response_json(llm_answer), response_json(slm_answer) if slm_answer else None
                call.tags["shadow_agrees"] = bool(llm and slm and agrees(llm, slm))
            finally:
                call.tags["route"] = "shadow"
                self._log(call, started, finished)

        task = asyncio.create_task(compare())
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _relay(self, upstream: UpstreamResponse, call: FinishedCall, started: float) -> AsyncIterator[bytes]:
        """The upstream's event stream, byte for byte; logged, reassembled, when it ends."""
        assembler = StreamAssembler()
        try:
            async for chunk in upstream.chunks():
                if "ttft_ms" not in call.tags:
                    call.tags["ttft_ms"] = round((time.perf_counter() - started) * 1000, 3)
                assembler.feed(chunk)
                yield chunk
        except (TimeoutError, UpstreamError) as exc:
            call.tags["stream_error"] = f"{exc.__class__.__name__}: {exc}"[:300]
        except (asyncio.CancelledError, GeneratorExit):
            call.tags["client_disconnected"] = True
            raise
        finally:  # logged before anything is awaited: a cancelled task may not get further
            assembler.close()
            call.response = answer = assembler.result()
            if not assembler.done:
                call.tags["stream_complete"] = False
            if not answer.get("choices") and "error" not in answer:
                reason = call.tags.get("stream_error") or "the stream ended before any choice"
                call.response = {"error": {"message": f"streamed answer incomplete: {reason}",
                                           "type": "upstream_error", "code": "stream_incomplete"}}
            self._log(call, started)
            upstream.release()

    def _upstream_error(self, exc: Exception) -> GatewayError:
        if isinstance(exc, TimeoutError):
            return GatewayError(504, f"The upstream did not answer within {self.config.upstream_timeout_s:g} s "
                                     "(SLM_PIPELINE_GATEWAY_UPSTREAM_TIMEOUT_S).", "upstream_error", "upstream_timeout")
        return GatewayError(502, f"The upstream could not be reached or broke off: {exc.__class__.__name__}: {exc}.",
                            "upstream_error", "upstream_unreachable")

    def _failed(self, call: FinishedCall, started: float, headers: dict[str, str], error: GatewayError) -> Response:
        call.response = error.body()
        self._log(call, started)
        return error.response(headers)

    def _log(self, call: FinishedCall, started: float, finished: float | None = None) -> None:
        now = finished or time.perf_counter()
        call.latency_ms = round((now - started) * 1000, 3)
        # the upstream's share of it: the rest is what the gateway added
        call.tags["upstream_ms"] = round((now - (call.upstream_started or now)) * 1000, 3)
        self.logged += 1
        self.call_log.submit(call)

    async def models(self, request: Request) -> Response:
        try:
            await self.keys.authenticate(request.headers.get("authorization"))
        except GatewayError as error:
            return error.response()
        assert self.client is not None
        try:
            upstream = await self.client.request("GET", "models")
            try:
                content = await upstream.read()
            finally:
                upstream.release()
        except (TimeoutError, UpstreamError) as exc:
            return self._upstream_error(exc).response()
        return Response(content, upstream.status, media_type=upstream.headers.get("content-type", "application/json"))

    def metrics(self) -> str:
        stats = self.call_log.stats
        lines = [
            "# HELP slm_gateway_requests_received_total POST /v1/chat/completions requests received.",
            "# TYPE slm_gateway_requests_received_total counter",
            f"slm_gateway_requests_received_total {self.received}",
            "# HELP slm_gateway_requests_rejected_total Requests answered 4xx by the gateway, by reason.",
            "# TYPE slm_gateway_requests_rejected_total counter",
            *(f'slm_gateway_requests_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected.items())),
            "# HELP slm_gateway_calls_logged_total Calls handed to the call log (received = rejected + logged).",
            "# TYPE slm_gateway_calls_logged_total counter",
            f"slm_gateway_calls_logged_total {self.logged}",
            "# HELP slm_gateway_calls_routed_total Calls by route (llm, slm, fallback, shadow).",
            "# TYPE slm_gateway_calls_routed_total counter",
            *(f'slm_gateway_calls_routed_total{{route="{r}"}} {n}' for r, n in sorted(self.routes.items())),
        ]
        for name in ("inserted", "duplicate", "spooled", "replayed", "overflow", "rejected"):
            lines += [f"# TYPE slm_gateway_calllog_{name}_total counter",
                      f"slm_gateway_calllog_{name}_total {getattr(stats, name)}"]
        lines += ["# TYPE slm_gateway_calllog_queued gauge", f"slm_gateway_calllog_queued {self.call_log.queued}",
                  "# TYPE slm_gateway_store_up gauge", f"slm_gateway_store_up {int(stats.store_up)}"]
        return "\n".join(lines) + "\n"


class GatewayApp(FastAPI):
    """FastAPI, except that POST /v1/chat/completions goes straight to the gateway's handler, past
    FastAPI's middleware, routing and endpoint machinery (most of the gateway's CPU per call, see
    benchmarks/RESULTS.md). The route stays declared, for the OpenAPI schema."""

    gateway: Gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
            response = await self.gateway.chat_completions(request_headers(scope), receive)
            if response is not None:
                await response(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(config: GatewayConfig, keys: KeyCache, call_log: CallLog, router: Router | None = None) -> FastAPI:
    """The FastAPI app; it starts and stops the upstream client, the key refresher, the call log and
    (with a router) the routing table's refresher."""
    gateway = Gateway(config, keys, call_log, router)
    traces = TraceReceiver(keys, call_log, config.resolved_quarantine_dir(), config.max_body_bytes)

    async def refresh_routes() -> None:
        assert router is not None
        while True:
            try:
                await asyncio.to_thread(router.reload)
            except Exception:  # a broken table must not stop the gateway: it keeps the last good one
                log.exception("could not read the routing table; keeping version %s", router.version)
            await asyncio.sleep(router.refresh_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await keys.reload()
        refresher = asyncio.create_task(keys.run())
        routes = asyncio.create_task(refresh_routes()) if router is not None else None
        call_log.start()
        gateway.open()
        # Long-lived objects (modules, the app) leave the garbage collector's view: its full
        # collections then scan only per-request garbage, which keeps them from stalling replies.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            refresher.cancel()
            if routes is not None:
                routes.cancel()
            await gateway.aclose()
            await asyncio.to_thread(call_log.close)
            traces.close()

    app = GatewayApp(title="slm_pipeline gateway", version="1", lifespan=lifespan,
                     description="OpenAI-compatible logging proxy of slm_pipeline (S1 collect).")
    app.gateway = app.state.gateway = gateway
    app.state.traces = traces

    @app.post("/v1/chat/completions", openapi_extra=_REQUEST_SCHEMA,
              responses={200: {"description": "The chat completion; server-sent events with `\"stream\": true`",
                               "content": {"text/event-stream": {}}},
                         400: {"description": "Bad request (OpenAI error shape)"},
                         401: {"description": "Unknown or revoked API key"},
                         413: {"description": "Body too large"}, 415: {"description": "Not JSON"}})
    async def chat_completions(request: Request) -> Response:
        """Create a chat completion through the upstream (streaming with `"stream": true`), and log it."""
        # GatewayApp answers it before FastAPI's routing; this is the same handler, for the docs
        return await gateway.chat_completions(request_headers(request.scope), request.receive) or Response(None, 400)

    # OTLP/HTTP's contract (protobuf bodies, google.rpc.Status errors), not the OpenAI API's: not in the OpenAPI schema
    @app.post("/v1/traces", include_in_schema=False)
    async def otlp_traces(request: Request) -> Response:
        """OTLP/HTTP trace export (protobuf or JSON, gzip): each LLM span is logged as a call of the key's agent
        (gateway/traces.py)."""
        return await traces.handle(request)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        """The upstream's model list."""
        return await gateway.models(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        stats = call_log.stats
        return {"status": "ok", "store": "up" if stats.store_up else "down", "queued": call_log.queued,
                "spooled": stats.spooled, "replayed": stats.replayed, "last_store_error": stats.last_error,
                "routing_table_version": router.version if router is not None else None, "worker": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(gateway.metrics() + "\n".join(traces.metrics()) + "\n", media_type="text/plain; version=0.0.4")

    return app
