"""curate_calls on demo traffic: counts reconcile, reasons are right, nothing structured leaks."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import polars as pl
import pytest

from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.curate.leaks import find_structured_identifiers
from slm_pipeline.core.curate.pipeline import CURATED_TABLE, DROPPED_TABLE, CurationConfig, curate_agent, \
    curate_calls, leak_scan
from slm_pipeline.core.demo import default_labels_path
from slm_pipeline.core.lake import Lake
from slm_pipeline_tests.conftest import raw_lake


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory, demo_traffic: Path) -> Lake:
    """A lake of its own: a test here adds a broken row to it."""
    return raw_lake(demo_traffic, tmp_path_factory.mktemp("curate"))


@pytest.fixture(scope="module")
def labels(demo_traffic: Path) -> dict[str, dict[str, str]]:
    with default_labels_path(demo_traffic).open() as handle:
        return {row["call_id"]: row for row in csv.DictReader(handle)}


def test_counts_reconcile_and_each_drop_has_its_reason(demo_lake, labels, pii_analyzer):
    raw = demo_lake.read(RAW_TABLE, "support-bot")
    result = curate_calls(raw, pii_analyzer, b"salt")
    assert result.reconciles and result.raw_rows == raw.height
    reasons = result.reason_counts
    assert reasons["human_facing"] > 0 and reasons["exact_duplicate"] > 0
    assert sum(reasons[r] for r in ("failed_error", "failed_empty", "failed_truncated")) > 0
    dropped = {row["call_id"]: row for row in result.dropped.iter_rows(named=True)}
    for call_id in result.curated["call_id"]:
        assert labels[call_id]["human_facing"] == "false" and labels[call_id]["variant"] == "ok"
    for call_id, row in dropped.items():
        label = labels[call_id]
        if row["reason"] == "human_facing":
            assert label["human_facing"] == "true"
        if row["reason"].startswith("failed"):
            assert label["variant"] == "failed"
        if row["reason"] == "exact_duplicate":
            assert row["detail"] in set(result.curated["call_id"]) | set(dropped)
    assert all(labels[c]["variant"] != "retry" for c in result.curated["call_id"])


def test_curated_calls_carry_no_structured_identifier(demo_lake, pii_analyzer):
    raw = demo_lake.read(RAW_TABLE, "travel-planner")
    result = curate_calls(raw, pii_analyzer, b"salt")
    assert result.entity_counts["EMAIL_ADDRESS"] > 0 and result.entity_counts["PERSON"] > 0
    leaks, scanned = leak_scan(result.curated, sample=10_000)
    assert scanned == result.curated.height and leaks == {}
    raw_text = "\n".join(raw["request"].to_list())
    assert sum(find_structured_identifiers(raw_text).values()) > 50  # the scan does see real identifiers
    row = result.curated.row(0, named=True)
    assert orjson.loads(row["request"])["messages"] and row["answer_kind"] in {"tool_call", "json", "text"}


def test_curate_agent_writes_tables_quarantine_and_reuses_its_cache(demo_lake, tmp_path: Path):
    raw = demo_lake.read(RAW_TABLE, "data-analyst")
    broken = raw.head(1).with_columns(pl.lit("{not json").alias("response"), pl.lit("broken-1").alias("call_id"))
    demo_lake.append(RAW_TABLE, "data-analyst", broken, 10**9, 10**9)
    config = CurationConfig(workers=1)
    cache = tmp_path / "cache.sqlite"
    first = curate_agent(demo_lake, "data-analyst", config, b"salt", tmp_path / "q", cache)
    assert first.result.reconciles and first.result.reason_counts["malformed_payload"] == 1
    assert demo_lake.read(CURATED_TABLE, "data-analyst").height == first.result.curated.height
    assert demo_lake.read(DROPPED_TABLE, "data-analyst").height == first.result.dropped.height
    quarantine = Path(first.quarantine_path).read_text()
    assert "broken-1" in quarantine and "malformed_payload" in quarantine
    assert first.leak_counts == {} and first.analysis["cached"] == 0

    second = curate_agent(demo_lake, "data-analyst", config, b"salt", tmp_path / "q", cache)
    assert second.analysis["analysed"] == 0 and second.analysis["cached"] == second.analysis["distinct"]
    assert second.result.curated.equals(first.result.curated)  # deterministic, cache or not


def test_calls_the_slm_answered_are_not_distilled_again(demo_lake, pii_analyzer):
    raw = demo_lake.read(RAW_TABLE, "data-analyst").head(40)
    routed = raw.filter(~pl.col("human_facing").fill_null(False))["call_id"].head(5).to_list()
    tags = [orjson.dumps({"route": "slm", "cluster_id": "c001"}).decode() if c in routed
            else orjson.dumps({"route": "fallback"}).decode() for c in raw["call_id"]]
    result = curate_calls(raw.with_columns(pl.Series("tags", tags)), pii_analyzer, b"salt")
    assert result.reconciles
    slm = result.dropped.filter(pl.col("reason") == "answered_by_slm")
    assert sorted(slm["call_id"]) == sorted(routed) and set(slm["stage"]) == {"filter"}
    assert not set(routed) & set(result.curated["call_id"])  # a fallback's LLM answer may still be curated
