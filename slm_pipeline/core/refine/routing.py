"""The routing table: for every task cluster, the SLM that takes its calls, or the LLM and why.

The gateway reads it (`load_routing_table`); it is versioned: a new version is written only
when a route changes, every version is kept (`routing_table/all/v<N>.json`) and `current.json`
names the latest, so a gateway can say which table it routes by and an operator can diff two.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from slm_pipeline.core.lake import Lake, cluster_partition

ROUTING_TABLE = "routing_table"
_PARTITION = "all"


@dataclass(frozen=True)
class RoutingThresholds:
    """When the gateway may send a call to a cluster's SLM (documented defaults)."""

    min_assignment_confidence: float = 0.6  # the S3 assigner's confidence that the call is this task


@dataclass(frozen=True)
class Route:
    agent_id: str
    cluster_id: str
    label: str
    route: Literal["slm", "llm"]
    reason: str
    registered_model: str | None = None
    version: str | None = None
    base_model: str | None = None
    serving_model: str | None = None  # the model name the SLM server knows the adapter by
    task_prompt: str | None = None  # rendered in front of the call, as in training
    main_metric: str | None = None
    agreement: float | None = None
    answer_kind: str | None = None  # tool_call | json | text: what the gateway validates the SLM's answer as
    # A challenger the gateway asks in the shadow (the LLM answers; agreement is logged): the latest
    # evaluated candidate that is not the champion, served under its own name.
    shadow_model: str | None = None
    shadow_version: str | None = None
    prompt_form: str = "compact"  # specialist_prompt form the SLM was trained with (dataset.json)
    prompt_tools: list[str] = field(default_factory=list)  # the tools its compact prompt lists (dataset.json)


@dataclass
class RoutingTable:
    routes: list[Route]
    thresholds: RoutingThresholds = RoutingThresholds()
    serving_url: str | None = None
    version: int = 0
    created_at: str = ""
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        return {"routes": [asdict(r) for r in sorted(self.routes, key=lambda r: (r.agent_id, r.cluster_id))],
                "thresholds": asdict(self.thresholds), "serving_url": self.serving_url}

    def to_json(self) -> bytes:
        return json.dumps({"version": self.version, "created_at": self.created_at, "fingerprint": self.fingerprint,
                           **self.content()}, indent=2).encode()

    def route_for(self, agent_id: str, cluster_id: str | None) -> Route | None:
        return next((r for r in self.routes if r.agent_id == agent_id and r.cluster_id == cluster_id), None)

    @classmethod
    def from_json(cls, data: bytes) -> RoutingTable:
        raw = json.loads(data)
        return cls([Route(**r) for r in raw["routes"]], RoutingThresholds(**raw["thresholds"]), raw["serving_url"],
                   raw["version"], raw["created_at"], raw["fingerprint"])


def serving_model_name(agent_id: str, cluster_id: str, version: str | None = None) -> str:
    """The name a client asks the SLM server for: the cluster's champion, or (with `version`) a challenger."""
    return f"slm-{agent_id}-{cluster_id}" + (f"-v{version}" if version else "")


def _fingerprint(content: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=8).hexdigest()


def load_routing_table(lake: Lake, version: int | None = None) -> RoutingTable | None:
    name = "current.json" if version is None else f"v{version}.json"
    data = lake.get_file(ROUTING_TABLE, _PARTITION, name)
    return None if data is None else RoutingTable.from_json(data)


def publish_routing_table(lake: Lake, table: RoutingTable) -> tuple[RoutingTable, bool]:
    """Write `table` as the next version unless its routes equal the current one's; (current, changed)."""
    content = table.content()
    fingerprint = _fingerprint(content)
    current = load_routing_table(lake)
    if current is not None and current.fingerprint == fingerprint:
        return current, False
    table.version = (current.version if current else 0) + 1
    table.fingerprint = fingerprint
    table.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = table.to_json()
    lake.put_file(ROUTING_TABLE, _PARTITION, f"v{table.version}.json", data)
    lake.put_file(ROUTING_TABLE, _PARTITION, "current.json", data)
    return table, True


