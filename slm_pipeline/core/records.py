"""The canonical call record: one agent LLM call, as JSON Lines.

The shape is a superset of the NVIDIA Data Flywheel Blueprint's log schema
(``timestamp``, ``workload_id``, ``client_id``, ``request``, ``response``), so
its users can import their logs unchanged. ``request`` and ``response`` are the
exact OpenAI chat-completions payloads; unknown fields are kept, not dropped.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Agent ids become Dagster partition keys and lake folder names, so they are kept to safe characters."""


class _Open(BaseModel):
    """An OpenAI object: the fields we rely on are typed, all others are kept."""

    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Open):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Open):
    type: Literal["function"] = "function"
    function: FunctionSpec


class ChatRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None


class Choice(_Open):
    index: int = 0
    message: Message
    finish_reason: str | None = None


class Usage(_Open):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatResponse(_Open):
    id: str | None = None
    model: str | None = None
    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None


class ErrorBody(_Open):
    message: str
    type: str | None = None
    code: str | int | None = None


class ErrorResponse(_Open):
    """What a failed call returned (OpenAI's error shape)."""

    error: ErrorBody


def _response_kind(value: Any) -> str:
    return "error" if isinstance(value, dict) and "error" in value else "completion"


Response = Annotated[
    Annotated[ChatResponse, Tag("completion")] | Annotated[ErrorResponse, Tag("error")],
    Discriminator(_response_kind),
]


class CallRecord(BaseModel):
    """One agent LLM call (the canonical record)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    timestamp: datetime = Field(description="ISO-8601, or epoch seconds (milliseconds are recognised).")
    agent_id: str = Field(
        validation_alias=AliasChoices("agent_id", "client_id"),
        pattern=AGENT_ID_PATTERN,
        description="Who made the call; `client_id` is accepted as an alias.",
    )
    workload_id: str | None = None
    call_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Idempotency key; a content hash when absent."
    )
    latency_ms: float | None = Field(default=None, ge=0)
    human_facing: bool | None = None
    tags: dict[str, Any] | None = None
    request: ChatRequest
    response: Response

    @field_validator("agent_id")
    @classmethod
    def _partition_key_safe(cls, value: str) -> str:
        if "..." in value:
            raise ValueError("agent_id may not contain '...' (it becomes a Dagster partition key)")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_or_iso(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("timestamp must be ISO-8601 or epoch seconds, not a boolean")
        if isinstance(value, (int, float)):
            seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds
            try:
                return datetime.fromtimestamp(seconds, tz=timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"epoch timestamp {value} is out of range") from None
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @property
    def failed(self) -> bool:
        return isinstance(self.response, ErrorResponse)


def content_call_id(agent_id: str, timestamp: datetime, request: Any, response: Any) -> str:
    """The idempotency key of a record that has no `call_id`: a hash of what it says.

    The same record imported twice gets the same id; two calls that happened at
    different times (a real repeat) get different ids.
    """
    payload = orjson.dumps(
        {"agent_id": agent_id, "timestamp": timestamp.isoformat(), "request": request, "response": response},
        option=orjson.OPT_SORT_KEYS,
    )
    return "h-" + hashlib.sha256(payload).hexdigest()[:40]


def call_id_of(record: CallRecord, raw: dict[str, Any]) -> str:
    """The record's own `call_id`, else its content hash (computed on the raw payloads)."""
    return record.call_id or content_call_id(record.agent_id, record.timestamp, raw["request"], raw["response"])


# --- validation errors as quarantine reasons --------------------------------------------

_TYPE_ERRORS = ("_type", "_parsing", "is_instance_of", "model_attributes_type", "union_tag_invalid")


def _path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if item in ("completion", "error") and parts and parts[-1] == "response":
            continue  # discriminator tags are not fields
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<record>"


def describe_validation_error(error: ValidationError) -> tuple[str, str, str]:
    """(reason, field, message) for the first problem of a record that failed validation."""
    first = error.errors()[0]
    field = _path(first["loc"])
    kind = first["type"]
    if field == "agent_id" and kind == "missing":
        field = "agent_id (or client_id)"
    if kind == "missing":
        reason = "missing_field"
    elif kind == "literal_error" and field.endswith(".role"):
        reason = "unknown_role"
    elif kind.endswith(_TYPE_ERRORS) or kind in ("dict_type", "list_type", "model_type"):
        reason = "wrong_type"
    else:
        reason = "invalid_value"
    more = len(error.errors()) - 1
    message = f"field '{field}': {first['msg']}" + (f" (and {more} more problem(s))" if more else "")
    return reason, field, message
