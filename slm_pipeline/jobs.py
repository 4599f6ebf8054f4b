"""Jobs: named selections of assets that people, schedules and sensors launch."""

import dagster as dg

from slm_pipeline.assets.candidates import slm_candidates
from slm_pipeline.assets.cluster import task_clusters
from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.assets.curate import curated_calls
from slm_pipeline.assets.datasets import task_datasets
from slm_pipeline.assets.finetune import finetuned_slm
from slm_pipeline.assets.refine import conversion_report, routing_table, slm_champion, slm_evaluation
from slm_pipeline.core.k8s_gpu import gpu_run_tags

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=[raw_agent_calls],
    description="S1: copy an agent's new calls from the log store to the lake.",
)

refresh_job = dg.define_asset_job(
    "refresh_job",
    selection=[raw_agent_calls, curated_calls, task_clusters],
    description="S1-S3 for one agent: ingest, curate, cluster (nightly, and when traffic volume calls for it).",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=[task_datasets, slm_candidates, finetuned_slm, slm_evaluation, slm_champion],
    description="S4-S6 for one task cluster: dataset, candidates, fine-tuning, evaluation, promotion.",
    tags=gpu_run_tags(),  # the run pod's GPU under the K8sRunLauncher (inert elsewhere; core/k8s_gpu.py)
)

publish_job = dg.define_asset_job(
    "publish_job",
    selection=[routing_table, conversion_report],
    description="The routing table (a new version when a route changed) and the conversion report.",
)
