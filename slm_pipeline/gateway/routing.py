"""S6 in the gateway: which calls go to a fine-tuned SLM, and whether its answer can be used.

For each call of an agent that has a promoted task cluster:

1. the S3 assigner (embedding + classifier, ~10 ms on a CPU, off the event loop) names the call's
   cluster and its confidence;
2. when the routing table sends that cluster to an SLM and the confidence reaches the table's
   `min_assignment_confidence`, the SLM server answers (`route: slm`);
3. the answer is validated: it parsed, each tool it calls is one of the request's tools, and the
   arguments satisfy that tool's JSON schema (a JSON object for JSON tasks). Otherwise the LLM
   answers and the call is logged with `route: fallback` and the reason.

Calls of agents without a promoted cluster cost a dictionary lookup. Human-facing calls stay on
the LLM (S2 never trained on them). Clusters with a challenger are shadowed: the LLM answers, the
challenger answers too, and whether they agree is logged (`route: shadow`, `shadow_agrees`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.records import ChatResponse, describe_validation_error
from slm_pipeline.core.refine.metrics import schema_errors, tool_schemas
from slm_pipeline.core.refine.routing import Route, RoutingTable, load_routing_table
from slm_pipeline.core.toolcalls import ParsedAnswer, ToolCall, score_answer, teacher_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteDecision:
    route: str  # slm | llm | shadow
    reason: str
    entry: Route | None = None
    cluster_id: str | None = None
    confidence: float | None = None

    def tags(self, table_version: int | None) -> dict[str, Any]:
        tags: dict[str, Any] = {"route": self.route, "route_reason": self.reason[:300]}
        if self.cluster_id is not None:
            tags |= {"cluster_id": self.cluster_id, "assignment_confidence": round(self.confidence or 0.0, 4)}
        if table_version is not None:
            tags["routing_table_version"] = table_version
        return tags


def _answer_of(completion: dict[str, Any]) -> ParsedAnswer:
    return teacher_answer(completion)


def validate_answer(request: dict[str, Any], completion: dict[str, Any], answer_kind: str | None) -> str | None:
    """Why the SLM's chat completion cannot be returned to the agent (None: it can)."""
    if completion.get("slm_parse_error"):
        return f"unparseable answer: {completion['slm_parse_error']}"[:300]
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "no choices in the answer"
    if choices[0].get("finish_reason") == "length":
        return "the answer was cut at max_tokens"
    try:  # the shapes `teacher_answer` reads (message an object, tool calls with a function each, ...)
        ChatResponse.model_validate(completion)
    except ValidationError as exc:
        return f"the answer is not a chat completion ({describe_validation_error(exc)[2]})"[:300]
    answer = _answer_of(completion)
    if answer.kind == "invalid":
        return (answer.error or "unreadable answer")[:300]
    if answer_kind == "tool_call":
        if answer.kind != "tool_call":
            return "no tool call in the answer of a tool-calling task"
        try:
            problems = schema_errors(answer, tool_schemas(request.get("tools") or []))
        except Exception as exc:  # the agent's own schema may be unusable (unknown type, bad regex, dangling $ref)
            return f"the request's tool schema cannot be checked ({exc.__class__.__name__})"  # its message quotes values
        return f"invalid tool call: {problems[0]}"[:300] if problems else None
    if answer_kind == "json" and answer.kind != "json":
        return "the answer is not a JSON object"
    return None


def agrees(llm: dict[str, Any], slm: dict[str, Any]) -> bool:
    """The challenger answered as the LLM did (tool names and arguments, the object, or the text)."""
    return score_answer(_answer_of(slm), _answer_of(llm)).exact_match


class Router:
    """The routing table and the agents' assigners, reloaded when the table changes."""

    def __init__(self, lake_url: str, *, refresh_s: float = 10.0, embedder: Any = None) -> None:
        self.lake = Lake(lake_url)
        self.refresh_s = refresh_s
        self.table: RoutingTable | None = None
        self._assigners: dict[str, Any] = {}
        self._routed_agents: set[str] = set()
        self._embedder = embedder
        self._lock = threading.Lock()
        self._checked = 0.0

    @property
    def version(self) -> int | None:
        return self.table.version if self.table else None

    def reload(self) -> bool:
        """Read the current routing table; True when it changed (blocking: call off the event loop)."""
        self._checked = time.monotonic()
        table = load_routing_table(self.lake)
        if table is None or (self.table is not None and table.fingerprint == self.table.fingerprint):
            return False
        with self._lock:
            self.table = table
            self._routed_agents = {r.agent_id for r in table.routes if r.route == "slm" or r.shadow_model}
            self._assigners = {}
        log.info("routing table v%s: %d of %d clusters to SLMs", table.version,
                 sum(r.route == "slm" for r in table.routes), len(table.routes))
        return True

    def routes_agent(self, agent_id: str) -> bool:
        """Whether any of the agent's calls may leave the LLM (cheap: the event loop asks per call)."""
        return agent_id in self._routed_agents

    def _embedder_for(self, model: str) -> Any:
        with self._lock:  # concurrent first calls (each in its own thread) share one embedder, loaded once
            if self._embedder is None:
                from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder

                self._embedder = SentenceTransformerEmbedder(model)
            return self._embedder

    def decide(self, agent_id: str, request: dict[str, Any]) -> RouteDecision:
        """The route of one call (blocking: embeds the request; call off the event loop)."""
        table = self.table
        if table is None or agent_id not in self._routed_agents:
            return RouteDecision("llm", "no promoted task for this agent")
        with self._lock:
            if agent_id not in self._assigners:
                from slm_pipeline.core.cluster.pipeline import load_assigner

                self._assigners[agent_id] = load_assigner(self.lake, agent_id)
            assigner = self._assigners[agent_id]
        if assigner is None:
            return RouteDecision("llm", "the agent has no cluster assigner (materialise task_clusters)")
        [assignment] = assigner.assign([request], self._embedder_for(assigner.embedding_model))
        floor = table.thresholds.min_assignment_confidence
        if assignment.cluster_id is None or assignment.confidence < floor:
            return RouteDecision("llm", f"no confident task cluster (confidence {assignment.confidence:.2f}, "
                                        f"needs {floor})", None, assignment.cluster_id, assignment.confidence)
        entry = table.route_for(agent_id, assignment.cluster_id)
        if entry is None:
            return RouteDecision("llm", "the cluster is not in the routing table", None, assignment.cluster_id,
                                 assignment.confidence)
        if entry.route == "slm":
            return RouteDecision("slm", entry.reason, entry, assignment.cluster_id, assignment.confidence)
        if entry.shadow_model:
            return RouteDecision("shadow", f"challenger {entry.shadow_model} in the shadow", entry,
                                 assignment.cluster_id, assignment.confidence)
        return RouteDecision("llm", entry.reason, entry, assignment.cluster_id, assignment.confidence)


def slm_request(request: dict[str, Any], model: str) -> bytes:
    """The request for the SLM server: the agent's messages and tools, never streamed (it is validated first)."""
    body = {"model": model, "messages": request.get("messages", []), "stream": False}
    for name in ("tools", "tool_choice", "max_tokens", "max_completion_tokens"):
        if name in request:
            body[name] = request[name]
    return json.dumps(body).encode()
