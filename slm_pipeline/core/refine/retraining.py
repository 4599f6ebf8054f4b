"""When to retrain: new data since a cluster's last training, or its live quality slipping.

The nightly schedule refreshes S1-S3; then `retraining_decisions` says, for each current
task cluster of an agent, whether S4-S6 should run again and why:

* `first training`: the cluster has never been trained (a new task type appeared);
* `new data`: its calls grew by `min_new_calls` and by `min_growth` of what it was trained on;
* `fallbacks rose` / `disagreement rose`: the gateway's live fallback rate (SLM answers that
  failed validation) or shadow disagreement rate (challenger vs LLM) exceeds the rate measured
  at evaluation by more than the allowed rise, on at least `min_live_calls` routed calls.

Live rates come from the tags the gateway writes on each call it routes (`route`, `cluster_id`,
`fallback_reason`, `shadow_agrees`), as copied to the lake by S1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE
from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.curate.pipeline import CURATED_TABLE
from slm_pipeline.core.finetune import FINETUNED_TABLE
from slm_pipeline.core.lake import Lake, cluster_partition
from slm_pipeline.core.refine.evaluation import load_evaluation


@dataclass(frozen=True)
class RetrainPolicy:
    min_new_calls: int = 200  # and ...
    min_growth: float = 0.25  # ... this fraction of the calls it was trained on
    max_fallback_rise: float = 0.05  # live fallback rate above (1 - evaluated schema validity) by this much
    max_disagreement_rise: float = 0.05  # live shadow disagreement above (1 - evaluated agreement) by this much
    min_live_calls: int = 50  # live rates count only from this many routed calls
    live_window: int = 20_000  # live rates look at the agent's latest calls (newest lake files holding this many)
    refresh_calls: int = 500  # between nights: new calls of an agent that trigger S1-S3 (the volume sensor)
    drift_unassigned: float = 0.3  # between nights: share of recent routed-agent calls no cluster fits ...
    drift_min_calls: int = 100  # ... among at least this many (the drift sensor re-clusters the agent)


@dataclass(frozen=True)
class LiveStats:
    routed: int = 0  # calls sent to the SLM
    fallbacks: int = 0  # of those, answered by the LLM after the SLM's answer failed validation
    shadowed: int = 0  # calls the LLM answered while a challenger answered in the shadow
    disagreements: int = 0  # of those, the challenger's answer differed

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.routed if self.routed else None

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.shadowed if self.shadowed else None


@dataclass(frozen=True)
class RetrainDecision:
    cluster_id: str
    due: bool
    reason: str


def live_stats(lake: Lake, agent_id: str, window: int = RetrainPolicy.live_window) -> dict[str, LiveStats]:
    """Per cluster, what the gateway saw while routing the agent's latest calls (S1's copy of its tags),
    under the newest routing table that routed that cluster's calls (older champions' calls don't count)."""
    raw = lake.read(RAW_TABLE, agent_id, columns=["tags"], latest_rows=window)
    routed: list[dict] = []
    for text in ([] if raw is None else raw["tags"].drop_nulls().to_list()):
        try:
            tags = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(tags, dict) and tags.get("cluster_id") and tags.get("route") in ("slm", "fallback", "shadow"):
            routed.append(tags)
    newest: dict[str, int] = {}
    for tags in routed:
        cluster = str(tags["cluster_id"])
        newest[cluster] = max(newest.get(cluster, 0), int(tags.get("routing_table_version") or 0))
    counts: dict[str, list[int]] = {}
    for tags in routed:
        if int(tags.get("routing_table_version") or 0) != newest[str(tags["cluster_id"])]:
            continue
        row = counts.setdefault(str(tags["cluster_id"]), [0, 0, 0, 0])
        if tags["route"] in ("slm", "fallback"):
            row[0] += 1
            row[1] += tags["route"] == "fallback"
        else:
            row[2] += 1
            row[3] += tags.get("shadow_agrees") is False
    return {cluster: LiveStats(*row) for cluster, row in counts.items()}


