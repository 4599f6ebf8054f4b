"""NVIDIA Data Flywheel Blueprint log documents: `{"timestamp", "workload_id", "client_id", "request",
"response"}`, as its Elasticsearch index holds them. The canonical record is a superset of this shape (it takes
`client_id` as the agent id and epoch timestamps), so a document is a record once unwrapped from an
Elasticsearch hit (`_source`) or search answer (`hits.hits`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


FIELDS = frozenset({"timestamp", "workload_id", "client_id", "request", "response"})


def is_document(document: Any) -> bool:
    """A Data Flywheel document: its five fields and no others (a record with more, `call_id`, `tags`, ..., is
    this project's own, which takes `client_id` too)."""
    if isinstance(document, dict) and isinstance(document.get("_source"), dict):
        document = document["_source"]
    return isinstance(document, dict) and {"client_id", "request", "response"} <= document.keys() <= FIELDS


def documents(document: Any) -> Iterator[Any]:
    """The log documents in one JSON value: a document, an Elasticsearch hit, or a search answer."""
    if isinstance(document, dict) and isinstance(document.get("hits"), dict):
        for hit in document["hits"].get("hits") or []:
            yield hit.get("_source", hit) if isinstance(hit, dict) else hit
    elif isinstance(document, dict) and isinstance(document.get("_source"), dict):
        yield document["_source"]
    else:
        yield document


def to_record(document: dict[str, Any]) -> dict[str, Any]:
    record = dict(document)
    if "agent_id" not in record and "client_id" in record:
        record["agent_id"] = record.pop("client_id")
    tags = dict(record.get("tags") or {})
    tags["source_format"] = "dfw"
    record["tags"] = tags
    return record
