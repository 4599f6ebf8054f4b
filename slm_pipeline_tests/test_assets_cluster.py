"""The whole graph so far (S1 -> S2 -> S3) materialised by Dagster, then exported by the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import mlflow
from typer.testing import CliRunner

from slm_pipeline.cli import app
from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.store import LogStore
from slm_pipeline.definitions import defs
from slm_pipeline.partitions import agent_partitions, split_task_cluster_key, task_cluster_partitions

AGENT_ASSETS = [dg.AssetKey(name) for name in ("raw_agent_calls", "curated_calls", "task_clusters")]


def test_task_clusters_add_partitions_log_to_mlflow_and_export(embedded_home: Path, tmp_path: Path):
    write_demo_traffic(tmp_path / "t.jsonl", 900, seed=41)
    settings = Settings()
    with LogStore(settings.resolved_database_url) as store:
        import_files(store, [tmp_path / "t.jsonl"], tmp_path / "q")
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, ["support-bot"])
        result = job.execute_in_process(instance=instance, partition_key="support-bot",
                                        asset_selection=AGENT_ASSETS, run_config={"ops": {"curated_calls": {"config": {"workers": 1}}}})
        assert result.success
        [materialization] = result.asset_materializations_for_node("task_clusters")
        meta = {k: v.value for k, v in materialization.metadata.items()}
        keys = instance.get_dynamic_partitions(task_cluster_partitions.name)
        assert sorted(keys) == sorted(meta["task_cluster_partitions"]) and len(keys) == meta["clusters"] >= 3
        assert {split_task_cluster_key(k)[0] for k in keys} == {"support-bot"}
        assert meta["cluster_map"].startswith("![task clusters of support-bot](data:image/png;base64,")
        assert "| cluster_id | label | size | trainable |" in meta["cluster_table"]
        sizes = meta["cluster_sizes"]  # the figures every clustering reports
        assert len(sizes) == meta["clusters"] and sizes == sorted(sizes, reverse=True)
        assert meta["dataset_minimum"] == 50 and meta["trainable_clusters"] == sum(s >= 50 for s in sizes)
        assert meta["trainable_share"] == sum(s for s in sizes if s >= 50) / meta["dagster/row_count"]
        assert all(c.passed for c in result.get_asset_check_evaluations())

    mlflow.set_tracking_uri(settings.resolved_mlflow_uri)
    run = mlflow.get_run(meta["mlflow_run_id"])
    assert run.data.tags["agent_id"] == "support-bot" and run.data.metrics["clusters"] == meta["clusters"]
    assert run.data.metrics["trainable_share"] == meta["trainable_share"] and "cluster_size_p50" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert artifacts == {"cluster_map.png", "clusters.csv"}
    assert str(settings.mlflow_artifact_root) in run.info.artifact_uri  # embedded: under SLM_PIPELINE_HOME

    out = tmp_path / "clusters.csv"
    exported = CliRunner().invoke(app, ["export-clusters", "--out", str(out), "--agent", "support-bot"])
    assert exported.exit_code == 0, exported.output
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["call_id", "agent_id", "cluster_id", "cluster_label"]
    assert len(rows) == meta["dagster/row_count"]
    assert sum(1 for r in rows if r["cluster_id"]) >= 0.9 * len(rows)
