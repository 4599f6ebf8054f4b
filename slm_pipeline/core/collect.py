"""S1 collect: copy an agent's calls that are new since the last run from the log store to the lake."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from slm_pipeline.core.crypto import KEY_FILE_ENV, KEYS_ENV, KeyRing, KeyRingError
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore

RAW_TABLE = "raw_agent_calls"
RAW_SCHEMA = pl.Schema({
    "seq": pl.Int64,
    "call_id": pl.String,
    "agent_id": pl.String,
    "workload_id": pl.String,
    "timestamp": pl.Datetime("us", "UTC"),
    "latency_ms": pl.Float64,
    "human_facing": pl.Boolean,
    "status": pl.String,
    "model": pl.String,
    "tags": pl.String,  # JSON
    "request": pl.String,  # the OpenAI request: JSON, or sealed (`open_payload`) when a key ring is configured
    "response": pl.String,  # the OpenAI response, likewise
    "source": pl.String,
    "ingested_at": pl.Datetime("us", "UTC"),
})
PAYLOAD_COLUMNS = ("request", "response", "tags")
"""Columns that may hold personal data; never shown in metadata or previews."""


SEALED_PREFIX = "sealed:"
"""A raw-lake payload `sealed:<key id>:<base64 of nonce + AES-GCM ciphertext>`, bound to its call id, as in the
log store: the raw lake is part of the encrypted raw store, and only curation (S2) opens it, in memory."""


def _sealed_text(key_id: str, sealed: bytes) -> str:
    return f"{SEALED_PREFIX}{key_id}:{base64.b64encode(sealed).decode()}"


def _payload(row: Mapping[str, Any], column: str, key_ring: KeyRing | None) -> str:
    """A store payload as it goes into the raw lake: still sealed when the store sealed it (the same ciphertext),
    sealed now when a key ring is configured, else plain JSON."""
    data = bytes(row[column])
    if row.get("payload_key_id") is not None:
        if key_ring is None:
            raise KeyRingError(f"call {row['call_id']} is encrypted (key {row['payload_key_id']!r}) and no key ring "
                               f"is configured: set {KEYS_ENV}")
        key_ring.require(row["payload_key_id"])  # a missing key fails here, in S1, not later in S2
        return _sealed_text(row["payload_key_id"], data)
    if key_ring is not None:
        return _sealed_text(*key_ring.encrypt(data, row["call_id"]))
    return data.decode("utf-8")


def open_payload(value: str | None, call_id: str, key_ring: KeyRing | None) -> str | None:
    """The JSON text of a raw-lake payload, decrypted in memory when it is sealed."""
    if value is None or not value.startswith(SEALED_PREFIX):
        return value
    key_id, _, encoded = value[len(SEALED_PREFIX):].partition(":")
    if key_ring is None:
        raise KeyRingError(f"raw call {call_id} is sealed with key {key_id!r} and no key ring is configured: set "
                           f"{KEYS_ENV} (or {KEY_FILE_ENV}) for the pipeline")
    return key_ring.decrypt(key_id, base64.b64decode(encoded), call_id).decode("utf-8")


def open_payloads(raw: pl.DataFrame, key_ring: KeyRing | None) -> pl.DataFrame:
    """`raw` (of `RAW_SCHEMA`) with its request and response as JSON text."""
    if raw.is_empty():
        return raw
    call_ids = raw["call_id"].to_list()
    return raw.with_columns(
        pl.Series(name, [open_payload(v, c, key_ring) for v, c in zip(raw[name].to_list(), call_ids)], pl.String)
        for name in ("request", "response"))


def rows_to_frame(rows: Iterable[Mapping[str, Any]], key_ring: KeyRing | None = None) -> pl.DataFrame:
    """Log-store rows as a frame of `RAW_SCHEMA`, payloads sealed whenever a key ring is configured."""
    columns: dict[str, list[Any]] = {name: [] for name in RAW_SCHEMA}
    for row in rows:
        for name in ("seq", "call_id", "agent_id", "workload_id", "timestamp", "latency_ms", "human_facing",
                     "status", "model", "source", "ingested_at"):
            columns[name].append(row[name])
        columns["tags"].append(orjson.dumps(row["tags"]).decode() if row["tags"] is not None else None)
        columns["request"].append(_payload(row, "request_payload", key_ring))
        columns["response"].append(_payload(row, "response_payload", key_ring))
    return pl.DataFrame(columns, schema=RAW_SCHEMA)


@dataclass
class CollectResult:
    agent_id: str
    watermark_before: int
    watermark_after: int
    new_rows: int = 0
    files: list[str] = field(default_factory=list)


def collect_new_calls(
    store: LogStore,
    lake: Lake,
    agent_id: str,
    *,
    batch_size: int = 50_000,
    on_batch: Callable[[int], None] | None = None,
    key_ring: KeyRing | None = None,
) -> CollectResult:
    """Append the agent's calls stored after the lake's watermark, one Parquet file per batch."""
    key_ring = key_ring if key_ring is not None else KeyRing.from_environment()
    before = lake.watermark(RAW_TABLE, agent_id)
    up_to = store.watermarks().get(agent_id, 0)  # a snapshot: calls arriving meanwhile wait for the next run
    result = CollectResult(agent_id, before, before)
    for rows in store.iter_calls(agent_id, after_seq=before, up_to_seq=up_to, batch_size=batch_size):
        frame = rows_to_frame(rows, key_ring)
        first, last = rows[0]["seq"], rows[-1]["seq"]
        result.files.append(lake.append(RAW_TABLE, agent_id, frame, first, last))
        result.new_rows += len(rows)
        result.watermark_after = last
        if on_batch:
            on_batch(len(rows))
    return result


@dataclass
class PartitionSummary:
    rows: int
    first_call: datetime | None
    last_call: datetime | None
    failed: int
    human_facing: int
    duplicate_call_ids: int
    models: dict[str, int]
    preview: pl.DataFrame


def summarise_raw_calls(lake: Lake, agent_id: str, preview_rows: int = 10) -> PartitionSummary:
    """Counts and a payload-free preview of the agent's raw calls in the lake."""
    frame = lake.read(RAW_TABLE, agent_id, columns=[c for c in RAW_SCHEMA if c not in PAYLOAD_COLUMNS])
    if frame is None:
        frame = pl.DataFrame(schema={c: t for c, t in RAW_SCHEMA.items() if c not in PAYLOAD_COLUMNS})
    models = frame.group_by("model").len().sort("len", descending=True)
    return PartitionSummary(
        rows=frame.height,
        first_call=frame["timestamp"].min(),  # type: ignore[arg-type]
        last_call=frame["timestamp"].max(),  # type: ignore[arg-type]
        failed=int((frame["status"] == "error").sum()),
        human_facing=int(frame["human_facing"].fill_null(False).sum()),
        duplicate_call_ids=frame.height - frame["call_id"].n_unique(),
        models={str(m): int(n) for m, n in models.iter_rows()},
        preview=frame.sort("seq", descending=True)
        .head(preview_rows)
        .select("seq", "call_id", "timestamp", "model", "status", "human_facing", "latency_ms"),
    )
