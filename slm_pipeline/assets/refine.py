"""S6 refine: `slm_evaluation` (with the blocking `promotion_rule` check), `slm_champion`, `routing_table`.

The evaluation scores the zero-shot base, every fine-tuned candidate and the current champion on
the cluster's held-out test split. The check blocks `slm_champion` unless the best candidate
passes the promotion rule, and says why; `slm_champion` moves the MLflow alias `champion`; the
`routing_table` maps every current cluster to its champion or to the LLM.
"""

import json
import os
from typing import Optional

import dagster as dg
import polars as pl
from pydantic import Field

from slm_pipeline.assets.finetune import finetuned_slm
from slm_pipeline.core.finetune import registered_model_name
from slm_pipeline.core.k8s_gpu import gpu_step_tags
from slm_pipeline.core.markdown import frame_to_markdown, png_markdown
from slm_pipeline.core.refine import registry
from slm_pipeline.core.refine.evaluation import (
    EXPERIMENT,
    EvaluationConfig,
    PriceTable,
    comparison_png,
    evaluate_cluster,
    load_evaluation,
    log_evaluation,
    models_to_evaluate,
    record_evaluation,
    teacher_tokens,
)
from slm_pipeline.core.refine.judge import JudgeConfig
from slm_pipeline.core.refine.promotion import PromotionConfig
from slm_pipeline.core.refine.report import REPORT_TABLE, build_report, report_markdown, routable_png
from slm_pipeline.core.refine.retraining import live_stats
from slm_pipeline.core.refine.routing import (
    RoutingThresholds,
    build_routing_table,
    publish_routing_table,
    retire_stale_champions,
)
from slm_pipeline.core.settings import Settings
from slm_pipeline.partitions import agent_partitions, split_task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource

PROMOTION_RULE = "promotion_rule"
_TABLE_COLUMNS = ("role", "model", "agreement", "function_name_accuracy", "function_name_and_args_accuracy",
                  "schema_valid_rate", "exact_match", "token_f1", "json_valid_rate", "latency_ms_p50",
                  "tokens_per_s", "cost_per_1k_calls_usd", "teacher_cost_per_1k_calls_usd", "judge_agreement")


class EvaluationRunConfig(dg.Config):
    """S6 evaluation and promotion rule (see README, "S6 refine")."""

    max_test_calls: Optional[int] = Field(None, description="Evaluate on the first N test calls (None: all).")
    text_agreement_f1: float = Field(0.8, description="Free-text answers agree with the teacher at this token F1.")
    threshold: float = Field(PromotionConfig.threshold, description="Minimum agreement with the teacher.")
    min_test_calls: int = Field(PromotionConfig.min_test_calls, description="Minimum test calls scored.")
    confidence: float = Field(PromotionConfig.confidence, description="Confidence of the Wilson bound.")
    min_lower_bound: float = Field(PromotionConfig.min_lower_bound,
                                   description="Minimum Wilson lower bound of the agreement.")
    teacher_input_per_mtok: float = Field(PriceTable.teacher_input_per_mtok, description="USD per 1M prompt tokens.")
    teacher_output_per_mtok: float = Field(PriceTable.teacher_output_per_mtok,
                                           description="USD per 1M answer tokens.")
    slm_machine_per_hour: float = Field(PriceTable.slm_machine_per_hour,
                                        description="USD per hour of the machine serving the SLM.")
    judge_url: Optional[str] = Field(None, description="OpenAI-compatible base URL (with /v1) of an LLM judge; "
                                     "its key from SLM_PIPELINE_JUDGE_API_KEY. None: no judge.")
    judge_model: str = Field(JudgeConfig.model, description="The judge's model name.")
    judge_max_calls: int = Field(JudgeConfig.max_calls, description="Calls judged per model evaluated.")
    log_to_mlflow: bool = True

    def to_core(self) -> EvaluationConfig:
        return EvaluationConfig(
            self.max_test_calls, self.text_agreement_f1,
            PriceTable(self.teacher_input_per_mtok, self.teacher_output_per_mtok, self.slm_machine_per_hour),
            PromotionConfig(self.threshold, self.min_test_calls, self.confidence, self.min_lower_bound),
            JudgeConfig(self.judge_url, self.judge_model, self.judge_max_calls))


