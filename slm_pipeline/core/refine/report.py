"""The conversion report: how much of each agent's traffic has moved from the LLM to SLMs.

Per agent: calls logged (S1), curated calls (S2), task clusters (S3), promoted clusters, the
share of curated calls that fall in promoted clusters (`routable_fraction`: what the gateway can
send to an SLM; the paper's case studies estimate 40-70 %), and estimated savings.
Per cluster: size, status and why, the selected base model, the base and fine-tuned metrics of
its latest evaluation, and its MLflow runs.

Statuses: `promoted` (routed to its champion), `not_promoted` (evaluated; the promotion rule says
why), `training` (a fine-tuning run is in progress), `not_trained` (no fine-tuned model yet),
`stays_on_llm` (too little data, e.g. "42 calls; 50 needed" for a cluster under the dataset minimum,
or no candidate). Per agent also the clusters that reach the dataset minimum (`trainable_clusters`) and
the share of curated calls in them (`trainable_share`: the most S5 can ever convert).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from slm_pipeline.core.cluster.pipeline import ASSIGNMENTS_TABLE, CLUSTERS_TABLE
from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.curate.pipeline import CURATED_TABLE
from slm_pipeline.core.finetune import EXPERIMENT as FINETUNE_EXPERIMENT
from slm_pipeline.core.finetune import FINETUNED_TABLE
from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.refine.evaluation import load_evaluation
from slm_pipeline.core.refine.routing import load_routing_table
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import DATASETS_TABLE, DatasetConfig

REPORT_TABLE = "conversion_report"
_METRICS = ("agreement", "function_name_accuracy", "function_name_and_args_accuracy", "schema_valid_rate",
            "json_valid_rate", "exact_match", "token_f1", "embedding_similarity", "latency_ms_p50", "tokens_per_s",
            "cost_per_1k_calls_usd", "teacher_cost_per_1k_calls_usd")


def _count(lake: Lake, table: str, agent_id: str) -> int:
    frame = lake.read(table, agent_id, columns=["call_id"])
    return 0 if frame is None else frame.height


def _training_clusters(settings: Settings) -> set[tuple[str, str]]:
    """(agent, cluster) of fine-tuning runs still RUNNING in MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.resolved_mlflow_uri)
    experiment = client.get_experiment_by_name(FINETUNE_EXPERIMENT)
    if experiment is None:
        return set()
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return {(r.data.tags.get("agent_id", ""), r.data.tags.get("cluster_id", "")) for r in runs}


