"""S1 collect: `raw_agent_calls`, the agent's calls copied from the log store to the lake."""

import dagster as dg

from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls, summarise_raw_calls
from slm_pipeline.core.markdown import frame_to_markdown
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LakeResource, LogStoreResource

UNIQUE_CALL_IDS = "unique_call_ids"
RECONCILES_WITH_STORE = "reconciles_with_log_store"


@dg.asset(
    partitions_def=agent_partitions,
    group_name="s1_collect",
    kinds={"parquet", "polars"},
    description=(
        "Every logged call of the agent, appended to the lake incrementally: each run copies the calls stored "
        "since the partition's watermark. Payloads (request, response, tags) stay out of the metadata."
    ),
    # The log store is a database on another host: a restart, a failover or a dropped connection is a
    # transient fault. Retry the step in the same run, 3 times, after 2, 6 and 14 s (exponential backoff;
    # Dagster's delay for retry n is (2^n - 1) x 2 s). Safe: collection is incremental from the lake's
    # watermark, so a retry copies only what is not in the lake yet. Only this asset gets a policy: the
    # others read the lake on local storage, or train and evaluate models, where a failure is rarely
    # transient and a retry would repeat hours of work.
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    check_specs=[
        dg.AssetCheckSpec(UNIQUE_CALL_IDS, asset="raw_agent_calls",
                          description="No call appears twice in the agent's lake partition."),
        dg.AssetCheckSpec(RECONCILES_WITH_STORE, asset="raw_agent_calls",
                          description="The lake holds exactly the log store's calls up to the watermark."),
    ],
)
def raw_agent_calls(
    context: dg.AssetExecutionContext, log_store: LogStoreResource, lake: LakeResource
) -> dg.MaterializeResult:
    agent_id = context.partition_key
    store, the_lake = log_store.open(), lake.open()
    result = collect_new_calls(store, the_lake, agent_id)
    context.log.info(
        f"{agent_id}: {result.new_rows} new calls (seq {result.watermark_before} -> {result.watermark_after})"
    )
    summary = summarise_raw_calls(the_lake, agent_id)
    in_store = store.count(agent_id, up_to_seq=result.watermark_after)
    metadata = {
        "dagster/row_count": summary.rows,
        "new_rows": result.new_rows,
        "watermark_seq": result.watermark_after,
        "first_call": summary.first_call.isoformat() if summary.first_call else None,
        "last_call": summary.last_call.isoformat() if summary.last_call else None,
        "failed_calls": summary.failed,
        "human_facing_calls": summary.human_facing,
        "teacher_models": summary.models,
        "files_written": len(result.files),
        "lake_path": dg.MetadataValue.path(the_lake.partition_url(RAW_TABLE, agent_id)),
        "preview": dg.MetadataValue.md(frame_to_markdown(summary.preview)),
    }
    checks = [
        dg.AssetCheckResult(
            check_name=UNIQUE_CALL_IDS,
            passed=summary.duplicate_call_ids == 0,
            metadata={"duplicate_call_ids": summary.duplicate_call_ids},
        ),
        dg.AssetCheckResult(
            check_name=RECONCILES_WITH_STORE,
            passed=in_store == summary.rows,
            metadata={"lake_rows": summary.rows, "log_store_rows": in_store},
            description=None if in_store == summary.rows else
            f"lake has {summary.rows} rows, log store {in_store} up to seq {result.watermark_after}",
        ),
    ]
    return dg.MaterializeResult(metadata=metadata, check_results=checks)

