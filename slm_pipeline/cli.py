"""`slm-pipeline`: the command line of the LLM-to-SLM conversion pipeline."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slm_pipeline.core.settings import Settings

app = typer.Typer(
    help=(
        "Turn the LLM traffic of AI agents into small, specialised language models.\n\n"
        "Embedded by default (SQLite and local folders under SLM_PIPELINE_HOME, default ./.slm_pipeline); "
        "set SLM_PIPELINE_DATABASE_URL for a Postgres log store."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
err = Console(stderr=True)
out = Console()


def _store(settings: Settings):  # noqa: ANN202 - imported lazily to keep `--help` fast
    from slm_pipeline.core.store import LogStore

    try:
        return LogStore(settings.resolved_database_url)
    except Exception as exc:  # connection refused, unknown database, ...
        err.print(f"[red]cannot open the log store at {settings.resolved_database_url!r}: {exc}[/red]")
        err.print("Check SLM_PIPELINE_DATABASE_URL (unset it to use the embedded SQLite store).")
        raise typer.Exit(2) from exc


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Files of call records, traces or logs (.gz too).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the counts.")] = False,
    format: Annotated[str, typer.Option(
        "--format", help="auto (detect per file), otlp-json, openinference, litellm, langfuse, dfw or canonical "
        "(README, \"Bring your traces\").")] = "auto",
    agent: Annotated[Optional[str], typer.Option(
        help="The agent of every imported call (traces and logs; default: the span's service.name, LiteLLM's "
        "key alias).")] = None,
) -> None:
    """Import call records into the log store: this project's JSONL, OpenTelemetry traces (OTLP/JSON: the GenAI
    conventions, OpenLLMetry, OpenInference), Phoenix spans, LiteLLM and Langfuse logs, Data Flywheel documents.

    Prints the detected format of each file, the counts read, imported, duplicate, quarantined and skipped
    (read = imported + duplicate + quarantined + skipped; skipped: spans that are not LLM calls or hold no
    content, by reason) and the quarantine file, which names the file, line, field and reason of every
    rejected record. Exits 1 when a file cannot be read at all, 2 when the log store stops answering
    (re-running the same import then completes it; nothing is stored twice).
    """
    from slm_pipeline.core.importer import StoreUnavailableError
    from slm_pipeline.core.trace_formats.files import FORMATS, import_any

    if format not in FORMATS:
        err.print(f"[red]unknown --format {format!r}:[/red] one of {', '.join(FORMATS)}")
        raise typer.Exit(2)

    settings = Settings()
    store = _store(settings)
    total = sum(f.stat().st_size for f in files if f.is_file() and f.suffix != ".gz") or None
    try:
        with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=as_json and not err.is_terminal) as progress:
            task = progress.add_task("import", total=total)
            report = import_any(
                store, files, settings.quarantine_dir, max_record_bytes=settings.max_record_bytes,
                on_bytes=lambda n: progress.advance(task, n), format=format, agent_id=agent,
            )
    except StoreUnavailableError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    for path, why in report.unreadable.items():
        err.print(f"[red]error:[/red] cannot read {path}: {why}")
    for path, detected in report.detected.items():
        err.print(f"{path}: detected format {detected}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        table = Table(show_header=False, box=None)
        for key in ("read", "imported", "duplicate", "quarantined", "skipped"):
            table.add_row(key, f"{getattr(report, key):,}")
        table.add_row("quarantine_path", str(report.quarantine_path) if report.quarantine_path else "(none)")
        out.print(table)
        for reason, count in sorted(report.quarantine_reasons.items()):
            out.print(f"  quarantined as {reason}: {count:,}")
        for reason, count in sorted(report.skip_reasons.items()):
            out.print(f"  skipped as {reason}: {count:,}")
    if report.unreadable:
        raise typer.Exit(1)


@app.command("demo-traffic")
def demo_traffic(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the JSONL records.")],
    calls: Annotated[int, typer.Option(min=1, help="How many records (log lines) to write.")] = 3000,
    seed: Annotated[int, typer.Option(help="Same seed, same traffic.")] = 0,
    labels: Annotated[Optional[Path], typer.Option(help="CSV of true task types (default: OUT.labels.csv).")] = None,
    with_assistant: Annotated[bool, typer.Option(
        "--with-assistant", help="Add a fourth agent, general-assistant: eight tool suites of 5-8 functions each, "
        "multi-turn, each function called rarely (task types assistant.<suite>.<function>).")] = False,
) -> None:
    """Write demo traffic of three agents (support, travel, analytics), deterministic by seed.

    The records carry production mess: PII and secrets, human-facing turns, failed calls,
    retries, duplicated log lines, multi-turn histories. The true task type of each call goes
    to a separate labels file, for tests and benchmarks only.
    """
    from slm_pipeline.core.demo import default_labels_path, demo_agents, write_demo_traffic

    summary = write_demo_traffic(out_file, calls, seed, labels, agents=demo_agents(with_assistant))
    out.print(f"wrote {summary.records:,} records to {out_file}")
    out.print(f"labels: {labels or default_labels_path(out_file)} ({len(summary.by_task)} task types)")
    for agent, count in sorted(summary.by_agent.items()):
        out.print(f"  {agent}: {count:,} calls")


def _print_runs(runs: list[Any]) -> bool:
    ok = True
    for run in runs:
        status = "[green]success[/green]" if run.success else "[red]failure[/red]"
        out.print(f"{run.agent_id}: {status}  materialised {', '.join(run.materialized) or 'nothing'}  "
                  f"(run {run.run_id[:8]})")
        if run.error:
            out.print(f"  [red]{run.error}[/red]")
        if run.not_promoted:
            out.print(f"  [yellow]stays on the LLM, not promoted: {run.not_promoted}[/yellow]")
        ok &= run.success
    return ok


def _run(select: str | None, agent: str | None, settings: Settings, asset_config: dict | None = None,
         clusters_per_agent: int | None = None, cluster_config: Any = None) -> bool:
    from slm_pipeline.run_log import send_library_output_to_log

    log_file = send_library_output_to_log(settings)  # before Dagster and the ML libraries are imported
    err.print(f"[dim]library warnings and logs: {log_file}; every event is in the Dagster UI[/dim]")
    from slm_pipeline.instance import get_instance
    from slm_pipeline.partitions import agent_partitions, split_task_cluster_key
    from slm_pipeline.runner import PipelineInterrupted, SelectionError, run_pipeline, selected_assets, stop_on_signals

    try:
        steps = selected_assets(select)
    except SelectionError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    from slm_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    agent_steps = sum(1 for k in steps if graph.get(k).partitions_def == agent_partitions)
    global_steps = sum(1 for k in steps if graph.get(k).partitions_def is None)
    cluster_steps = len(steps) - agent_steps - global_steps
    store = _store(settings)
    agents = store.agents()
    store.close()
    if agent is not None:
        if agent not in agents:
            err.print(f"[red]agent {agent!r} has no calls in the log store[/red]; known agents: "
                      f"{', '.join(agents) or '(none: run `slm-pipeline import` first)'}")
            raise typer.Exit(2)
        agents = [agent]
    if not agents:
        err.print("[yellow]the log store holds no calls yet: run `slm-pipeline import FILE` first[/yellow]")
        return True
    instance = get_instance(settings)
    from slm_pipeline.run_log import reroute_library_loggers

    import mlflow  # noqa: F401 - imported now so that its logging set-up is rerouted before the steps log

    reroute_library_loggers()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as progress:
        tasks = {a: progress.add_task(f"{a}", total=agent_steps) for a in agents}
        if global_steps:
            tasks["all"] = progress.add_task("all agents", total=global_steps)

        def on_step(partition: str, step: str, status: str) -> None:
            agent_id = split_task_cluster_key(partition)[0] if ":" in partition else partition
            progress.update(tasks[agent_id], advance=1, description=f"{partition}: {step} {status}")

        def on_partitions(agent_id: str, clusters: list[str]) -> None:
            progress.update(tasks[agent_id], total=agent_steps + cluster_steps * len(clusters))

        try:
            with stop_on_signals():
                # Dagster's console lines (ERROR ... RUN_FAILURE with stack traces) are left to the UI; each
                # run's outcome is printed below in one line, with its reason.
                runs = run_pipeline(instance, agents, select, on_step, log_level="CRITICAL",
                                    asset_config=asset_config, on_partitions=on_partitions,
                                    clusters_per_agent=clusters_per_agent, cluster_config=cluster_config)
        except PipelineInterrupted as stopped:
            interrupted = stopped
        else:
            interrupted = None
    if interrupted is not None:
        _print_interrupted(interrupted, settings)
        raise typer.Exit(130)
    return _print_runs(runs)


def _print_interrupted(stopped, settings: Settings) -> None:  # noqa: ANN001 - runner.PipelineInterrupted
    """What finished before Ctrl-C/SIGTERM, and how to go on."""
    finished = [r for r in stopped.runs if r.agent_id != (stopped.partition or "all")]
    err.print(f"[yellow]interrupted during {stopped.partition or 'the routing table'}[/yellow]: "
              f"{len(finished)} partition run(s) finished before it"
              + (": " + ", ".join(r.agent_id for r in finished) if finished else ""))
    checkpoints = sorted(settings.models_dir.glob("*/*/*/checkpoints/checkpoint-*"),
                         key=lambda p: p.stat().st_mtime) if settings.models_dir.is_dir() else []
    if checkpoints:
        err.print(f"the last training checkpoint is {checkpoints[-1]}; rerun the same command to go on: "
                  "the fine-tuning resumes from its last checkpoint")
    else:
        err.print("rerun the same command to go on (or --select the assets still to run)")


def _load_config(path: Path | None) -> dict | None:
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[red]cannot read --config {path}: {exc}[/red]")
        raise typer.Exit(2) from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        err.print(f"[red]--config {path} must map asset names to their config, e.g. "
                  "`finetuned_slm: {max_steps: 50}`[/red]")
        raise typer.Exit(2)
    return data


@app.command()
def run(
    select: Annotated[Optional[str], typer.Option(
        "--select", help="Dagster asset selection, e.g. '+curated_calls' or 'raw_agent_calls' (default: all)."
    )] = None,
    agent: Annotated[Optional[str], typer.Option(help="Only this agent (default: every agent in the log store).")]
    = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML of config per asset, e.g. `finetuned_slm: {max_steps: 50, processes: 2}`."
    )] = None,
    clusters_per_agent: Annotated[Optional[int], typer.Option(
        min=0, help="Run S4-S5 on each agent's N largest task clusters only, those that reach the dataset "
        "minimum first (default: all)."
    )] = None,
) -> None:
    """Materialise pipeline assets for every agent (S1-S3), then for each of its task clusters (S4-S5),
    in process, recorded in the Dagster instance."""
    if not _run(select, agent, Settings(), _load_config(config), clusters_per_agent):
        raise typer.Exit(1)


@app.command("new-encryption-key")
def new_encryption_key(
    key_id: Annotated[Optional[str], typer.Option("--id", help="Key id (default: random).")] = None,
) -> None:
    """Print a new AES-256 key as `key_id:base64_key` for SLM_PIPELINE_ENCRYPTION_KEYS.

    Put it first in the ring to make it the active key; keep older keys after it until no stored row
    uses them. With a key ring set, imported payloads are encrypted before they reach the database.
    """
    from slm_pipeline.core.crypto import new_key

    print(new_key(key_id))


@app.command("export-clusters")
def export_clusters(
    out_file: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    agent: Annotated[Optional[str], typer.Option(help="Only this agent (default: every agent).")] = None,
) -> None:
    """Write call_id,agent_id,cluster_id,cluster_label for every curated call (cluster_id empty when unclustered)."""
    import polars as pl

    from slm_pipeline.core.cluster.pipeline import ASSIGNMENTS_TABLE
    from slm_pipeline.core.curate.pipeline import CURATED_TABLE
    from slm_pipeline.core.lake import Lake

    settings = Settings()
    lake = Lake(settings.resolved_lake_url)
    store = _store(settings)
    agents = [agent] if agent else store.agents()
    store.close()
    frames, missing = [], []
    for agent_id in agents:
        curated = lake.read(CURATED_TABLE, agent_id, columns=["call_id", "agent_id"])
        if curated is None:
            missing.append(agent_id)
            continue
        assigned = lake.read(ASSIGNMENTS_TABLE, agent_id, columns=["call_id", "cluster_id", "cluster_label"])
        if assigned is None:
            assigned = pl.DataFrame(schema={"call_id": pl.String, "cluster_id": pl.String, "cluster_label": pl.String})
            missing.append(agent_id)
        frames.append(curated.join(assigned, on="call_id", how="left"))
    table = pl.concat(frames) if frames else pl.DataFrame(
        schema={"call_id": pl.String, "agent_id": pl.String, "cluster_id": pl.String, "cluster_label": pl.String})
    out_file.parent.mkdir(parents=True, exist_ok=True)
    table.select("call_id", "agent_id", "cluster_id", "cluster_label").write_csv(out_file)
    out.print(f"wrote {table.height:,} curated calls of {len(frames)} agent(s) to {out_file}")
    if missing:
        err.print(f"[yellow]not clustered yet:[/yellow] {', '.join(missing)} (run `slm-pipeline run --select "
                  f"+task_clusters`)")


@app.command()
def report(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (lists `agents` and `clusters`).")]
    = False,
    agent: Annotated[Optional[str], typer.Option(help="Only this agent (default: every agent).")] = None,
) -> None:
    """The conversion report: per agent, the share of calls routable to SLMs and the savings; per task
    cluster, its status (promoted, training, on the LLM and why), metrics and MLflow runs.

    Read from the lake and MLflow as they are now (materialise the pipeline first: `slm-pipeline run`).
    """
    from slm_pipeline.core.lake import Lake
    from slm_pipeline.core.refine.report import build_report, report_markdown

    settings = Settings()
    store = _store(settings)
    agents = [agent] if agent else store.agents()
    store.close()
    result = build_report(Lake(settings.resolved_lake_url), settings, agents)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    from rich.markdown import Markdown

    if not result["clusters"]:
        err.print("[yellow]no task clusters yet: run `slm-pipeline run` (or `make demo`) first[/yellow]")
    out.print(Markdown(report_markdown(result)))


SHOWCASE_AGENT = "support-bot"
SHOWCASE_CONFIG = {  # one whole epoch on a test split large enough for the promotion rule (>= 20 calls, 95%)
    "task_datasets": {"max_examples": 240, "test_fraction": 0.15, "prompt_form": "compact"},
    "finetuned_slm": {"max_steps": -1, "epochs": 1.0, "batch_size": 4, "eval_steps": 1000, "save_steps": 10},
    "slm_evaluation": {"max_test_calls": 30},
}


def _showcase_config(cluster_key: str, rank: int) -> dict[str, dict] | None:
    """The demo's showcase: the support agent's largest cluster trains until it can be promoted."""
    return SHOWCASE_CONFIG if rank == 0 and cluster_key.startswith(f"{SHOWCASE_AGENT}:") else None


@app.command()
def demo(
    calls: Annotated[int, typer.Option(min=1, help="Records of demo traffic to generate.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the demo traffic.")] = 0,
    train_steps: Annotated[int, typer.Option(
        min=1, help="Optimizer steps per fine-tuning run (capped for a quick demo; -1 in --config for full epochs)."
    )] = 10,
    clusters_per_agent: Annotated[int, typer.Option(
        min=0, help="Fine-tune each agent's N largest task clusters (S4-S5); the rest stop after S3.")] = 1,
    with_assistant: Annotated[bool, typer.Option(
        "--with-assistant", help="Add the general-assistant agent (eight tool suites) to the demo traffic.")] = False,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML of config per asset; overrides the demo's caps.")] = None,
    showcase: Annotated[bool, typer.Option(
        help="Train the support agent's largest cluster for a whole epoch (compact prompt, a larger test split) "
        "so the run ends with one cluster promoted and routed to its SLM; the others stay capped. About 5 of "
        "the demo's 13 minutes on two cores; --no-showcase caps every cluster.")] = True,
) -> None:
    """The whole conversion on bundled demo traffic: generate, import, then materialise every asset
    (S1-S3 for every agent, S4-S5 for each agent's largest task clusters, with capped training steps)."""
    settings = Settings()
    traffic = settings.resolved_home / "demo" / f"traffic-{calls}-{seed}{'-assistant' if with_assistant else ''}.jsonl"
    started = time.monotonic()
    out.rule("demo traffic")
    demo_traffic(traffic, calls, seed, None, with_assistant)
    out.rule("S1 import")
    import_([traffic], as_json=False)
    out.rule("pipeline")
    # S6 evaluates every fine-tuned model against the teacher on the test split; S5's own generation on
    # it (`evaluate_test`) would repeat that work, about a quarter of each cluster's time here. One packed
    # sequence per step and a 4-example screen keep the demo within its 20 minutes on two cores.
    caps = {"slm_candidates": {"screen_examples": 4}, "slm_evaluation": {"max_test_calls": 10},
            "finetuned_slm": {"max_steps": train_steps, "batch_size": 1, "eval_steps": train_steps,
                              "save_steps": train_steps, "evaluate_test": False}}
    for name, values in (_load_config(config) or {}).items():
        caps.setdefault(name, {}).update(values)
    ok = _run(None, None, settings, caps, clusters_per_agent, _showcase_config if showcase else None)
    out.rule(f"done in {time.monotonic() - started:.0f} s")
    out.print(f"Open the Dagster UI with `slm-pipeline ui` (Dagster home: {settings.dagster_home.resolve()}).")
    if not ok:
        raise typer.Exit(1)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the Dagster web UI.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Start the Dagster web UI and daemon (`dagster dev`) on this pipeline's instance; Ctrl-C or SIGTERM stops
    them and their runs within seconds."""
    from slm_pipeline.instance import ensure_dagster_home

    home = ensure_dagster_home(Settings())
    out.print(f"Dagster home: {home}; open http://{host}:{port}")
    from slm_pipeline.process_tree import run_process_tree

    command = [sys.executable, "-m", "dagster", "dev", "-m", "slm_pipeline.definitions", "-h", host, "-p", str(port)]
    code = run_process_tree(command, env=os.environ.copy())
    if code == 130:
        err.print("stopped the Dagster UI, its daemon and their runs (a stopped training resumes from its last "
                  "checkpoint when it runs again)")
    raise typer.Exit(code)


@app.command()
def gateway(
    upstream: Annotated[Optional[str], typer.Option(
        help="Base URL of the OpenAI-compatible LLM, with its /v1 (default: SLM_PIPELINE_GATEWAY_UPSTREAM_URL, "
             "else https://api.openai.com/v1).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes (one per core); each has its own call log and spool file.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log one line per request (method, path, status).")] = False,
) -> None:
    """Run the logging gateway: point an agent's OpenAI `base_url` at http://HOST:PORT/v1.

    Each agent authenticates with its own key (`slm-pipeline keys create --agent NAME`); every call is
    proxied to the upstream (streaming too) and logged to the log store, payloads encrypted with
    SLM_PIPELINE_ENCRYPTION_KEYS. Logging never delays a reply: calls are inserted in batches, and
    spooled to disk (sealed) while the store is down. The upstream's key comes from
    SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY (or OPENAI_API_KEY); the store from
    SLM_PIPELINE_GATEWAY_DATABASE_URL (an insert-only role, see `slm-pipeline db-roles`), else
    SLM_PIPELINE_DATABASE_URL. Health: GET /healthz; counters: GET /metrics.
    """
    from slm_pipeline.core.crypto import KeyRingError
    from slm_pipeline.core.store import SchemaError
    from slm_pipeline.gateway.config import GatewayConfig
    from slm_pipeline.gateway.server import GatewaySetupError, build_app, serve

    if upstream:
        os.environ["SLM_PIPELINE_GATEWAY_UPSTREAM_URL"] = upstream  # what worker processes read
    config = GatewayConfig()
    try:
        application = build_app(config)  # also checks the setup before any worker starts
    except (GatewaySetupError, KeyRingError, SchemaError) as exc:
        err.print(f"[red]cannot start the gateway:[/red] {exc}")
        raise typer.Exit(2) from exc
    except Exception as exc:  # the store does not answer, ...
        err.print(f"[red]cannot open the log store at {config.resolved_database_url()!r}:[/red] {exc}")
        raise typer.Exit(2) from exc
    err.print(f"gateway on http://{host}:{port}/v1 -> {config.upstream_url}"
              + (f" ({workers} workers)" if workers > 1 else ""))
    if workers > 1:
        application.state.gateway.call_log.store.close()
    serve(application if workers == 1 else None, host, port, workers=workers, access_log=access_log)


@app.command("serve")
def serve_slms(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    base_model: Annotated[Optional[str], typer.Option(
        help="Catalogue name of the base SLM (default: SLM_PIPELINE_SERVING_BASE_MODEL, else the base model of "
             "the routing table's SLM routes, else smollm2-135m-instruct).")] = None,
) -> None:
    """Serve the fine-tuned SLMs, OpenAI-compatible, on http://HOST:PORT/v1: the base model and every promoted
    LoRA adapter, each by its serving model name (slm-<agent>-<cluster>), and the challengers the routing
    table names for the gateway's shadow (slm-<agent>-<cluster>-v<version>). GET /v1/models lists them.

    The gateway sends a call here when the routing table routes its task cluster to an SLM: it asks for the
    route's serving model with the agent's own request, and this server renders the adapter's task prompt,
    generates greedily and parses tool calls out of the text. An answer that cannot be read as the tool call
    it tried to be comes back as text with a top-level `slm_parse_error`, and the gateway falls back to the
    LLM. Set SLM_PIPELINE_SERVING_URL=http://HOST:PORT/v1 when materialising routing_table so that the table
    (and the gateway) knows where this server is. The routing table is re-read every
    SLM_PIPELINE_SERVING_RELOAD_INTERVAL_S (5 s): new champions load and removed ones unload without a
    restart. Health: GET /healthz. For GPUs, serve the same adapters with vLLM (infra/vllm/README.md).
    """
    from slm_pipeline.serving.config import ServingConfig
    from slm_pipeline.serving.server import ServingSetupError, build_app, serve

    config = ServingConfig(**({"base_model": base_model} if base_model else {}))
    try:
        application = build_app(config)
    except ServingSetupError as exc:
        err.print(f"[red]cannot start the SLM server:[/red] {exc}")
        raise typer.Exit(2) from exc
    server = application.state.server
    skipped = len(server.adapters.skipped)
    err.print(f"SLM server on http://{host}:{port}/v1: {', '.join(server.models())}"
              + (f" ({skipped} route(s) skipped, see /healthz)" if skipped else ""))
    serve(application, host, port)


from slm_pipeline.stack.cli import stack_app  # noqa: E402 - the sub-command group sits beside `keys`

app.add_typer(stack_app, name="stack")

from slm_pipeline.tools_cli import tools_app  # noqa: E402

app.add_typer(tools_app, name="tools")

keys_app = typer.Typer(help="API keys of the gateway: one or more per agent, stored hashed.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _print_keys(keys: list[Any]) -> None:
    table = Table("key id", "agent", "human-facing", "created", "revoked", "description")
    for column in table.columns[:5]:
        column.no_wrap = True  # ids are copied into `keys revoke`
    for key in keys:
        table.add_row(key.key_id, key.agent_id, "yes" if key.human_facing else "no",
                      f"{key.created_at:%Y-%m-%d %H:%M}", f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
                      key.description or "")
    out.print(table)


@keys_app.command("create")
def keys_create(
    agent: Annotated[str, typer.Option(help="The agent this key identifies; its calls are logged under it.")],
    human_facing: Annotated[bool, typer.Option(
        help="Mark this key's calls human-facing unless a call says otherwise (header x-slm-human-facing).")] = False,
    description: Annotated[Optional[str], typer.Option(help="A note: who holds the key.")] = None,
) -> None:
    """Create a key for an agent and print it once (only its hash is stored)."""
    from slm_pipeline.core.store.keys import ApiKeyError, create_key

    store = _store(Settings())
    try:
        record, key = create_key(store, agent, human_facing=human_facing, description=description)
    except ApiKeyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    err.print(f"created key {record.key_id} for agent {agent!r}; it is shown only now:")
    print(key)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (`keys list`).")]) -> None:
    """Revoke a key; the gateway refuses it within SLM_PIPELINE_GATEWAY_KEY_REFRESH_S (2 s)."""
    from slm_pipeline.core.store.keys import ApiKeyError, revoke_key

    try:
        key = revoke_key(_store(Settings()), key_id)
    except ApiKeyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    out.print(f"revoked key {key.key_id} of agent {key.agent_id!r}")


@keys_app.command("list")
def keys_list(agent: Annotated[Optional[str], typer.Option(help="Only this agent's keys.")] = None) -> None:
    """List keys (ids, agents, status); the keys themselves are not stored."""
    from slm_pipeline.core.store.keys import list_keys

    _print_keys(list_keys(_store(Settings()), agent))


@app.command("db-roles")
def db_roles(
    gateway_role: Annotated[Optional[str], typer.Option(help="Role of the gateway: may insert calls, not read them.")] = None,
    pipeline_role: Annotated[Optional[str], typer.Option(help="Role of the pipeline: reads and imports calls.")] = None,
    create_roles: Annotated[bool, typer.Option(help="Create missing roles (LOGIN, no password: set one after).")] = False,
) -> None:
    """Grant least-privilege access to the Postgres log store (run as the owner of its tables)."""
    from slm_pipeline.core.store.roles import RoleError, grant_roles

    try:
        grants = grant_roles(_store(Settings()), gateway=gateway_role, pipeline=pipeline_role, create=create_roles)
    except RoleError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for grant in grants:
        privileges = "; ".join(f"{p} on {t}" for t, p in grant.privileges.items())
        out.print(f"{grant.kind} role {grant.role!r}{' (created)' if grant.created else ''}: {privileges}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
