"""S4: constraints with reasons, offline availability, the zero-shot screen and the top-k pick."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from slm_pipeline.core.models.catalogue import load_catalogue
from slm_pipeline.core.select import SelectionConfig, candidates_frame, constraint_failure, select_candidates
from slm_pipeline.core.task_data import build_task_dataset
from slm_pipeline_tests.conftest import MODEL_CACHE, cluster_examples


def test_constraints_say_why_a_model_is_excluded():
    catalogue = load_catalogue()
    config = SelectionConfig(max_params_b=2.0, max_memory_gb=3.0)
    why = {e.name: constraint_failure(e, config, context_needed=10_000) for e in catalogue.models}
    assert why["xlam-2-1b-fc-r"] == "licence cc-by-nc-4.0 is not in the allowlist (apache-2.0, mit, llama3.2)"
    assert why["phi-3.5-mini-instruct"] == "3.82B parameters > max_params_b=2.0"
    assert why["qwen2.5-1.5b-instruct"] == "3.09 GB (bf16) > max_memory_gb=3.0"
    assert why["smollm2-135m-instruct"] == "context 8192 < 10000 tokens (the cluster's p95 prompt + answer)"
    assert why["qwen2.5-0.5b-instruct"] is None and why["llama-3.2-1b-instruct"] is None
    assert constraint_failure(catalogue.get("smollm2-135m-instruct"), SelectionConfig(require_tool_calling=True), 0) \
        == "not trained for tool calling (require_tool_calling=true)"


def test_screen_ranks_available_candidates_and_reports_every_entry(curated_demo, test_catalogue: Path,
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    dataset = build_task_dataset("support-bot", "c1", "refund", cluster_examples(curated_demo, "support.refund_request"))
    validation = dataset.split("validation")
    seen = []
    candidates = select_candidates(load_catalogue(test_catalogue), validation, context_needed=1500,
                                   cache_dir=MODEL_CACHE, config=SelectionConfig(screen_examples=4, top_k=2),
                                   on_candidate=seen.append)
    by_name = {c.name: c for c in candidates}
    assert len(seen) == len(candidates) == len(load_catalogue(test_catalogue).models)  # nobody silently skipped
    assert {c.name for c in candidates if c.decision == "selected"} == {"tiny-llama", "smollm2-135m-instruct"}
    embedded = by_name["smollm2-135m-instruct"]
    assert embedded.screen.examples == 4 and 0 <= embedded.screen.exact_acc <= 1
    ranked = sorted((c for c in candidates if c.rank), key=lambda c: c.rank)
    keys = [(-c.screen.exact_acc, -c.screen.name_acc, -c.screen.valid, c.entry.params_b) for c in ranked]
    assert keys == sorted(keys)  # better zero-shot first; on a tie, the smaller model
    unavailable = by_name["qwen2.5-0.5b-instruct"]
    assert unavailable.decision == "unavailable" and "not in the local Hugging Face cache" in unavailable.reason
    assert by_name["hammer2.1-0.5b"].decision == "excluded"
    frame = candidates_frame(candidates)
    assert sorted(frame.filter(pl.col("decision") == "selected")["rank"].to_list()) == [1, 2]
    assert frame.filter(pl.col("decision") != "selected")["reason"].str.len_chars().min() > 10
