"""Jobs: named selections of assets that people (and sensors) launch per agent."""

import dagster as dg

from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.partitions import agent_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=[raw_agent_calls],
    partitions_def=agent_partitions,
    description="S1: copy an agent's new calls from the log store to the lake.",
)
