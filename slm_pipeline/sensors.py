"""Sensors: react to new traffic in the log store."""

import json

import dagster as dg

from slm_pipeline.jobs import ingest_job
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LogStoreResource


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
