"""Jobs: named selections of assets that people (and sensors) launch per agent."""

import dagster as dg

from slm_pipeline.assets.collect import raw_agent_calls

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=[raw_agent_calls],
    description="S1: copy an agent's new calls from the log store to the lake.",
)
