"""Schedules: the nightly refresh (02:00 UTC) of every agent's S1-S3; retraining follows from it."""

import dagster as dg

from slm_pipeline.jobs import refresh_job
from slm_pipeline.partitions import agent_partitions


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=refresh_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 UTC: ingest, curate and cluster each agent's traffic. The `retrain_clusters` "
    "sensor then retrains the clusters whose data grew or whose live quality slipped.",
)
def nightly_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(partition_key=agent, run_key=f"nightly-{night}-{agent}",
                          tags={"slm_pipeline/trigger": "nightly"})
            for agent in sorted(context.instance.get_dynamic_partitions(agent_partitions.name))]
