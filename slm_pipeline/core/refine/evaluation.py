"""S6 evaluation: the zero-shot base, each fine-tuned candidate and the champion, on the test split.

Dagster-free (the `slm_evaluation` asset, the report and the benchmarks call it):

    models = models_to_evaluate(lake, settings, agent, cluster)
    result = evaluate_cluster(lake, settings, agent, cluster, models, EvaluationConfig())
    result.decision.promote, result.table()

Every model answers the same held-out calls one at a time, as the SLM server would, so the
latency and tokens/s are per call. The cost per 1,000 calls compares the teacher's token prices
with the time the SLM takes on the serving machine at its hourly price (`PriceTable`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from slm_pipeline.core.chat import latest_user_turn
from slm_pipeline.core.evaluate import render_prompt
from slm_pipeline.core.finetune import FINETUNED_TABLE, registered_model_name
from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.models.catalogue import availability, load_catalogue
from slm_pipeline.core.models.loading import load_model, weights_folder
from slm_pipeline.core.refine import registry
from slm_pipeline.core.refine.judge import JudgeConfig, judge
from slm_pipeline.core.refine.metrics import MAIN_METRIC, CallScore, score_call, summarise, tool_schemas
from slm_pipeline.core.refine.promotion import Decision, PromotionConfig, Score, decide
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.task_data import load_cluster_dataset

EVALUATIONS_TABLE = "slm_evaluations"
EXPERIMENT = "slm_pipeline/slm_evaluation"
Role = Literal["base", "candidate", "champion"]


@dataclass(frozen=True)
class PriceTable:
    """Prices for the cost estimate, in USD. Defaults: a GPT-4o-class teacher (list prices, 2025)
    and a small CPU machine serving the SLM; set your own in the asset's config."""

    teacher_input_per_mtok: float = 2.50
    teacher_output_per_mtok: float = 10.00
    slm_machine_per_hour: float = 0.10


@dataclass(frozen=True)
class EvaluationConfig:
    max_test_calls: int | None = None  # evaluate on the first N test calls (None: all)
    text_agreement_f1: float = 0.8  # free text agrees with the teacher at this token F1 or above
    prices: PriceTable = PriceTable()
    promotion: PromotionConfig = PromotionConfig()
    judge: JudgeConfig = JudgeConfig()  # an optional LLM judge (no URL: none)


@dataclass(frozen=True)
class ModelUnderTest:
    role: Role
    label: str  # how tables and MLflow name it
    base_model: str
    adapter: Path | None = None  # None: the base model as shipped
    registered_model: str | None = None
    version: str | None = None
    training_run_id: str | None = None


@dataclass
class ModelResult:
    model: ModelUnderTest
    metrics: dict[str, float | None]
    scores: list[CallScore]
    load_seconds: float = 0.0

    @property
    def score(self) -> Score:
        return Score(self.model.label, int(self.metrics.get("agreements") or 0), len(self.scores))


@dataclass
class ClusterEvaluation:
    agent_id: str
    cluster_id: str
    answer_kind: str
    main_metric: str
    results: list[ModelResult]
    decision: Decision
    best: ModelResult | None  # the best fine-tuned candidate (what promotion considers)
    champion: ModelResult | None
    mlflow_run_ids: dict[str, str] = field(default_factory=dict)  # label -> evaluation run
    # What the gateway saw of the serving champion since it was promoted (S6 live rates, see retraining.py).
    live: dict[str, float | None] | None = None

    def table(self) -> pl.DataFrame:
        rows = []
        for result in self.results:
            rows.append({"role": result.model.role, "model": result.model.label,
                         "version": result.model.version or "", **{k: v for k, v in result.metrics.items()}})
        return pl.DataFrame(rows)

    def summary(self) -> dict[str, Any]:
        """What the routing table and the report read (`evaluation.json`)."""
        def entry(result: ModelResult | None) -> dict[str, Any] | None:
            if result is None:
                return None
            return {"label": result.model.label, "role": result.model.role, "base_model": result.model.base_model,
                    "registered_model": result.model.registered_model, "version": result.model.version,
                    "training_run_id": result.model.training_run_id,
                    "evaluation_run_id": self.mlflow_run_ids.get(result.model.label), "metrics": result.metrics}

        base = next((r for r in self.results if r.model.role == "base"), None)
        return {"agent_id": self.agent_id, "cluster_id": self.cluster_id, "answer_kind": self.answer_kind,
                "main_metric": self.main_metric, "promote": self.decision.promote,
                "decision": self.decision.summary(), "lower_bound": self.decision.lower_bound,
                "base": entry(base), "best": entry(self.best), "champion": entry(self.champion),
                "models": [entry(r) for r in self.results], "live": self.live}


