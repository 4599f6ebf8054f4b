"""`slm-pipeline run`: materialise a selection of assets per agent, in process, on the real instance.

It executes the same Definitions the UI loads, records its runs in the same
Dagster instance (so they show in the UI), and reports each step as it ends.
Per agent it runs the agent-partitioned assets (S1-S3) first, then the
task-cluster-partitioned ones (S4-S6) for each of the agent's current clusters,
one Dagster run per partition; the unpartitioned ones (the routing table) run
once at the end. A cluster whose candidate the promotion rule turns down is not
a failure: its run says why (`PartitionRun.not_promoted`).

Ctrl-C (SIGINT) or SIGTERM stops the whole command: the running step is interrupted (its
Dagster Pipes client passes the interrupt on to a training process, which saves nothing
more and exits as `interrupted`), no further partition starts, and `PipelineInterrupted`
carries the runs that finished.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.utils import make_new_run_id

from slm_pipeline.assets.refine import PROMOTION_RULE
from slm_pipeline.core.cluster.pipeline import CLUSTERS_TABLE
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.settings import Settings
from slm_pipeline.definitions import defs
from slm_pipeline.partitions import agent_partitions, task_cluster_key, task_cluster_partitions

StepCallback = Callable[[str, str, str], None]
"""Called with (partition key, step key, "success" | "failure" | "skipped" | "not promoted" | "blocked by its
check") as each step ends. A blocking asset check that fails is an outcome, not a crash: S6's promotion rule
turning a cluster down reads "not promoted"."""

_STEP_ENDS = {
    dg.DagsterEventType.STEP_SUCCESS: "success",
    dg.DagsterEventType.STEP_FAILURE: "failure",
    dg.DagsterEventType.STEP_SKIPPED: "skipped",
}


_INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}
_CHECK_FAILED = "DagsterAssetCheckFailedError"  # a blocking asset check stopped the step: an outcome


class SelectionError(ValueError):
    pass


@dataclass
class PartitionRun:
    agent_id: str  # the partition key: an agent id, or `<agent>:<cluster>`
    run_id: str
    success: bool
    steps: dict[str, str] = field(default_factory=dict)
    materialized: list[str] = field(default_factory=list)
    error: str | None = None
    not_promoted: str | None = None  # the promotion_rule check's reason, when it blocked slm_champion
    interrupted: bool = False  # SIGINT/SIGTERM stopped it (Dagster turns them into DagsterExecutionInterruptedError)


class PipelineInterrupted(Exception):
    """SIGINT or SIGTERM stopped `run_pipeline`: `runs` ended (the last one was interrupted: `partition`)."""

    def __init__(self, runs: list[PartitionRun], partition: str | None) -> None:
        super().__init__(f"interrupted during {partition or 'the run'}")
        self.runs, self.partition = runs, partition


stop_requested = threading.Event()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside: SIGINT and SIGTERM raise KeyboardInterrupt in the main thread and stop the pipeline after the
    step they interrupt. Outside the main thread (tests, the UI) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        stop_requested.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    stop_requested.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def selected_assets(selection: str | None) -> list[dg.AssetKey]:
    """The asset keys named by a Dagster selection string (all assets when None), in graph order."""
    graph = defs.resolve_asset_graph()
    everything = graph.materializable_asset_keys
    if not selection:
        keys = set(everything)
    else:
        try:
            keys = set(dg.AssetSelection.from_string(selection).resolve(graph)) & set(everything)
        except Exception as exc:  # the parser raises several kinds
            raise SelectionError(f"cannot parse asset selection {selection!r}: {exc}") from exc
        if not keys:
            names = ", ".join(sorted(k.to_user_string() for k in everything))
            raise SelectionError(f"asset selection {selection!r} matches no asset; the assets are: {names}")
    return [key for key in graph.toposorted_asset_keys if key in keys]


def _step_end(event: dg.DagsterEvent) -> str:
    if event.event_type == dg.DagsterEventType.STEP_FAILURE:
        error = event.step_failure_data.error
        if error is not None and error.cls_name == _CHECK_FAILED:
            return "not promoted" if event.step_key == "slm_evaluation" else "blocked by its check"
    return _STEP_ENDS[event.event_type]


def _watch(instance: dg.DagsterInstance, run_id: str, agent_id: str, on_step: StepCallback,
           done: threading.Event, seen: dict[str, str]) -> None:
    cursor = None
    while True:
        finished = done.is_set()  # read before the fetch, so the last events are never missed
        while True:
            records = instance.get_records_for_run(run_id, cursor=cursor, of_type=set(_STEP_ENDS))
            for record in records.records:
                event = record.event_log_entry.dagster_event
                if event is not None and event.step_key and event.step_key not in seen:
                    seen[event.step_key] = _step_end(event)
                    on_step(agent_id, event.step_key, seen[event.step_key])
            cursor = records.cursor
            if not records.has_more:
                break
        if finished:
            return
        done.wait(0.25)


def current_cluster_keys(agent_id: str, settings: Settings | None = None) -> list[str]:
    """The agent's task-cluster partition keys from its latest clustering (retired ones left out): those that reach
    the dataset minimum (trainable) first, largest first, so `clusters_per_agent` picks trainable clusters."""
    from slm_pipeline.core.task_data import DatasetConfig

    clusters = Lake((settings or Settings()).resolved_lake_url).read(CLUSTERS_TABLE, agent_id,
                                                                      columns=["cluster_id", "size"])
    if clusters is None:
        return []
    minimum = DatasetConfig().min_examples
    ordered = sorted(clusters.iter_rows(), key=lambda row: (row[1] < minimum, -row[1], row[0]))
    return [task_cluster_key(agent_id, cluster_id) for cluster_id, _ in ordered]


def _execute(instance: dg.DagsterInstance, partition: str | None, keys: list[dg.AssetKey], run_config: dict,
             on_step: StepCallback | None) -> PartitionRun:
    job = defs.resolve_implicit_global_asset_job_def()
    run_id = make_new_run_id()
    steps: dict[str, str] = {}
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(instance, run_id, partition or "all", on_step or (lambda *_: None), done, steps),
        daemon=True
    )
    watcher.start()
    try:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, partition_key=partition, asset_selection=keys,
            run_id=run_id, raise_on_error=False, tags={"slm_pipeline/launched_by": "cli"},
        )
    finally:
        done.set()
        watcher.join()
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    interrupted = any(e.step_failure_data.error is not None and e.step_failure_data.error.cls_name in _INTERRUPTS
                      for e in failures)
    blocked = [c for c in result.get_asset_check_evaluations() if c.check_name == PROMOTION_RULE and not c.passed]
    # The blocking promotion check fails its step by design; that alone is an outcome, not an error.
    only_blocked = bool(blocked) and all(
        e.step_failure_data.error is not None and e.step_failure_data.error.cls_name == _CHECK_FAILED
        for e in failures)
    error = None
    if failures and not only_blocked:
        info = failures[0].step_failure_data.error
        error = f"{failures[0].step_key}: {info.message.strip() if info else 'failed'}"
    return PartitionRun(
        agent_id=partition or "all", run_id=run_id, success=result.success or only_blocked, steps=steps,
        materialized=sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}),
        error=error, not_promoted=(blocked[0].description or "the promotion rule did not hold") if blocked else None,
        interrupted=interrupted,
    )


def run_pipeline(
    instance: dg.DagsterInstance,
    agent_ids: Sequence[str],
    selection: str | None = None,
    on_step: StepCallback | None = None,
    log_level: str = "WARNING",
    asset_config: dict[str, dict] | None = None,
    on_partitions: Callable[[str, list[str]], None] | None = None,
    clusters_per_agent: int | None = None,
    cluster_config: Callable[[str, int], dict[str, dict] | None] | None = None,
) -> list[PartitionRun]:
    """Materialise `selection` for each agent, then for each of its task clusters.

    `asset_config` is run config per asset name ({"finetuned_slm": {"max_steps": 8}}).
    `on_partitions(agent_id, cluster keys)` is called before an agent's clusters run.
    `clusters_per_agent` limits S4-S5 to the agent's N largest clusters (None: all).
    `cluster_config(cluster key, its rank in the agent, 0 = largest)` may return config per asset name that
    overrides `asset_config` for that cluster (the demo's showcase).
    The console shows Dagster's log lines from `log_level` up; the UI has them all.
    """
    keys = selected_assets(selection)
    graph = defs.resolve_asset_graph()
    per_agent = [k for k in keys if graph.get(k).partitions_def == agent_partitions]
    per_cluster = [k for k in keys if graph.get(k).partitions_def == task_cluster_partitions]
    unpartitioned = [k for k in keys if graph.get(k).partitions_def is None]
    known = set(instance.get_dynamic_partitions(agent_partitions.name))
    missing = [a for a in agent_ids if a not in known]
    if missing:
        instance.add_dynamic_partitions(agent_partitions.name, missing)
    loggers = {"console": {"config": {"log_level": log_level}}}

    def config_for(selected: list[dg.AssetKey], overrides: dict[str, dict] | None = None) -> dict:
        names = {k.to_user_string() for k in selected}
        merged = {name: dict(cfg) for name, cfg in (asset_config or {}).items()}
        for name, cfg in (overrides or {}).items():
            merged.setdefault(name, {}).update(cfg)
        ops = {name: {"config": cfg} for name, cfg in merged.items() if name in names}
        return {"loggers": loggers, **({"ops": ops} if ops else {})}

    runs: list[PartitionRun] = []

    def execute(partition: str | None, selected: list[dg.AssetKey], overrides: dict | None = None) -> PartitionRun:
        try:
            run = _execute(instance, partition, selected, config_for(selected, overrides), on_step)
        except KeyboardInterrupt as exc:
            stop_requested.set()
            raise PipelineInterrupted(runs, partition) from exc
        runs.append(run)
        if run.interrupted:
            stop_requested.set()
        if stop_requested.is_set():
            raise PipelineInterrupted(runs, partition)
        return run

    for agent_id in agent_ids:
        if per_agent:
            run = execute(agent_id, per_agent)
            if not run.success:
                continue
        if per_cluster:
            clusters = current_cluster_keys(agent_id)[:clusters_per_agent]
            known_clusters = set(instance.get_dynamic_partitions(task_cluster_partitions.name))
            if new := [k for k in clusters if k not in known_clusters]:
                instance.add_dynamic_partitions(task_cluster_partitions.name, new)
            if on_partitions:
                on_partitions(agent_id, clusters)
            for index, key in enumerate(clusters):
                execute(key, per_cluster, cluster_config(key, index) if cluster_config else None)
    if unpartitioned:
        execute(None, unpartitioned)
    return runs