def retire_stale_champions(lake: Lake, settings: Any, agent_ids: list[str]) -> list[dict[str, Any]]:
    """Retire the champion of every cluster that the latest clustering merged away or retired (its
    lineage in `task_cluster_events`), so no route, server or rollback points at it. Returns what was
    retired: agent, cluster, version, reason."""
    from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE, EVENTS_TABLE
    from slm_pipeline.core.finetune import registered_model_name
    from slm_pipeline.core.refine import registry

    retired = []
    for agent_id in agent_ids:
        clusters = lake.read(CLUSTERS_TABLE, agent_id, columns=["cluster_id"])
        events = lake.read(EVENTS_TABLE, agent_id)
        if clusters is None or events is None:
            continue
        current = set(clusters["cluster_id"])
        fates: dict[str, str] = {}
        for event in events.iter_rows(named=True):  # in order: the last word on a cluster wins
            if event["event"] == "merge" and event["related"] not in current:
                fates[event["related"]] = f"merged into {event['cluster_id']} by the clustering of {event['run']}"
            elif event["event"] == "retired" and event["cluster_id"] not in current:
                fates[event["cluster_id"]] = f"retired by the clustering of {event['run']} (its calls went elsewhere)"
        for cluster_id, reason in sorted(fates.items()):
            champion = registry.retire(registered_model_name(agent_id, cluster_id), reason, settings)
            if champion is not None:
                retired.append({"agent_id": agent_id, "cluster_id": cluster_id, "version": champion.version,
                                "reason": reason})
    return retired


def build_routing_table(lake: Lake, settings: Any, agent_ids: list[str], *,
                        thresholds: RoutingThresholds = RoutingThresholds(), serving_url: str | None = None,
                        shadow_challengers: bool = True) -> RoutingTable:
    """A route for every current task cluster of `agent_ids`: its champion, or the LLM with the reason."""
    from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE
    from slm_pipeline.core.finetune import registered_model_name
    from slm_pipeline.core.refine import registry
    from slm_pipeline.core.refine.evaluation import load_evaluation
    from slm_pipeline.core.task_data import DATASETS_TABLE

    routes = []
    for agent_id in agent_ids:
        clusters = lake.read(CLUSTERS_TABLE, agent_id, columns=["cluster_id", "label"])
        for cluster_id, label in ([] if clusters is None else clusters.iter_rows()):
            raw_meta = lake.get_file(DATASETS_TABLE, cluster_partition(agent_id, cluster_id), "dataset.json")
            meta = json.loads(raw_meta) if raw_meta else None
            evaluation = load_evaluation(lake, agent_id, cluster_id)
            champion = registry.get_alias(registered_model_name(agent_id, cluster_id), settings=settings)
            best = (evaluation or {}).get("best") or {}
            challenger = best.get("version") if best.get("version") and (
                champion is None or best.get("version") != champion.version) else None
            shadow = {"shadow_model": serving_model_name(agent_id, cluster_id, challenger),
                      "shadow_version": challenger} if challenger and shadow_challengers else {}
            kind = (evaluation or {}).get("answer_kind")
            if champion is not None and meta is not None:
                evaluated = next((m for m in (evaluation or {}).get("models", [])
                                  if m and m.get("version") == champion.version), None)
                main = (evaluation or {}).get("main_metric")
                routes.append(Route(
                    agent_id, cluster_id, label, "slm", f"champion {champion.registered_model} v{champion.version}",
                    champion.registered_model, champion.version, champion.base_model,
                    serving_model_name(agent_id, cluster_id), meta.get("task_prompt"), main,
                    (evaluated or {}).get("metrics", {}).get("agreement"), kind, **shadow,
                    prompt_form=meta.get("prompt_form", "compact"), prompt_tools=meta.get("prompt_tools", [])))
                continue
            if meta is None:
                reason = "no task dataset yet (materialise task_datasets for this cluster)"
            elif meta.get("status") != "ready":
                reason = meta.get("reason", "its dataset is not ready")
            elif evaluation is None:
                reason = "no evaluation yet (materialise finetuned_slm and slm_evaluation)"
            else:
                reason = "not promoted: " + (evaluation.get("decision") or "no decision")
            routes.append(Route(agent_id, cluster_id, label, "llm", reason, registered_model_name(agent_id, cluster_id)
                                if shadow else None, base_model=best.get("base_model") if shadow else None,
                                task_prompt=meta.get("task_prompt") if meta and shadow else None, answer_kind=kind,
                                prompt_form=(meta or {}).get("prompt_form", "compact"),
                                prompt_tools=(meta or {}).get("prompt_tools", []), **shadow))
    return RoutingTable(routes, thresholds, serving_url)