def models_to_evaluate(lake: Lake, settings: Settings, agent_id: str, cluster_id: str) -> list[ModelUnderTest]:
    """The zero-shot base of the best candidate, every fine-tuned candidate, and the current champion."""
    raw = lake.get_file(FINETUNED_TABLE, cluster_partition(agent_id, cluster_id), "models.json")
    finetuned = json.loads(raw)["models"] if raw else []
    models: list[ModelUnderTest] = []
    for item in finetuned:
        if not item.get("adapter"):
            continue
        label = (f"{item['registered_model']} v{item['model_version']}" if item.get("model_version")
                 else f"{item['base_model']} (fine-tuned)")
        version = str(item["model_version"]) if item.get("model_version") is not None else None
        models.append(ModelUnderTest("candidate", label, item["base_model"], Path(item["adapter"]),
                                     item.get("registered_model"), version, item.get("mlflow_run_id")))
    champion = registry.get_alias(registered_model_name(agent_id, cluster_id), settings=settings)
    if champion is not None and not any(m.version == champion.version for m in models):
        models.append(ModelUnderTest("champion", f"{champion.registered_model} v{champion.version}",
                                     champion.base_model or "", registry.download_adapter(champion, settings),
                                     champion.registered_model, champion.version, champion.run_id))
    base = models[0].base_model if models else None
    if base:
        models.insert(0, ModelUnderTest("base", f"{base} (zero-shot)", base))
    return models


def answer_calls(model: Any, tokenizer: Any, examples: pl.DataFrame, max_new_tokens: int,
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[str, float, int]]:
    """Each call answered on its own, greedily: (text, milliseconds, new tokens)."""
    import torch

    answers = []
    for index, messages in enumerate(examples["messages"]):
        prompt = render_prompt(tokenizer, json.loads(messages))
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        started = time.perf_counter()
        with torch.inference_mode():
            tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        elapsed = (time.perf_counter() - started) * 1000
        new = tokens[0, inputs["input_ids"].shape[1]:]
        answers.append((tokenizer.decode(new, skip_special_tokens=True), elapsed, int(new.shape[0])))
        if progress:
            progress(index + 1, examples.height)
    return answers


def _cost(metrics: dict[str, float | None], prices: PriceTable, teacher_tokens: tuple[float, float]
          ) -> dict[str, float | None]:
    prompt, answer = teacher_tokens
    teacher = 1000 * (prompt * prices.teacher_input_per_mtok + answer * prices.teacher_output_per_mtok) / 1e6
    latency = metrics.get("latency_ms_p50")
    slm = 1000 * (latency / 1000) / 3600 * prices.slm_machine_per_hour if latency is not None else None
    return {"cost_per_1k_calls_usd": slm, "teacher_cost_per_1k_calls_usd": teacher,
            "cost_ratio_to_teacher": slm / teacher if slm is not None and teacher else None}


