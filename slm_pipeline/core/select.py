"""S4 select: which catalogue SLMs are worth fine-tuning for a task cluster.

1. Constraints (licence allowlist, size, memory, context >= the cluster's p95 prompt + answer
   tokens, tool calling when asked) keep or drop each catalogue entry, with the reason.
2. Entries whose weights are not on this machine are reported unavailable, with where they
   were looked for.
3. The rest are screened zero-shot on a sample of the cluster's validation split.
4. The top k by (exact accuracy, name accuracy, valid outputs, then fewer parameters) go on to S5.
   A base model that scores zero zero-shot can still fine-tune well (the embedded SmolLM2-135M
   does), so the ranking prefers the cheaper model on ties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from slm_pipeline.core.evaluate import Evaluation, evaluate
from slm_pipeline.core.models.catalogue import Availability, Catalogue, CatalogueEntry, availability
from slm_pipeline.core.models.loading import load_model, weights_folder

Decision = Literal["selected", "screened", "unavailable", "excluded"]


@dataclass(frozen=True)
class SelectionConfig:
    """S4 constraints; defaults suit commercial use on a single small GPU or a CPU."""

    licences: tuple[str, ...] = ("apache-2.0", "mit", "llama3.2")  # cc-by-nc-4.0 / qwen-research: not commercial
    max_params_b: float | None = 4.0
    max_memory_gb: float | None = None
    memory_precision: Literal["bf16", "4bit"] = "bf16"
    require_tool_calling: bool = False  # fine-tuning teaches the format; True keeps only tool-trained bases
    models: tuple[str, ...] | None = None  # only these catalogue names (None: all)
    screen_examples: int = 16  # validation examples per candidate for the zero-shot screen
    top_k: int = 1


@dataclass
class Candidate:
    name: str
    decision: Decision
    reason: str
    entry: CatalogueEntry
    availability: Availability | None = None
    screen: Evaluation | None = None
    rank: int | None = None

    def row(self) -> dict[str, Any]:
        screen = self.screen
        return {
            "model": self.name, "decision": self.decision, "rank": self.rank, "reason": self.reason,
            "params_b": self.entry.params_b, "licence": self.entry.licence,
            "context_length": self.entry.context_length, "memory_gb_bf16": self.entry.memory_gb.get("bf16"),
            "memory_gb_4bit": self.entry.memory_gb.get("4bit"), "tool_calling": self.entry.tool_calling,
            "zero_shot_exact_acc": screen.exact_acc if screen else None,
            "zero_shot_name_acc": screen.name_acc if screen else None,
            "zero_shot_valid": screen.valid if screen else None,
        }


CANDIDATE_SCHEMA = pl.Schema({
    "model": pl.String, "decision": pl.String, "rank": pl.Int64, "reason": pl.String, "params_b": pl.Float64,
    "licence": pl.String, "context_length": pl.Int64, "memory_gb_bf16": pl.Float64, "memory_gb_4bit": pl.Float64,
    "tool_calling": pl.Boolean, "zero_shot_exact_acc": pl.Float64, "zero_shot_name_acc": pl.Float64,
    "zero_shot_valid": pl.Float64,
})


def constraint_failure(entry: CatalogueEntry, config: SelectionConfig, context_needed: int) -> str | None:
    """Why the entry is excluded by the constraints, or None when it passes."""
    if config.models is not None and entry.name not in config.models:
        return "not in the configured model list"
    if config.licences and entry.licence not in config.licences:
        return f"licence {entry.licence} is not in the allowlist ({', '.join(config.licences)})"
    if config.max_params_b is not None and entry.params_b > config.max_params_b:
        return f"{entry.params_b}B parameters > max_params_b={config.max_params_b}"
    memory = entry.memory_gb.get(config.memory_precision)
    if config.max_memory_gb is not None and memory is not None and memory > config.max_memory_gb:
        return f"{memory} GB ({config.memory_precision}) > max_memory_gb={config.max_memory_gb}"
    if entry.context_length < context_needed:
        return f"context {entry.context_length} < {context_needed} tokens (the cluster's p95 prompt + answer)"
    if config.require_tool_calling and not entry.tool_calling:
        return "not trained for tool calling (require_tool_calling=true)"
    return None


def select_candidates(catalogue: Catalogue, validation: pl.DataFrame, context_needed: int, cache_dir: Path,
                      config: SelectionConfig = SelectionConfig(),
                      on_candidate: Callable[[Candidate], None] | None = None) -> list[Candidate]:
    """Every catalogue entry with its decision; the selected ones carry rank 1..k."""
    candidates: list[Candidate] = []
    sample = validation.sort("call_id").head(config.screen_examples)
    for entry in catalogue.models:
        failure = constraint_failure(entry, config, context_needed)
        if failure:
            candidates.append(Candidate(entry.name, "excluded", failure, entry))
            continue
        found = availability(entry)
        if not found.available:
            candidates.append(Candidate(entry.name, "unavailable", found.reason, entry, found))
            continue
        model, tokenizer = load_model(weights_folder(found, cache_dir))
        screen = evaluate(model, tokenizer, sample)
        del model
        candidates.append(Candidate(entry.name, "screened", f"zero-shot on {screen.examples} validation examples",
                                    entry, found, screen))
    screened = sorted((c for c in candidates if c.decision == "screened"),
                      key=lambda c: (-c.screen.exact_acc, -c.screen.name_acc, -c.screen.valid, c.entry.params_b))
    for position, candidate in enumerate(screened, start=1):
        candidate.rank = position
        if position <= config.top_k:
            candidate.decision = "selected"
            candidate.reason += f"; rank {position} of {len(screened)}, selected for fine-tuning (top_k={config.top_k})"
        else:
            candidate.reason += f"; rank {position} of {len(screened)}, below top_k={config.top_k}"
    if on_candidate:
        for candidate in candidates:
            on_candidate(candidate)
    return candidates


def candidates_frame(candidates: list[Candidate]) -> pl.DataFrame:
    return pl.DataFrame([c.row() for c in candidates], schema=CANDIDATE_SCHEMA)

