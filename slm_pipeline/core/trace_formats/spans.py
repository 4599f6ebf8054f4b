"""OTLP spans flattened: each span with its resource's and scope's attributes, its events, as plain Python.

Attribute values become Python values (`AnyValue`: strings, booleans, ints, doubles, arrays, key-value lists,
bytes); ids become lowercase hex, as OTLP/JSON writes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class SpanEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass
class Span:
    trace_id: str
    span_id: str
    name: str
    start_unix_nano: int = 0
    end_unix_nano: int = 0
    parent_span_id: str = ""
    kind: str = "unspecified"
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""

    @property
    def service_name(self) -> str | None:
        value = self.resource.get("service.name")
        return str(value) if value is not None else None

    def describe(self) -> str:
        return f"span {self.span_id or '?'} of trace {self.trace_id or '?'} ({self.name!r})"

    def as_json(self) -> dict[str, Any]:
        """The span as a JSON-able dict (what a quarantine entry keeps)."""
        return {"trace_id": self.trace_id, "span_id": self.span_id, "parent_span_id": self.parent_span_id,
                "name": self.name, "kind": self.kind, "start_unix_nano": self.start_unix_nano,
                "end_unix_nano": self.end_unix_nano, "attributes": self.attributes,
                "events": [{"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": e.attributes}
                           for e in self.events],
                "resource": self.resource, "scope": {"name": self.scope_name, "version": self.scope_version},
                "status": {"code": self.status_code, "message": self.status_message}}


def any_value(value: Any, depth: int = 0) -> Any:
    """An OTLP `AnyValue` as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if depth > 32:
        return "<too deeply nested>"
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    """Every span of the request, flattened."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                yield Span(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), name=span.name,
                    start_unix_nano=span.start_time_unix_nano, end_unix_nano=span.end_time_unix_nano,
                    parent_span_id=span.parent_span_id.hex(), kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                    attributes=attributes(span.attributes),
                    events=[SpanEvent(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events],
                    resource=resource, scope_name=scope.name, scope_version=scope.version,
                    status_code=span.status.code, status_message=span.status.message,
                )


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


def unflatten(flat: dict[str, Any], prefix: str) -> Any:
    """The attributes under `prefix.` as a nested value: `a.0.b` -> {"a": [{"b": ...}]} (lists where every key
    of a level is a number)."""
    tree: dict[str, Any] = {}
    start = len(prefix) + 1
    for key, value in flat.items():
        if not key.startswith(prefix + "."):
            continue
        node = tree
        parts = key[start:].split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return _lists(tree)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


def flatten(nested: Any, prefix: str = "") -> dict[str, Any]:
    """The inverse of `unflatten`: nested dicts and lists of dicts as dotted keys (lists of scalars stay lists)."""
    flat: dict[str, Any] = {}
    if isinstance(nested, dict):
        for key, value in nested.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
                flat.update(flatten(value, name))
            else:
                flat[name] = value
    elif isinstance(nested, list):
        for index, value in enumerate(nested):
            flat.update(flatten(value, f"{prefix}.{index}") if isinstance(value, (dict, list))
                        else {f"{prefix}.{index}": value})
    return flat
