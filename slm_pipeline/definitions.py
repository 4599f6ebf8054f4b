"""The Dagster Definitions: what the UI, the daemon and `slm-pipeline run` load."""

import dagster as dg

from slm_pipeline.assets.candidates import slm_candidates
from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.assets.cluster import task_clusters
from slm_pipeline.assets.curate import curated_calls
from slm_pipeline.assets.datasets import task_datasets
from slm_pipeline.assets.finetune import finetuned_slm
from slm_pipeline.assets.refine import conversion_report, routing_table, slm_champion, slm_evaluation
from slm_pipeline.jobs import ingest_job, publish_job, refresh_job, retrain_job
from slm_pipeline.resources import LakeResource, LogStoreResource
from slm_pipeline.schedules import nightly_refresh
from slm_pipeline.sensors import new_agent_calls, publish_after_promotion, retrain_clusters, traffic_volume

defs = dg.Definitions(
    assets=[raw_agent_calls, curated_calls, task_clusters, task_datasets, slm_candidates, finetuned_slm,
            slm_evaluation, slm_champion, routing_table, conversion_report],
    jobs=[ingest_job, refresh_job, retrain_job, publish_job],
    schedules=[nightly_refresh],
    sensors=[new_agent_calls, traffic_volume, retrain_clusters, publish_after_promotion],
    resources={"log_store": LogStoreResource(), "lake": LakeResource(),
               "pipes_subprocess_client": dg.PipesSubprocessClient()},
)
