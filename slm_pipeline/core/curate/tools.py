"""S2: calls whose tool definitions are unknown.

Some instrumentations record a call's messages but not the tools it offered (`opentelemetry-instrumentation-
openai-v2`); such records carry the tag `tools_known: false` (`core/trace_formats/calls.py`). A fine-tuned SLM
must see the tools it may call, so curation completes these calls with the agent's tool definitions, taken from

1. the agent's registered tool list (`slm-pipeline tools register --agent A tools.json`), else
2. the tools offered in the agent's calls that recorded them (proxied calls, OpenLLMetry or OpenInference spans):
   the most recent offer that defines every tool the call needs.

A call still lacking the definition of a tool it calls, or of one called earlier in its conversation, is dropped
with reason `tools_unknown` (and counted: raw = curated + dropped). A call that needs no tool from an agent with
no known tools stays as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from slm_pipeline.core.records import ToolSpec

TOOLS_UNKNOWN = "tools_unknown"
REGISTERED_TOOLS_TABLE = "registered_tools"
REGISTERED_TOOLS_FILE = "tools.json"
_TOOL_LIST = TypeAdapter(list[ToolSpec])


class ToolListError(ValueError):
    """A tool list that is not a list of OpenAI tool definitions; the message says what is wrong."""


def parse_tool_list(data: bytes | str, source: str = "tool list") -> list[dict[str, Any]]:
    """OpenAI tool definitions from JSON: a list of `{"type": "function", "function": {...}}` (or of bare functions
    `{"name", "description", "parameters"}`), or `{"tools": [...]}`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ToolListError(f"{source} is not JSON: {exc}") from None
    if isinstance(value, dict) and isinstance(value.get("tools"), list):
        value = value["tools"]
    if not isinstance(value, list) or not value:
        raise ToolListError(f"{source} must be a non-empty JSON list of tool definitions (or {{\"tools\": [...]}})")
    tools = [t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t} for t in value]
    try:
        _TOOL_LIST.validate_python(tools)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ToolListError(f"{source}: tool {where}: {first['msg']}") from None
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise ToolListError(f"{source} defines a tool twice: {sorted({n for n in names if names.count(n) > 1})}")
    return tools


def register_tools(lake: Any, agent_id: str, path: Path) -> list[dict[str, Any]]:
    """Store the agent's tool list in the lake (replacing an earlier one); return it."""
    tools = parse_tool_list(path.read_bytes(), str(path))
    lake.put_file(REGISTERED_TOOLS_TABLE, agent_id, REGISTERED_TOOLS_FILE, json.dumps(tools, indent=2).encode())
    return tools


def registered_tools(lake: Any, agent_id: str) -> list[dict[str, Any]] | None:
    data = lake.get_file(REGISTERED_TOOLS_TABLE, agent_id, REGISTERED_TOOLS_FILE)
    return parse_tool_list(data, f"the registered tools of {agent_id}") if data is not None else None


def tools_unknown(tags: str | dict[str, Any] | None) -> bool:
    """Whether a raw call's tags say its tool definitions were not recorded."""
    if not tags:
        return False
    if isinstance(tags, str):
        if "tools_known" not in tags:
            return False
        try:
            tags = orjson.loads(tags)
        except orjson.JSONDecodeError:
            return False
    return isinstance(tags, dict) and tags.get("tools_known") is False


def _names(tools: list[dict[str, Any]]) -> set[str]:
    return {str((t.get("function") or {}).get("name")) for t in tools if isinstance(t, dict)}


def needed_tools(request: dict[str, Any], response: dict[str, Any]) -> set[str]:
    """The tools a call must have been offered: those its answer calls and those called earlier in its messages."""
    needed: set[str] = set()
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    messages += [c.get("message") or {} for c in response.get("choices") or [] if isinstance(c, dict)]
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                needed.add(str((call.get("function") or {}).get("name")))
    return needed


class AgentTools:
    """The tool definitions known for one agent: registered, and offered in its calls that recorded them."""

    def __init__(self, registered: list[dict[str, Any]] | None = None) -> None:
        self.registered = registered
        self._offers: list[list[dict[str, Any]]] = []  # distinct tool lists seen, oldest first
        self._seen: set[bytes] = set()

    def observe(self, request: dict[str, Any]) -> None:
        """Note the tools a call with known tools offered."""
        tools = request.get("tools")
        if isinstance(tools, list) and tools:
            key = orjson.dumps(tools, option=orjson.OPT_SORT_KEYS)
            if key in self._seen:  # keep the most recent position of a repeated offer
                self._offers = [o for o in self._offers if orjson.dumps(o, option=orjson.OPT_SORT_KEYS) != key]
            self._seen.add(key)
            self._offers.append(tools)

    @property
    def known(self) -> bool:
        return bool(self.registered) or bool(self._offers)

    def complete(self, request: dict[str, Any], response: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(the request with its tools filled in, where they came from) or (request, None): unknown."""
        needed = needed_tools(request, response)
        if self.registered and needed <= _names(self.registered):
            return {**request, "tools": self.registered}, "registered"
        for offer in reversed(self._offers):
            if needed <= _names(offer):
                return {**request, "tools": offer}, "proxied_calls"
        if not needed and not self.known:
            return request, "none_used"
        return request, None

    def missing(self, request: dict[str, Any], response: dict[str, Any]) -> list[str]:
        known = _names(self.registered or []) | {n for o in self._offers for n in _names(o)}
        return sorted(needed_tools(request, response) - known)

    def explain(self, request: dict[str, Any], response: dict[str, Any]) -> str:
        missing = self.missing(request, response)
        what = f"no definition is known for tool(s) {', '.join(missing)}" if missing else \
            "no single known tool list defines every tool it uses"
        return (f"the call was recorded without its tools and {what}: register the agent's tools "
                "(`slm-pipeline tools register --agent AGENT tools.json`) or send some of its calls through the gateway")


def agent_tools(rows: list[dict[str, Any]], registered: list[dict[str, Any]] | None) -> AgentTools:
    """The tools known for an agent from its raw rows (`RAW_SCHEMA`, payloads opened) and its registered list.
    The rows' requests are read only when some call lacks its tools."""
    known = AgentTools(registered)
    if not any(tools_unknown(row.get("tags")) for row in rows):
        return known
    for row in rows:
        if tools_unknown(row.get("tags")) or not row.get("request") or '"tools"' not in row["request"]:
            continue
        try:
            request = orjson.loads(row["request"])
        except orjson.JSONDecodeError:
            continue
        if isinstance(request, dict):
            known.observe(request)
    return known