def evaluate_model(model_under_test: ModelUnderTest, examples: pl.DataFrame, schemas: dict[str, Any],
                   settings: Settings, config: EvaluationConfig, teacher_tokens: tuple[float, float],
                   embedder: Any = None, progress: Callable[[int, int], None] | None = None) -> ModelResult:
    entry = load_catalogue(settings.catalogue).get(model_under_test.base_model)
    folder = weights_folder(availability(entry), settings.model_cache_dir)
    model, tokenizer = load_model(folder, adapter=model_under_test.adapter)
    longest = max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in examples["completion"])
    answers = answer_calls(model, tokenizer, examples, int(longest * 1.5) + 8, progress)
    scores = [score_call(row["call_id"], text, row["completion"], row["answer_kind"], schemas,
                         text_agreement_f1=config.text_agreement_f1, latency_ms=ms, output_tokens=tokens)
              for row, (text, ms, tokens) in zip(examples.iter_rows(named=True), answers)]
    kind = examples["answer_kind"][0]
    judge_errors = 0
    if config.judge.url:
        for index, row in enumerate(examples.head(config.judge.max_calls).iter_rows(named=True)):
            turn = latest_user_turn({"messages": json.loads(row["messages"])})
            verdict = judge(config.judge, turn, row["completion"], answers[index][0])
            judge_errors += verdict is None
            scores[index] = replace(scores[index], judged=verdict)
    if kind == "text" and embedder is not None:
        import numpy as np

        got = embedder.encode([a[0] for a in answers])
        want = embedder.encode(examples["completion"].to_list())
        similarity = (np.asarray(got) * np.asarray(want)).sum(axis=1)
        scores = [replace(s, similarity=float(v)) for s, v in zip(scores, similarity)]
    metrics = summarise(scores, kind)
    if config.judge.url:
        metrics["judge_errors"] = float(judge_errors)
    metrics |= _cost(metrics, config.prices, teacher_tokens)
    return ModelResult(model_under_test, metrics, scores, getattr(model, "load_seconds", 0.0))