def retraining_decisions(lake: Lake, agent_id: str, policy: RetrainPolicy = RetrainPolicy(),
                         live: dict[str, LiveStats] | None = None) -> list[RetrainDecision]:
    """For each of the agent's current clusters: retrain it now, and why (or why not)."""
    clusters = lake.read(CLUSTERS_TABLE, agent_id, columns=["cluster_id", "size"])
    live = live_stats(lake, agent_id, policy.live_window) if live is None else live
    decisions = []
    for cluster_id, size in ([] if clusters is None else clusters.iter_rows()):
        raw = lake.get_file(FINETUNED_TABLE, cluster_partition(agent_id, cluster_id), "models.json")
        record = json.loads(raw) if raw else None
        if record is None:
            decisions.append(RetrainDecision(cluster_id, True, f"first training ({size} calls)"))
            continue
        trained_on = int(record.get("trained_on_calls") or 0)
        new = size - trained_on
        if new >= policy.min_new_calls and new >= policy.min_growth * max(trained_on, 1):
            decisions.append(RetrainDecision(cluster_id, True, f"new data: {new} calls since training on "
                                                               f"{trained_on}"))
            continue
        stats, evaluation = live.get(cluster_id, LiveStats()), load_evaluation(lake, agent_id, cluster_id)
        measured = ((evaluation or {}).get("champion") or (evaluation or {}).get("best") or {}).get("metrics", {})
        reason = _quality_slipped(stats, measured, policy)
        if reason:
            decisions.append(RetrainDecision(cluster_id, True, reason))
            continue
        decisions.append(RetrainDecision(cluster_id, False, f"{max(new, 0)} new calls since training on {trained_on}; "
                                                            "live quality holds"))
    return decisions


def _quality_slipped(stats: LiveStats, measured: dict, policy: RetrainPolicy) -> str | None:
    if stats.routed >= policy.min_live_calls and stats.fallback_rate is not None:
        expected = 1.0 - float(measured.get("schema_valid_rate", measured.get("valid_rate", 1.0)) or 0.0)
        if stats.fallback_rate > expected + policy.max_fallback_rise:
            return (f"fallbacks rose: {stats.fallback_rate:.1%} of {stats.routed} routed calls, "
                    f"{expected:.1%} at evaluation")
    if stats.shadowed >= policy.min_live_calls and stats.disagreement_rate is not None:
        expected = 1.0 - float(measured.get("agreement", 1.0) or 0.0)
        if stats.disagreement_rate > expected + policy.max_disagreement_rise:
            return (f"disagreement rose: {stats.disagreement_rate:.1%} of {stats.shadowed} shadowed calls, "
                    f"{expected:.1%} at evaluation")
    return None


def unassigned_share(lake: Lake, agent_id: str, recent: int = 500) -> tuple[float | None, int]:
    """Drift: of the agent's `recent` latest calls the gateway tried to assign to a task cluster, the share
    that no cluster fitted confidently (new kinds of requests), and how many were tried."""
    raw = lake.read(RAW_TABLE, agent_id, columns=["seq", "tags"], latest_rows=4 * recent)
    if raw is None:
        return None, 0
    tried = unplaced = 0
    for text in raw.sort("seq", descending=True)["tags"].drop_nulls().to_list():
        reason = (json.loads(text) or {}).get("route_reason", "") if text.startswith("{") else ""
        if not reason or reason == "human-facing calls stay on the LLM":
            continue
        tried += 1
        unplaced += reason.startswith("no confident task cluster")
        if tried == recent:
            break
    return (unplaced / tried if tried else None), tried


def refresh_reason(lake: Lake, store: Any, agent_id: str, policy: RetrainPolicy = RetrainPolicy()) -> str | None:
    """Why the agent's S1-S3 should run before the next night (volume or drift), or None."""
    new = calls_since_curation(lake, store, agent_id)
    if new >= policy.refresh_calls:
        return f"volume: {new} new calls"
    share, tried = unassigned_share(lake, agent_id)
    if share is not None and tried >= policy.drift_min_calls and share >= policy.drift_unassigned:
        return f"drift: {share:.0%} of {tried} recent calls fit no task cluster"
    return None


def curated_up_to(lake: Lake, agent_id: str) -> int:
    """The highest log-store `seq` the agent's latest curation saw (0 before the first)."""
    curated = lake.read(CURATED_TABLE, agent_id, columns=["seq"])
    return 0 if curated is None or curated.height == 0 else int(curated["seq"].max())


def calls_since_curation(lake: Lake, store: Any, agent_id: str) -> int:
    """The agent's calls in the log store that its latest curation (and so clustering) has not seen."""
    return store.count(agent_id, after_seq=curated_up_to(lake, agent_id))
