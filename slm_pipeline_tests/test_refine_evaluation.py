"""S6 evaluation on a free-text task: the text metrics, embedding similarity included, per call and per model."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.refine.evaluation import ModelUnderTest, evaluate_cluster
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import DATASET_SCHEMA, DATASETS_TABLE


def test_free_text_answers_get_exact_match_token_f1_and_embedding_similarity(
        embedded_home: Path, test_catalogue: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLM_PIPELINE_CATALOGUE", str(test_catalogue))
    lake = Lake(Settings().resolved_lake_url)
    answers = ["Your parcel left the warehouse today.", "We have refunded the full amount.", "The store opens at 9."]
    rows = [{"call_id": f"t{i}", "split": "test", "stratum": "text", "group": f"t{i}", "answer_kind": "text",
             "messages": json.dumps([{"role": "system", "content": "Task: answer."},
                                     {"role": "user", "content": f"Question {i}?"}]),
             "completion": answer} for i, answer in enumerate(answers)]
    partition = cluster_partition("a1", "c009")
    lake.write(DATASETS_TABLE, partition, pl.DataFrame(rows, schema=DATASET_SCHEMA))
    lake.put_file(DATASETS_TABLE, partition, "dataset.json", json.dumps({"status": "ready", "tools": []}).encode())

    evaluation = evaluate_cluster(lake, Settings(), "a1", "c009",
                                  [ModelUnderTest("base", "tiny-llama (zero-shot)", "tiny-llama")])
    assert evaluation.answer_kind == "text" and evaluation.main_metric == "token_f1"
    [result] = evaluation.results
    assert result.metrics["examples"] == 3 and 0.0 <= result.metrics["token_f1"] <= 1.0
    assert -1.0 <= result.metrics["embedding_similarity"] <= 1.0
    assert all(s.similarity is not None and s.latency_ms > 0 for s in result.scores)
    assert result.metrics["latency_ms_p50"] > 0 and result.metrics["cost_per_1k_calls_usd"] >= 0
    assert not evaluation.decision.promote
    assert evaluation.decision.reasons == ["no fine-tuned candidate finished training"]