@dg.asset(
    partitions_def=task_cluster_partitions,
    deps=[finetuned_slm],
    group_name="s6_refine",
    kinds={"pytorch", "mlflow"},
    pool="gpu",  # it runs the models, like training
    op_tags=gpu_step_tags(),  # a GPU pod on Kubernetes, like training (core/k8s_gpu.py)
    description=(
        "The zero-shot base, each fine-tuned candidate and the current champion answering the cluster's held-out "
        "test calls one by one: agreement with the teacher (function name, name and arguments, schema validity; "
        "JSON validity; exact match, token F1), latency, tokens/s and cost per 1,000 calls against the teacher. "
        "One MLflow run per model, side by side."
    ),
    check_specs=[dg.AssetCheckSpec(
        PROMOTION_RULE, asset="slm_evaluation", blocking=True,
        description="The best candidate agrees with the teacher at or above the threshold, with a Wilson lower "
                    "bound on enough test calls, and beats the champion. Blocks slm_champion otherwise.")],
)
def slm_evaluation(context: dg.AssetExecutionContext, config: EvaluationRunConfig, lake: LakeResource):
    agent_id, cluster_id = split_task_cluster_key(context.partition_key)
    settings, the_lake = Settings(), lake.open()
    models = models_to_evaluate(the_lake, settings, agent_id, cluster_id)
    if not models:
        reason = "no fine-tuned candidate for this cluster (see finetuned_slm)"
        yield dg.MaterializeResult(metadata={"status": "nothing_to_evaluate", "reason": reason})
        yield dg.AssetCheckResult(check_name=PROMOTION_RULE, passed=False, description=reason)
        return
    context.log.info(f"evaluating {', '.join(m.label for m in models)} on the test split")
    core = config.to_core()

    def progress(label: str, done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            context.log.info(f"{label}: {done}/{total} test calls")

    evaluation = evaluate_cluster(the_lake, settings, agent_id, cluster_id, models, core,
                                  teacher_tokens=teacher_tokens(the_lake, agent_id, cluster_id), progress=progress)
    live = live_stats(the_lake, agent_id).get(cluster_id)
    if live is not None:  # the gateway's view of the serving champion flows into this evaluation
        evaluation.live = {"routed_calls": float(live.routed), "fallback_rate": live.fallback_rate,
                           "shadowed_calls": float(live.shadowed), "disagreement_rate": live.disagreement_rate}
    if config.log_to_mlflow:
        log_evaluation(evaluation, settings, context.run.run_id)
    summary = record_evaluation(the_lake, evaluation)
    table = evaluation.table()
    shown = table.select([c for c in _TABLE_COLUMNS if c in table.columns])
    png = comparison_png(evaluation, core.promotion.threshold)
    best = evaluation.best
    metadata = {
        "status": "promotable" if evaluation.decision.promote else "not_promotable",
        "decision": evaluation.decision.summary(),
        "main_metric": evaluation.main_metric,
        "models": dg.MetadataValue.md(frame_to_markdown(shown)),
        "comparison": dg.MetadataValue.md(png_markdown(png, "comparison")),
        "best_candidate": best.model.label if best else "",
        "best_agreement": (best.metrics.get("agreement") if best else None),
        "test_calls": len(best.scores) if best else 0,
        "mlflow_experiment": EXPERIMENT,
        "mlflow_run_ids": dg.MetadataValue.json(evaluation.mlflow_run_ids),
        "live": dg.MetadataValue.json(evaluation.live) if evaluation.live else None,
        "misses": dg.MetadataValue.json([{"call_id": s.call_id, "why": s.error}
                                         for s in (best.scores if best else []) if not s.agreement][:10]),
    }
    yield dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None})
    yield dg.AssetCheckResult(
        check_name=PROMOTION_RULE, passed=bool(summary["promote"]), severity=dg.AssetCheckSeverity.ERROR,
        description=evaluation.decision.summary(),
        metadata={"lower_bound": evaluation.decision.lower_bound or 0.0, "candidate": best.model.label if best else ""})


