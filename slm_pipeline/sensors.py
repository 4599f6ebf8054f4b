"""Sensors: react to new traffic in the log store, to new clusterings, and to promotions."""

import json

import dagster as dg

from slm_pipeline.core.refine.retraining import curated_up_to, refresh_reason, retraining_decisions
from slm_pipeline.core.settings import Settings
from slm_pipeline.jobs import ingest_job, publish_job, refresh_job, retrain_job
from slm_pipeline.partitions import agent_partitions, task_cluster_key, task_cluster_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds an `agent` partition when a new agent appears in the log store, and requests an ingest "
    "for every agent whose calls grew since the last evaluation.",
)
def new_agent_calls(context: dg.SensorEvaluationContext, log_store: LogStoreResource) -> dg.SensorResult:
    watermarks = log_store.open().watermarks()
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(agent_partitions.name))
    new_agents = sorted(set(watermarks) - known)
    run_requests = [
        dg.RunRequest(partition_key=agent, run_key=f"{agent}@{seq}")
        for agent, seq in sorted(watermarks.items())
        if seq > seen.get(agent, 0)
    ]
    if new_agents:
        context.log.info(f"new agents: {', '.join(new_agents)}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[agent_partitions.build_add_request(new_agents)] if new_agents else [],
        cursor=json.dumps(watermarks, sort_keys=True),
    )


@dg.sensor(
    job=refresh_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Between nights: refresh an agent's S1-S3 when `RetrainPolicy.refresh_calls` (500) of its calls are "
    "newer than its latest curation (volume), or when 30% of its recent routed calls fit no task cluster (drift), "
    "so new task types surface (and get trained) before the next night.",
)
def traffic_volume(context: dg.SensorEvaluationContext, log_store: LogStoreResource, lake: LakeResource
                   ) -> dg.SensorResult:
    the_lake, store = lake.open(), log_store.open()
    requests = []
    for agent in sorted(context.instance.get_dynamic_partitions(agent_partitions.name)):
        reason = refresh_reason(the_lake, store, agent)
        if reason:
            seen = curated_up_to(the_lake, agent)
            requests.append(dg.RunRequest(partition_key=agent, run_key=f"refresh-{agent}-after-{seen}",
                                          tags={"slm_pipeline/trigger": reason}))
    return dg.SensorResult(run_requests=requests)


def retraining_status(settings: Settings) -> dg.DefaultSensorStatus:
    """How `retrain_clusters` starts: running in a deployment (or SLM_PIPELINE_RETRAINING=on), stopped embedded."""
    return dg.DefaultSensorStatus.RUNNING if settings.retraining_starts_running else dg.DefaultSensorStatus.STOPPED


RETRAINING_HELP = (
    "It starts running when SLM_PIPELINE_RETRAINING=on, or =auto (the default) with a database (a deployment); "
    "embedded it starts stopped, since a first training of every cluster with the full defaults is hours of CPU: "
    "turn it on here (or set SLM_PIPELINE_RETRAINING=on) for full retraining, or train a cluster yourself with "
    "`slm-pipeline run --select finetuned_slm+ --config capped.yaml`.")


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=retraining_status(Settings()),
    description="After each new clustering of an agent: adds the task-cluster partitions it lacks and retrains the "
    "clusters that are due (never trained, new data past the threshold, live fallback or disagreement risen). "
    + RETRAINING_HELP,
)
def retrain_clusters(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else 0
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("task_clusters"), after_storage_id=after), limit=100,
        ascending=True).records
    the_lake, known = lake.open(), set(context.instance.get_dynamic_partitions(task_cluster_partitions.name))
    requests, new_keys = [], []
    for record in records:
        agent = record.partition_key
        if not agent:
            continue
        for decision in retraining_decisions(the_lake, agent):
            key = task_cluster_key(agent, decision.cluster_id)
            if key not in known:
                new_keys.append(key)
                known.add(key)
            if decision.due:
                context.log.info(f"{key}: retrain ({decision.reason})")
                requests.append(dg.RunRequest(partition_key=key, run_key=f"retrain-{key}-{record.storage_id}",
                                              tags={"slm_pipeline/trigger": decision.reason[:200]}))
    cursor = str(records[-1].storage_id) if records else context.cursor
    return dg.SensorResult(
        run_requests=requests, cursor=cursor,
        dynamic_partitions_requests=[task_cluster_partitions.build_add_request(new_keys)] if new_keys else [])


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[retrain_job],
    request_job=publish_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a cluster's champion changed: publish the routing table and the conversion report.",
)
def publish_after_promotion(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"publish-after-{context.dagster_run.run_id}")
