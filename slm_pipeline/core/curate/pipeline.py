"""S2 curate: from an agent's raw calls to training material without personal data.

Order matters for speed and for the counts: human-facing and failed calls are dropped first,
then exact duplicates (normalised content hash), then near duplicates (MinHash on the user turn
plus the answer), and only the survivors are scrubbed. A call whose texts cannot be analysed is
quarantined. Every scrubbed call is then re-scanned with independent regexes (`leaks`); a call in
which a structured identifier survived is quarantined as `residual_identifier`, with the field and
the type (never the value), and the rest of the partition goes on. Every raw call ends up in exactly
one place:

    raw = curated + dropped (one reason each: human_facing, answered_by_slm, failed_*, *_duplicate, or a quarantine reason)
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl

from slm_pipeline.core.collect import RAW_SCHEMA, RAW_TABLE, open_payloads
from slm_pipeline.core.crypto import KeyRing
from slm_pipeline.core.curate.leaks import find_structured_identifiers, identifier_matches
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.quarantine import QuarantineEntry, QuarantineFile, new_quarantine_path
from slm_pipeline.core.curate.analyzer import AnalyzerConfig, SegmentAnalyzer
from slm_pipeline.core.chat import called_tools, latest_user_turn, offered_tools, system_fingerprint
from slm_pipeline.core.curate.filters import answer_text, content_hash, failure_reason, near_duplicates
from slm_pipeline.core.curate.scrub import DEFAULT_MAX_TEXT_CHARS, ScrubbedCall, UnscrubbableCall, scrub_calls

RESIDUAL_IDENTIFIER = "residual_identifier"
CURATED_TABLE = "curated_calls"
DROPPED_TABLE = "dropped_calls"

CURATED_SCHEMA = pl.Schema({
    **{c: RAW_SCHEMA[c] for c in ("seq", "call_id", "agent_id", "workload_id", "timestamp", "latency_ms", "model")},
    "request": pl.String,  # scrubbed OpenAI request, JSON
    "response": pl.String,  # scrubbed OpenAI response, JSON
    "user_turn": pl.String,  # scrubbed
    "answer_kind": pl.String,  # tool_call | json | text
    "tools_called": pl.List(pl.String),
    "tools_offered": pl.List(pl.String),
    "system_prompt_hash": pl.String,  # of the original system prompt, as the gateway sees it
    "content_hash": pl.String,
    "pii_entities": pl.String,  # JSON {entity type: count}
    "replacements": pl.List(pl.String),  # the surrogates or placeholders written into this call
})
DROPPED_SCHEMA = pl.Schema({
    "seq": pl.Int64,
    "call_id": pl.String,
    "stage": pl.String,  # filter | dedupe | quarantine
    "reason": pl.String,
    "detail": pl.String,  # the kept call's id for duplicates; what was wrong for quarantined calls
})


@dataclass(frozen=True)
class CurationConfig:
    """How S2 decides what becomes training material. Defaults are what the demo and tests use."""

    drop_human_facing: bool = True
    near_duplicate_threshold: float | None = 0.9  # Jaccard on word 3-shingles; None turns it off
    minhash_permutations: int = 128
    strategy: Literal["surrogate", "placeholder"] = "surrogate"
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    workers: int = 2
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    public_figures: Literal["scrub", "keep"] = "scrub"  # names as search terms in tool arguments (see scrub.py)
    residual_limit: float = 0.01  # the blocking check fails above this share of calls with a residual identifier


@dataclass
class CurationResult:
    curated: pl.DataFrame
    dropped: pl.DataFrame
    entity_counts: dict[str, int]
    raw_rows: int

    @property
    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(self.dropped["reason"].to_list()))

    @property
    def residual_share(self) -> float:
        """Calls quarantined with a residual identifier, as a share of the calls that were scrubbed."""
        residual = self.residuals.height
        scrubbed = self.curated.height + residual
        return residual / scrubbed if scrubbed else 0.0

    @property
    def residuals(self) -> pl.DataFrame:
        return self.dropped.filter(pl.col("reason") == RESIDUAL_IDENTIFIER)

    def residual_summary(self) -> dict[str, dict[str, int]]:
        """{"types": {type: calls}, "fields": {field: calls}} of the residual identifiers (no values)."""
        types: Counter[str] = Counter()
        fields: Counter[str] = Counter()
        for detail in self.residuals["detail"].to_list():
            for item in orjson.loads(detail or "[]"):
                types[item["type"]] += 1
                fields[item["field"]] += 1
        return {"types": dict(types), "fields": dict(fields)}

    @property
    def reconciles(self) -> bool:
        return self.raw_rows == self.curated.height + self.dropped.height


def answer_kind(response: dict[str, Any]) -> str:
    message = (response.get("choices") or [{}])[0].get("message") or {}
    if message.get("tool_calls"):
        return "tool_call"
    content = (message.get("content") or "").strip()
    if content[:1] in ("{", "["):
        try:
            orjson.loads(content)
            return "json"
        except orjson.JSONDecodeError:
            pass
    return "text"


def _answered_by_slm(tags: str | None) -> bool:
    """The gateway routed the call to a fine-tuned SLM, which answered (S6; tag `route: slm`)."""
    if not tags or '"slm"' not in tags:
        return False
    try:
        value = orjson.loads(tags)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("route") == "slm"


def curate_calls(
    raw: pl.DataFrame,
    analyzer: SegmentAnalyzer,
    salt: bytes,
    config: CurationConfig = CurationConfig(),
    on_progress: Callable[[int, int], None] | None = None,
) -> CurationResult:
    """Filter, deduplicate and scrub an agent's raw calls (a frame of `RAW_SCHEMA`)."""
    rows = raw.sort("seq").to_dicts()
    dropped: list[dict[str, Any]] = []

    def drop(row: dict[str, Any], stage: str, reason: str, detail: str | None = None) -> None:
        dropped.append({"seq": row["seq"], "call_id": row["call_id"], "stage": stage, "reason": reason,
                        "detail": detail})

    survivors: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    first_of: dict[str, str] = {}
    for row in rows:
        try:
            request, response = orjson.loads(row["request"]), orjson.loads(row["response"])
            if not isinstance(request, dict) or not isinstance(response, dict):
                raise ValueError("request and response must be JSON objects")
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            drop(row, "quarantine", "malformed_payload", str(exc))
            continue
        if config.drop_human_facing and row["human_facing"]:
            drop(row, "filter", "human_facing")
            continue
        if _answered_by_slm(row.get("tags")):
            drop(row, "filter", "answered_by_slm")  # the teacher did not answer it: not distillation material
            continue
        failure = failure_reason(response)
        if failure:
            drop(row, "filter", failure)
            continue
        digest = content_hash(request, response)
        if digest in first_of:
            drop(row, "dedupe", "exact_duplicate", first_of[digest])
            continue
        first_of[digest] = row["call_id"]
        row["content_hash"] = digest
        survivors.append((row, request, response))

    if config.near_duplicate_threshold is not None and survivors:
        texts = [latest_user_turn(req) + " \n " + answer_text(resp) for _, req, resp in survivors]
        near = near_duplicates(texts, config.near_duplicate_threshold, config.minhash_permutations)
        for index, original in near.items():
            drop(survivors[index][0], "dedupe", "near_duplicate", survivors[original][0]["call_id"])
        survivors = [s for i, s in enumerate(survivors) if i not in near]

    tools_offered = [offered_tools(req) for _, req, _ in survivors]
    system_hashes = [system_fingerprint(req) for _, req, _ in survivors]
    scrubbed = scrub_calls([(req, resp) for _, req, resp in survivors], analyzer, salt, config.strategy,
                           config.max_text_chars, on_progress, config.public_figures)

    curated: list[dict[str, Any]] = []
    entity_counts: Counter[str] = Counter()
    for (row, _, _), result, offered, system_hash in zip(survivors, scrubbed, tools_offered, system_hashes):
        if isinstance(result, UnscrubbableCall):
            drop(row, "quarantine", result.reason, str(result))
            continue
        assert isinstance(result, ScrubbedCall)
        residual = residual_identifiers(result, config.analyzer.allow_list)
        if residual:
            drop(row, "quarantine", RESIDUAL_IDENTIFIER, orjson.dumps(residual).decode())
            continue
        entity_counts.update(result.entities)
        curated.append({
            "seq": row["seq"], "call_id": row["call_id"], "agent_id": row["agent_id"],
            "workload_id": row["workload_id"], "timestamp": row["timestamp"], "latency_ms": row["latency_ms"],
            "model": row["model"],
            "request": orjson.dumps(result.request).decode(),
            "response": orjson.dumps(result.response).decode(),
            "user_turn": latest_user_turn(result.request),
            "answer_kind": answer_kind(result.response),
            "tools_called": called_tools(result.response),
            "tools_offered": offered,
            "system_prompt_hash": system_hash,
            "content_hash": row["content_hash"],
            "pii_entities": orjson.dumps(result.entities, option=orjson.OPT_SORT_KEYS).decode(),
            "replacements": result.replacements,
        })
    result = CurationResult(
        curated=pl.DataFrame(curated, schema=CURATED_SCHEMA),
        dropped=pl.DataFrame(dropped, schema=DROPPED_SCHEMA).sort("seq"),
        entity_counts=dict(entity_counts),
        raw_rows=len(rows),
    )
    assert result.reconciles, (result.raw_rows, result.curated.height, result.dropped.height)
    return result