def _metrics(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if not entry:
        return None
    return {k: entry["metrics"].get(k) for k in _METRICS if entry["metrics"].get(k) is not None}


def _teacher_latency(lake: Lake, agent_id: str) -> dict[str, float]:
    """Median logged LLM latency (ms) of each cluster's curated calls."""
    curated = lake.read(CURATED_TABLE, agent_id, columns=["call_id", "latency_ms"])
    assigned = lake.read(ASSIGNMENTS_TABLE, agent_id, columns=["call_id", "cluster_id"])
    if curated is None or assigned is None:
        return {}
    medians = (curated.join(assigned, on="call_id").group_by("cluster_id")
               .agg(pl.col("latency_ms").median()).drop_nulls())
    return dict(zip(medians["cluster_id"].to_list(), medians["latency_ms"].to_list()))


def _cluster_entry(lake: Lake, agent_id: str, cluster: dict[str, Any], route: Any, training: bool,
                   teacher_latency: float | None, minimum: int) -> dict[str, Any]:
    cluster_id = cluster["cluster_id"]
    partition = cluster_partition(agent_id, cluster_id)
    meta_raw = lake.get_file(DATASETS_TABLE, partition, "dataset.json")
    meta = json.loads(meta_raw) if meta_raw else None
    finetuned_raw = lake.get_file(FINETUNED_TABLE, partition, "models.json")
    finetuned = json.loads(finetuned_raw)["models"] if finetuned_raw else []
    training_failures = json.loads(finetuned_raw).get("failures", []) if finetuned_raw else []
    evaluation = load_evaluation(lake, agent_id, cluster_id)
    if route is not None and route.route == "slm":
        status, reason = "promoted", route.reason
    elif training:
        status, reason = "training", "a fine-tuning run is in progress"
    elif meta is None and int(cluster["size"]) < minimum:
        status, reason = "stays_on_llm", (f"{int(cluster['size'])} calls; {minimum} needed (too small to train: it "
                                          "stays on the LLM until more traffic arrives)")
    elif meta is None:
        status, reason = "not_trained", "no task dataset yet"
    elif meta.get("status") != "ready":
        status, reason = "stays_on_llm", meta.get("reason", "")
    elif evaluation is not None:
        status, reason = "not_promoted", evaluation.get("decision") or ""
    elif finetuned_raw is not None and not finetuned and training_failures:
        first = training_failures[0]
        status, reason = "stays_on_llm", f"training {first['base_model']} {first['status']}: {first['message']}"
    elif finetuned_raw is not None and not finetuned:
        status, reason = "stays_on_llm", "no candidate SLM was selected or trained (see slm_candidates)"
    else:
        status, reason = "not_trained", "no fine-tuned model yet"
    best = (evaluation or {}).get("champion") if status == "promoted" else None
    best = best or (evaluation or {}).get("best")
    selected = (best or {}).get("base_model") or (finetuned[0]["base_model"] if finetuned else None)
    slm_latency = ((best or {}).get("metrics") or {}).get("latency_ms_p50")
    return {
        "agent_id": agent_id, "cluster_id": cluster_id, "label": cluster["label"], "size": int(cluster["size"]),
        "trainable": int(cluster["size"]) >= minimum, "status": status, "reason": reason, "selected_model": selected,
        "model_version": (best or {}).get("version"),
        "metrics": {"base": _metrics((evaluation or {}).get("base")), "finetuned": _metrics(best)},
        "mlflow_run_id": (best or {}).get("training_run_id") or (finetuned[0].get("mlflow_run_id") if finetuned
                                                                  else None),
        "evaluation_run_id": (best or {}).get("evaluation_run_id"),
        "teacher_latency_ms_p50": teacher_latency, "slm_latency_ms_p50": slm_latency,
    }


def build_report(lake: Lake, settings: Settings, agent_ids: list[str]) -> dict[str, Any]:
    """The report as the JSON of `slm-pipeline report --json` (see the module docstring)."""
    table = load_routing_table(lake)
    training = _training_clusters(settings)
    minimum = DatasetConfig().min_examples
    agents, clusters = [], []
    for agent_id in agent_ids:
        frame = lake.read(CLUSTERS_TABLE, agent_id, columns=["cluster_id", "label", "size"])
        latency = _teacher_latency(lake, agent_id)
        entries = [_cluster_entry(lake, agent_id, c, table.route_for(agent_id, c["cluster_id"]) if table else None,
                                  (agent_id, c["cluster_id"]) in training, latency.get(c["cluster_id"]), minimum)
                   for c in ([] if frame is None else frame.iter_rows(named=True))]
        curated = _count(lake, CURATED_TABLE, agent_id)
        promoted = [e for e in entries if e["status"] == "promoted"]
        routable = sum(e["size"] for e in promoted)
        saving = 0.0
        for entry in promoted:
            finetuned = entry["metrics"]["finetuned"] or {}
            if finetuned.get("teacher_cost_per_1k_calls_usd") is not None and finetuned.get("cost_per_1k_calls_usd") \
                    is not None:
                saving += entry["size"] / 1000 * (finetuned["teacher_cost_per_1k_calls_usd"]
                                                  - finetuned["cost_per_1k_calls_usd"])
        latency_saved = [e["teacher_latency_ms_p50"] - e["slm_latency_ms_p50"] for e in promoted
                         if e["teacher_latency_ms_p50"] is not None and e["slm_latency_ms_p50"] is not None]
        agents.append({
            "agent_id": agent_id, "calls": _count(lake, RAW_TABLE, agent_id), "curated": curated,
            "clusters": len(entries), "promoted_clusters": len(promoted),
            "trainable_clusters": sum(e["trainable"] for e in entries),
            "trainable_share": sum(e["size"] for e in entries if e["trainable"]) / curated if curated else 0.0,
            "routable_fraction": routable / curated if curated else 0.0, "routable_calls": routable,
            "estimated_cost_saved_usd": saving,
            "estimated_latency_saved_ms_p50": sum(latency_saved) / len(latency_saved) if latency_saved else None,
        })
        clusters.extend(entries)
    return {"routing_table_version": table.version if table else None, "agents": agents, "clusters": clusters}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (Dagster metadata, the CLI)."""
    lines = ["## Agents", "", "| agent | calls | curated | clusters | trainable (calls in them) | promoted | routable | "
             "cost saved (USD) | latency saved p50 (ms) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report["agents"]:
        lines.append(f"| {a['agent_id']} | {a['calls']:,} | {a['curated']:,} | {a['clusters']} | "
                     f"{a['trainable_clusters']} ({a['trainable_share']:.1%}) | "
                     f"{a['promoted_clusters']} | {a['routable_fraction']:.1%} | {_fmt(a['estimated_cost_saved_usd'], 4)} "
                     f"| {_fmt(a['estimated_latency_saved_ms_p50'], 0)} |")
    lines += ["", "## Task clusters", "", "| cluster | label | size | status | model | base agreement | "
              "fine-tuned agreement | why | MLflow run |", "|---|---|---:|---|---|---:|---:|---|---|"]
    for c in report["clusters"]:
        base, tuned = c["metrics"]["base"] or {}, c["metrics"]["finetuned"] or {}
        reason = c["reason"].replace("|", "/")[:160]
        lines.append(f"| {c['agent_id']}:{c['cluster_id']} | {c['label'][:40]} | {c['size']} | {c['status']} | "
                     f"{c['selected_model'] or ''} | {_fmt(base.get('agreement'))} | {_fmt(tuned.get('agreement'))} | "
                     f"{reason} | {c['mlflow_run_id'] or ''} |")
    return "\n".join(lines) + "\n"


def routable_png(report: dict[str, Any]) -> bytes:
    """Share of each agent's curated calls routable to SLMs, against the paper's 40-70 % estimate."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [a["agent_id"] for a in report["agents"]]
    shares = [a["routable_fraction"] for a in report["agents"]]
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    axis.barh(names, shares, color="#55a868")
    axis.axvspan(0.4, 0.7, color="grey", alpha=0.15, label="paper's estimate (40-70 %)")
    axis.set_xlim(0, 1)
    axis.set_xlabel("curated calls routable to an SLM")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
