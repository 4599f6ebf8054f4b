"""S2 curate: `curated_calls`, the agent's calls without personal data, failures or duplicates."""

from typing import Literal, Optional

import dagster as dg

from slm_pipeline.assets.collect import raw_agent_calls
from slm_pipeline.core.curate.analyzer import DEFAULT_ENTITIES, DEFAULT_SPACY_MODEL, AnalyzerConfig
from slm_pipeline.core.curate.pipeline import CURATED_TABLE, CurationConfig, curate_agent
from slm_pipeline.core.settings import Settings
from slm_pipeline.partitions import agent_partitions
from slm_pipeline.resources import LakeResource

NO_STRUCTURED_IDENTIFIERS = "no_structured_identifiers"
COUNTS_RECONCILE = "counts_reconcile"


class CurationRunConfig(dg.Config):
    """S2 settings; the defaults are the documented ones (see README, "S2 curate")."""

    drop_human_facing: bool = True
    near_duplicate_threshold: Optional[float] = 0.9
    strategy: Literal["surrogate", "placeholder"] = "surrogate"
    spacy_model: str = DEFAULT_SPACY_MODEL
    entities: list[str] = list(DEFAULT_ENTITIES)
    score_threshold: float = 0.4
    allow_list: list[str] = []
    ner_model: Optional[str] = None
    ner_labels: list[str] = list(AnalyzerConfig.ner_labels)
    workers: int = 2
    persist_cache: bool = True
    public_figures: Literal["scrub", "keep"] = CurationConfig.public_figures
    residual_limit: float = CurationConfig.residual_limit

    def to_core(self) -> CurationConfig:
        analyzer = AnalyzerConfig(self.spacy_model, tuple(self.entities), self.score_threshold, tuple(self.allow_list),
                                  self.ner_model, tuple(self.ner_labels))
        return CurationConfig(self.drop_human_facing, self.near_duplicate_threshold, strategy=self.strategy,
                              analyzer=analyzer, workers=self.workers, public_figures=self.public_figures,
                              residual_limit=self.residual_limit)


def residual_description(calls: int, share: float, limit: float, residual: dict[str, dict[str, int]],
                         quarantine_path: str | None) -> str:
    """What survived, where, and how to allow a value that is not personal data (no values)."""
    verdict = (f"above the limit of {limit:.1%}: downstream assets must not use this partition until it is fixed"
               if share > limit else f"within the limit of {limit:.1%}: the partition goes on without them")
    return (f"{calls} call(s) ({share:.1%}) held a structured identifier after scrubbing and were quarantined "
            f"as residual_identifier ({quarantine_path}), {verdict}. Types: {residual['types']}. Fields: "
            f"{residual['fields']}. If a value is not personal data (a support address, a test card), allow it: "
            f"run config `ops: curated_calls: config: allow_list: [<value>]` (both the detector and this re-scan "
            f"honour it); to change the limit, set `residual_limit`.")


@dg.asset(
    partitions_def=agent_partitions,
    deps=[raw_agent_calls],
    group_name="s2_curate",
    kinds={"presidio", "parquet"},
    description=(
        "The agent's calls ready to learn from: human-facing and failed calls dropped, exact and near "
        "duplicates dropped, and every text scrubbed of personal data and secrets (Presidio with custom "
        "recognizers), replaced consistently within each call. Dropped calls keep their reason in "
        "`dropped_calls`."
    ),
    check_specs=[
        dg.AssetCheckSpec(NO_STRUCTURED_IDENTIFIERS, asset="curated_calls", blocking=True,
                          description="Every scrubbed call is re-scanned with independent regexes (e-mail, phone, "
                          "card, IBAN, SSN, IP address, API key); a call where one survived is quarantined as "
                          "residual_identifier. Fails, blocking, only when such calls are more than residual_limit "
                          "(default 1%) of the partition."),
        dg.AssetCheckSpec(COUNTS_RECONCILE, asset="curated_calls",
                          description="raw calls = curated calls + the dropped calls of every reason."),
    ],
)
def curated_calls(context: dg.AssetExecutionContext, config: CurationRunConfig, lake: LakeResource
                  ) -> dg.MaterializeResult:
    settings = Settings()
    core = config.to_core()
    cache = settings.cache_dir / f"pii-findings-{core.analyzer.fingerprint()}.sqlite" if config.persist_cache else None
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - reported[0] >= max(total // 10, 1):
            reported[0] = done
            context.log.info(f"analysed {done:,} of {total:,} distinct texts")

    the_lake = lake.open()
    done = curate_agent(the_lake, context.partition_key, core, settings.surrogate_salt_bytes(),
                        settings.quarantine_dir, cache, progress)
    result = done.result
    reasons = result.reason_counts
    residual = result.residual_summary()
    share = result.residual_share
    blocked = share > core.residual_limit
    metadata = {
        "dagster/row_count": result.curated.height,
        "raw_calls": result.raw_rows,
        "dropped_calls": result.dropped.height,
        "dropped_by_reason": dg.MetadataValue.json(reasons),
        "pii_entities_replaced": dg.MetadataValue.json(result.entity_counts),
        "texts_seen": done.analysis["texts"],
        "texts_distinct": done.analysis["distinct"],
        "texts_from_cache": done.analysis["cached"],
        "seconds": round(done.seconds, 1),
        "calls_per_second": round(result.raw_rows / done.seconds, 1) if done.seconds else None,
        "replacement_strategy": config.strategy,
        "lake_path": dg.MetadataValue.path(the_lake.partition_url(CURATED_TABLE, context.partition_key)),
    }
    if done.quarantine_path:
        metadata["quarantine_path"] = dg.MetadataValue.path(done.quarantine_path)
        context.log.warning(f"{reasons} - quarantined calls are listed in {done.quarantine_path}")
    return dg.MaterializeResult(metadata=metadata, check_results=[
        dg.AssetCheckResult(
            check_name=NO_STRUCTURED_IDENTIFIERS, passed=not blocked,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"calls_scanned": done.leak_sample, "calls_quarantined": result.residuals.height,
                      "share": round(share, 4), "limit": core.residual_limit,
                      "identifiers_found": dg.MetadataValue.json(residual["types"]),
                      "fields": dg.MetadataValue.json(residual["fields"])},
            description=residual_description(result.residuals.height, share, core.residual_limit, residual,
                                             done.quarantine_path) if result.residuals.height else None,
        ),
        dg.AssetCheckResult(
            check_name=COUNTS_RECONCILE, passed=result.reconciles,
            metadata={"raw": result.raw_rows, "curated": result.curated.height, "dropped": result.dropped.height},
        ),
    ])