# --- one agent's partition, end to end ----------------------------------------------------------

@dataclass
class PartitionCuration:
    """What `curate_agent` did, for metadata and reports (no personal data in here)."""

    agent_id: str
    result: CurationResult
    curated_path: str | None
    leak_counts: dict[str, int]  # calls with a residual identifier, by type (each call was re-scanned)
    leak_sample: int  # calls re-scanned: every scrubbed call
    quarantine_path: str | None
    analysis: dict[str, int]
    seconds: float


def scanned_strings(request: dict[str, Any], response: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, text) of every string of a curated call but its tool definitions, JSON in strings decoded."""

    def walk(item: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(item, str):
            if item[:1] in "{[":
                try:
                    yield from walk(orjson.loads(item), where)
                    return
                except orjson.JSONDecodeError:
                    pass
            yield where, item
        elif isinstance(item, dict):
            for k, v in item.items():
                yield from walk(v, f"{where}.{k}")
        elif isinstance(item, (list, tuple)):
            for i, v in enumerate(item):
                yield from walk(v, f"{where}[{i}]")

    yield from walk({k: v for k, v in request.items() if k != "tools"}, "request")
    yield from walk(response, "response")


def residual_identifiers(call: ScrubbedCall, allow_list: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """What the independent regexes still find in a scrubbed call: [{"field": path, "type": type}] (no values)."""
    found: list[dict[str, str]] = []
    for where, text in scanned_strings(call.request, call.response):
        for entity, _ in identifier_matches(text, call.replacements, allow_list):
            item = {"field": re.sub(r"\[\d+\]", "[]", where), "type": entity}
            if item not in found:
                found.append(item)
    return found


def leak_scan(curated: pl.DataFrame, sample: int, seed: int = 0, allow_list: tuple[str, ...] = ()
              ) -> tuple[dict[str, int], int]:
    """Structured identifiers found by the independent regexes in a sample of curated calls (not their
    tool definitions, which are never rewritten)."""
    rows = curated.sample(min(sample, curated.height), seed=seed) if curated.height else curated
    found: Counter[str] = Counter()
    for row in rows.select("request", "response", "replacements").iter_rows(named=True):
        for _, text in scanned_strings(orjson.loads(row["request"]), orjson.loads(row["response"])):
            found.update(find_structured_identifiers(text, row["replacements"], allow_list))
    return dict(found), rows.height


def curate_agent(
    lake: Lake,
    agent_id: str,
    config: CurationConfig,
    salt: bytes,
    quarantine_dir: Path,
    cache_path: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    key_ring: KeyRing | None = None,
) -> PartitionCuration:
    """Curate the agent's raw calls in the lake and write `curated_calls` and `dropped_calls` beside them.

    Sealed raw payloads are opened in memory with `key_ring` (default: the one configured in the environment)."""
    started = time.monotonic()
    key_ring = key_ring if key_ring is not None else KeyRing.from_environment()
    raw = lake.read(RAW_TABLE, agent_id)
    raw = pl.DataFrame(schema=RAW_SCHEMA) if raw is None else open_payloads(raw, key_ring)
    analyzer = SegmentAnalyzer(config.analyzer, cache_path=cache_path, workers=config.workers)
    try:
        result = curate_calls(raw, analyzer, salt, config, on_progress)
    finally:
        analyzer.close()
    curated_path = lake.write(CURATED_TABLE, agent_id, result.curated)
    lake.write(DROPPED_TABLE, agent_id, result.dropped)

    quarantine_path = None
    quarantined = result.dropped.filter(pl.col("stage") == "quarantine")
    if quarantined.height:
        quarantine = QuarantineFile(new_quarantine_path(quarantine_dir, prefix=f"curate-{agent_id}"))
        for row in quarantined.iter_rows(named=True):  # the call is in the raw store: its id is enough
            quarantine.add(QuarantineEntry(file=f"{RAW_TABLE}/agent_id={agent_id}", line=None, field=row["call_id"],
                                           reason=row["reason"], message=row["detail"] or row["reason"]))
        quarantine.close()
        quarantine_path = str(quarantine.path)
    leaks = result.residual_summary()["types"]
    scanned = result.curated.height + result.residuals.height
    return PartitionCuration(agent_id, result, curated_path, leaks, scanned, quarantine_path, dict(analyzer.stats),
                             time.monotonic() - started)