@dg.asset(
    partitions_def=task_cluster_partitions,
    deps=[slm_evaluation],
    group_name="s6_refine",
    kinds={"mlflow"},
    description=(
        "Promotes the evaluated best candidate: the MLflow alias `champion` moves to its model version, the "
        "previous champion keeps `previous-champion` for rollback. Runs only when the promotion_rule check passed."
    ),
)
def slm_champion(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    agent_id, cluster_id = split_task_cluster_key(context.partition_key)
    settings = Settings()
    evaluation = load_evaluation(lake.open(), agent_id, cluster_id)
    if evaluation is None or not evaluation["promote"] or not evaluation["best"]:
        raise dg.Failure(description=f"{context.partition_key} has no promotable evaluation; materialise "
                                     "slm_evaluation first (its promotion_rule check says why)")
    best = evaluation["best"]
    name = registered_model_name(agent_id, cluster_id)
    if best.get("registered_model") != name or not best.get("version"):
        raise dg.Failure(description=f"{best['label']} has no registered model version of {name} to promote "
                                     "(train with register_model: true)")
    previous = registry.promote(name, best["version"], evaluation["decision"], settings)
    context.log.info(f"{name} v{best['version']} is the champion" +
                     (f"; v{previous.version} kept as previous-champion" if previous else ""))
    return dg.MaterializeResult(metadata={
        "registered_model": name, "champion_version": best["version"],
        "previous_champion": previous.version if previous else "",
        "agreement": best["metrics"].get("agreement"), "reason": evaluation["decision"],
        "evaluation_run_id": best.get("evaluation_run_id") or "",
    })


class RoutingRunConfig(dg.Config):
    min_assignment_confidence: float = Field(RoutingThresholds.min_assignment_confidence,
                                             description="S3 assignment confidence needed to route to an SLM.")
    serving_url: Optional[str] = Field(None, description="The SLM server's base URL "
                                       "(default: SLM_PIPELINE_SERVING_URL, else none yet).")


@dg.asset(
    deps=[dg.AssetDep(slm_champion, partition_mapping=dg.AllPartitionMapping())],
    group_name="s6_refine",
    kinds={"json"},
    description=(
        "Every current task cluster -> its champion SLM (model version, serving name, task prompt) or the LLM "
        "and why, with the routing thresholds. Versioned: a new version only when a route changes. The gateway "
        "reads current.json."
    ),
)
def routing_table(context: dg.AssetExecutionContext, config: RoutingRunConfig, lake: LakeResource
                  ) -> dg.MaterializeResult:
    the_lake = lake.open()
    agents = sorted(context.instance.get_dynamic_partitions(agent_partitions.name))
    retired = retire_stale_champions(the_lake, Settings(), agents)
    for entry in retired:
        context.log.info(f"retired the champion v{entry['version']} of {entry['agent_id']}:{entry['cluster_id']}: "
                         f"{entry['reason']}")
    table = build_routing_table(
        the_lake, Settings(), agents, thresholds=RoutingThresholds(config.min_assignment_confidence),
        serving_url=config.serving_url or os.environ.get("SLM_PIPELINE_SERVING_URL"))
    published, changed = publish_routing_table(the_lake, table)
    rows = [{"cluster": f"{r.agent_id}:{r.cluster_id}", "label": r.label, "route": r.route,
             "model": f"{r.registered_model} v{r.version}" if r.version else "", "reason": r.reason}
            for r in published.routes]
    return dg.MaterializeResult(metadata={
        "version": published.version, "changed": changed, "fingerprint": published.fingerprint,
        "routes_to_slm": sum(r.route == "slm" for r in published.routes), "routes": len(published.routes),
        "retired_champions": dg.MetadataValue.md(frame_to_markdown(pl.DataFrame(retired)) if retired else "(none)"),
        "table": dg.MetadataValue.md(frame_to_markdown(pl.DataFrame(rows)) if rows else "(no clusters)"),
        "current": dg.MetadataValue.json(json.loads(published.to_json())),
    })


@dg.asset(
    deps=[routing_table],
    group_name="s6_refine",
    kinds={"json", "markdown"},
    description=(
        "Per agent: calls, curated calls, task clusters, promoted clusters, the share of calls routable to SLMs "
        "and estimated savings; per cluster: metrics, status (promoted, training, on the LLM and why) and MLflow "
        "runs. Also `slm-pipeline report [--json]`."
    ),
)
def conversion_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    the_lake = lake.open()
    agents = sorted(context.instance.get_dynamic_partitions(agent_partitions.name))
    report = build_report(the_lake, Settings(), agents)
    markdown = report_markdown(report)
    the_lake.put_file(REPORT_TABLE, "all", "report.json", json.dumps(report, indent=2, default=str).encode())
    the_lake.put_file(REPORT_TABLE, "all", "report.md", markdown.encode())
    png = routable_png(report)
    calls = sum(a["curated"] for a in report["agents"])
    routable = sum(a["routable_calls"] for a in report["agents"])
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(markdown),
        "routable_share": dg.MetadataValue.md(png_markdown(png, "routable share")),
        "routable_fraction": routable / calls if calls else 0.0,
        "promoted_clusters": sum(a["promoted_clusters"] for a in report["agents"]),
        "routing_table_version": report["routing_table_version"] or 0,
    })