def evaluate_cluster(lake: Lake, settings: Settings, agent_id: str, cluster_id: str,
                     models: list[ModelUnderTest], config: EvaluationConfig = EvaluationConfig(), *,
                     teacher_tokens: tuple[float, float] = (0.0, 0.0), embedder: Any = None,
                     on_model: Callable[[ModelResult], None] | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> ClusterEvaluation:
    """Score `models` on the cluster's test split and decide on promotion."""
    examples, meta = load_cluster_dataset(lake, agent_id, cluster_id)
    test = examples.filter(pl.col("split") == "test").sort("call_id")
    if config.max_test_calls is not None:
        test = test.head(config.max_test_calls)
    kind = test["answer_kind"].mode().sort()[0] if test.height else "text"
    schemas = tool_schemas(meta.get("tools") or [])
    if kind == "text" and embedder is None:  # free-text answers are also compared by meaning
        from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    results = []
    for model_under_test in models:
        def step(done: int, total: int, label: str = model_under_test.label) -> None:
            if progress:
                progress(label, done, total)

        result = evaluate_model(model_under_test, test, schemas, settings, config, teacher_tokens, embedder, step)
        results.append(result)
        if on_model:
            on_model(result)
    candidates = [r for r in results if r.model.role == "candidate"]
    best = max(candidates, key=lambda r: (r.score.rate, -(r.metrics.get("latency_ms_p50") or 0.0)), default=None)
    champion = next((r for r in results if r.model.role == "champion"), None)
    if champion is None and best is not None:
        current = registry.get_alias(registered_model_name(agent_id, cluster_id), settings=settings)
        if current is not None:
            champion = next((r for r in candidates if r.model.version == current.version), None)
    if best is not None and champion is not None and best.model.version == champion.model.version:
        decision = Decision(False, best.model.label, None, [f"{best.model.label} is already the champion"])
    else:
        decision = decide(best.score if best else None, champion.score if champion else None, config.promotion)
    return ClusterEvaluation(agent_id, cluster_id, kind, MAIN_METRIC[kind], results, decision, best, champion)


def log_evaluation(evaluation: ClusterEvaluation, settings: Settings, dagster_run_id: str = "") -> None:
    """One MLflow run per model evaluated, in one experiment, so candidates compare side by side.

    Params and metrics only, plus the per-call verdicts (call ids, booleans, why): no payload text.
    """
    from slm_pipeline.core.tracking import log_run

    for result in evaluation.results:
        m = result.model
        verdicts = [{"call_id": s.call_id, "agreement": s.agreement, "valid": s.valid, "name_match": s.name_match,
                     "schema_valid": s.schema_valid, "latency_ms": s.latency_ms, "error": s.error}
                    for s in result.scores]
        promoted = evaluation.decision.promote and evaluation.best is result
        evaluation.mlflow_run_ids[m.label] = log_run(
            EXPERIMENT, f"{evaluation.agent_id}:{evaluation.cluster_id} {m.label}",
            params={"role": m.role, "model": m.label, "base_model": m.base_model,
                    "registered_model": m.registered_model or "", "version": m.version or "",
                    "test_calls": len(result.scores), "main_metric": evaluation.main_metric,
                    "answer_kind": evaluation.answer_kind},
            metrics={**result.metrics, "load_seconds": result.load_seconds,
                     **({f"live_{k}": v for k, v in (evaluation.live or {}).items()}
                        if result is evaluation.champion else {})},
            tags={"agent_id": evaluation.agent_id, "cluster_id": evaluation.cluster_id, "role": m.role,
                  "training_run_id": m.training_run_id or "", "dagster_run_id": dagster_run_id,
                  "decision": ("promote: " if promoted else "") + evaluation.decision.summary()[:4900]
                  if m.role == "candidate" else ""},
            artifacts={"verdicts.json": json.dumps(verdicts, indent=1).encode()}, settings=settings)


def record_evaluation(lake: Lake, evaluation: ClusterEvaluation) -> dict[str, Any]:
    """Write `evaluation.json` (read by the promotion check, the routing table and the report)."""
    summary = evaluation.summary()
    lake.put_file(EVALUATIONS_TABLE, cluster_partition(evaluation.agent_id, evaluation.cluster_id),
                  "evaluation.json", json.dumps(summary, indent=2, default=str).encode())
    return summary


def load_evaluation(lake: Lake, agent_id: str, cluster_id: str) -> dict[str, Any] | None:
    raw = lake.get_file(EVALUATIONS_TABLE, cluster_partition(agent_id, cluster_id), "evaluation.json")
    return None if raw is None else json.loads(raw)


def teacher_tokens(lake: Lake, agent_id: str, cluster_id: str) -> tuple[float, float]:
    """The teacher's median prompt and answer tokens per call in this cluster (from its logged usage)."""
    from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE

    clusters = lake.read(CLUSTERS_TABLE, agent_id)
    row = None if clusters is None else clusters.filter(pl.col("cluster_id") == cluster_id)
    if row is None or row.height == 0:
        return 0.0, 0.0
    first = row.row(0, named=True)
    return float(first["prompt_tokens_p50"] or 0.0), float(first["answer_tokens_p50"] or 0.0)


def comparison_png(evaluation: ClusterEvaluation, threshold: float = PromotionConfig.threshold) -> bytes:
    """Agreement with the teacher and median latency of each model, side by side."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.model.label for r in evaluation.results]
    agreement = [r.metrics.get("agreement") or 0.0 for r in evaluation.results]
    latency = [r.metrics.get("latency_ms_p50") or 0.0 for r in evaluation.results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 * len(labels) + 1.6))
    left.barh(labels, agreement, color="#4c72b0")
    left.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    left.set_xlim(0, 1)
    left.set_title(f"agreement with the teacher ({evaluation.main_metric})", fontsize=9)
    right.barh(labels, latency, color="#dd8452")
    right.set_title("latency per call, p50 (ms, here)", fontsize=9)
    right.set_yticks([])
    figure.suptitle(f"{evaluation.agent_id}:{evaluation.cluster_id}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
