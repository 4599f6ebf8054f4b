"""PII canaries: seed 200+ unique values of each kind of personal data into demo traffic, run the whole pipeline
(S1 import into an encrypted Postgres log store, collect, curate, cluster for every agent; S4-S6 for one task
cluster, with a real SmolLM2 fine-tune; the routing table and the report), then scan everything it left behind.
Zero canaries may appear outside the encrypted raw store (the log store and the raw lake, both sealed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from slm_pipeline.core.crypto import new_key
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.store import LogStore
from slm_pipeline.runner import run_pipeline
from slm_pipeline_tests.canaries import TYPES, Scanner, canary_values, read_jsonl, seed_canaries, write_jsonl

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "pii_canaries"
PER_TYPE = 200
CAPS = {  # the demo's caps: a real but short fine-tune and evaluation
    "slm_candidates": {"screen_examples": 4},
    "finetuned_slm": {"max_steps": 6, "batch_size": 2, "eval_steps": 6, "save_steps": 3, "evaluate_test": True},
    "slm_evaluation": {"max_test_calls": 6},
}


@pytest.fixture
def canary_home(tmp_path: Path, make_pg_database, monkeypatch: pytest.MonkeyPatch) -> dict:
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # Postgres storage, as in production
    env = {"SLM_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "DAGSTER_POSTGRES_URL": make_pg_database("canary_dagster"),
           "SLM_PIPELINE_DATABASE_URL": make_pg_database("canary_logstore"),
           "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("canary1")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {**env, "home": home, "dagster_home": dagster_home, "tmp": tmp_path}


def test_no_canary_leaves_the_encrypted_raw_store(canary_home: dict, capfd: pytest.CaptureFixture):
    tmp = canary_home["tmp"]
    write_demo_traffic(tmp / "demo.jsonl", calls=900, seed=11)
    records = read_jsonl(tmp / "demo.jsonl")
    values = canary_values(PER_TYPE)
    seeded = seed_canaries(records, values)
    write_jsonl(tmp / "traffic.jsonl", records)
    assert all(len(values[kind]) >= PER_TYPE for kind in TYPES) and seeded.in_arguments["iban"] > 0

    settings = Settings()
    with LogStore(settings.resolved_database_url) as store:
        imported = import_files(store, [tmp / "traffic.jsonl"], settings.quarantine_dir)
        agents = store.agents()
    assert imported.imported > 800 and imported.reconciles

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = run_pipeline(instance, agents, clusters_per_agent=0, asset_config=CAPS)  # S1-S3, every agent
        runs += run_pipeline(instance, ["support-bot"], selection="key:task_datasets+", asset_config=CAPS,
                             clusters_per_agent=1)  # S4-S6 for its largest cluster, the routing table, the report
    failed = [(r.agent_id, r.error) for r in runs if not r.success]
    assert not failed, failed
    materialized = {name for r in runs for name in r.materialized}
    assert {"curated_calls", "task_clusters", "task_datasets", "slm_candidates", "finetuned_slm", "slm_evaluation",
            "routing_table", "conversion_report"} <= materialized, materialized
    home = Path(canary_home["SLM_PIPELINE_HOME"])
    assert list((home / "models").rglob("adapter_model.safetensors")), "the fine-tune left no adapter to scan"
    assert list((home / "models").rglob("checkpoint-*")), "the fine-tune left no checkpoint to scan"

    # The scan: every file of the pipeline's home (lake Parquet cell by cell, the MLflow tracking database row by
    # row, MLflow artifacts, datasets, checkpoints, adapters, tokenizer files, quarantine and log files) and of
    # the Dagster home (compute logs); every row of the Dagster database (event log, asset metadata, runs); the
    # log store's tags; and what the run printed.
    scanner = Scanner(values)
    scanner.scan_files(home, exclude=[Path(os.environ["SLM_PIPELINE_MODEL_CACHE"])])
    scanner.scan_files(canary_home["dagster_home"])
    scanner.scan_postgres(canary_home["DAGSTER_POSTGRES_URL"], "dagster database")
    engine = sa.create_engine(canary_home["SLM_PIPELINE_DATABASE_URL"])
    with engine.connect() as connection:
        tags = connection.execute(sa.text("SELECT coalesce(tags::text, '') FROM agent_calls")).scalars().all()
        payloads = connection.execute(sa.text("SELECT request_payload, response_payload FROM agent_calls")).all()
    engine.dispose()
    scanner.scan_text("\n".join(tags), "log store tags")
    captured = capfd.readouterr()
    scanner.scan_text(captured.out + captured.err, "console output")

    report = scanner.report
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    summary = {"seeded": {kind: len(v) for kind, v in values.items()}, "calls_with_canaries": seeded.calls,
               "canaries_in_tool_arguments": dict(seeded.in_arguments), **report.summary()}
    (ARTIFACTS / "report.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))  # the test reports what it scanned

    # The encrypted raw store itself: sealed, so not one canary is readable in its bytes either.
    sealed = b"\n".join(bytes(p) for row in payloads for p in row)
    assert not [c for kinds in values.values() for c in kinds if c.encode() in sealed]
    assert report.scanned["parquet cells"] > 10_000 and report.scanned["dagster database rows"] > 100
    assert report.scanned["sqlite rows"] > 0 and report.scanned["files"] > 20
    assert not report.findings, "canaries outside the encrypted raw store:\n" + "\n".join(
        f"  {f.kind} {f.canary!r} in {f.where}" for f in report.findings[:40])
