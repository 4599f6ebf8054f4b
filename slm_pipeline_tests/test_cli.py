"""The `slm-pipeline` command line, embedded (SQLite) and on Postgres."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from slm_pipeline.cli import app
from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.refine.routing import load_routing_table
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.store import LogStore

runner = CliRunner()
COMMANDS = ["import", "demo-traffic", "run", "demo", "ui", "export-clusters", "new-encryption-key", "gateway", "keys",
            "db-roles", "serve"]


def invoke(*args: str) -> "CliRunner.invoke":
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help_through_the_console_script():
    script = shutil.which("slm-pipeline") or str(Path(os.sys.executable).parent / "slm-pipeline")
    top = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    for command in COMMANDS:
        assert command in top
        page = subprocess.run([script, command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "Usage:" in page and "--help" in page


def test_import_json_has_exactly_the_documented_keys(embedded_home: Path, demo_traffic: Path):
    result = invoke("import", str(demo_traffic), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"read", "imported", "duplicate", "quarantined", "skipped", "skip_reasons", "detected",
                           "quarantine_path"}
    assert report["read"] == report["imported"] + report["duplicate"] + report["quarantined"] == 1500
    assert report["detected"] == {str(demo_traffic): "canonical"} and report["skipped"] == 0
    assert (embedded_home / "logstore.sqlite").exists()


def test_import_exit_status_only_fails_for_unreadable_files(embedded_home: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a record"}\nnot json\n')
    result = invoke("import", str(bad), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["quarantined"] == 2 and Path(report["quarantine_path"]).is_file()
    assert Path(report["quarantine_path"]).parent == embedded_home / "quarantine"

    missing = invoke("import", str(bad), str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 1
    assert "nope.jsonl" in missing.stderr and "quarantined" in missing.stdout


def test_demo_traffic_command_writes_records_and_labels(tmp_path: Path):
    out = tmp_path / "d.jsonl"
    result = invoke("demo-traffic", "--out", str(out), "--calls", "50", "--seed", "3")
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == 50
    assert (tmp_path / "d.labels.csv").read_text().startswith("call_id,agent_id,task_type")


def test_run_materialises_every_agent_into_the_instance_the_ui_reads(embedded_home: Path, demo_traffic: Path):
    invoke("import", str(demo_traffic))
    result = invoke("run", "--clusters-per-agent", "0")  # S1-S3 for every agent; S4-S5 have their own tests
    assert result.exit_code == 0, result.output
    lake = Lake(Settings().resolved_lake_url)
    with LogStore(Settings().resolved_database_url) as store:
        agents = store.agents()
        for agent in agents:
            assert lake.read(RAW_TABLE, agent).height == store.count(agent)
    assert all(f"{agent}: success" in result.stdout for agent in agents)

    dagster_home = embedded_home / "dagster"
    assert (dagster_home / "dagster.yaml").exists()
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert sorted(instance.get_dynamic_partitions("agent")) == agents
    records = instance.fetch_materializations(dg.AssetKey("raw_agent_calls"), limit=10).records
    assert {r.partition_key for r in records} == set(agents)


def test_run_selection_and_agent_errors_are_clear(embedded_home: Path, demo_traffic: Path):
    invoke("import", str(demo_traffic))
    unknown = invoke("run", "--select", "no_such_asset")
    assert unknown.exit_code == 2 and "no_such_asset" in unknown.stderr
    nobody = invoke("run", "--agent", "ghost")
    assert nobody.exit_code == 2 and "support-bot" in nobody.stderr
    one = invoke("run", "--select", "raw_agent_calls", "--agent", "support-bot")
    assert one.exit_code == 0 and "support-bot: success" in one.stdout and "travel-planner" not in one.stdout


def test_clustering_without_collected_calls_fails_and_names_the_missing_step(embedded_home: Path, tmp_path: Path):
    from slm_pipeline.core.demo import write_demo_traffic

    write_demo_traffic(tmp_path / "t.jsonl", 60, seed=2)
    invoke("import", str(tmp_path / "t.jsonl"))
    # one layer up is curated_calls only: S1 never copied the calls to the lake, so there is nothing to curate
    result = invoke("run", "--select", "+task_clusters", "--agent", "support-bot")
    assert result.exit_code == 1, result.output
    assert "raw_agent_calls" in result.output and "*task_clusters" in result.output


def test_run_on_an_empty_store_says_what_to_do(embedded_home: Path):
    result = invoke("run")
    assert result.exit_code == 0 and "slm-pipeline import" in result.stderr


def test_unreachable_postgres_gives_a_clear_error(embedded_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  demo_traffic: Path):
    monkeypatch.setenv("SLM_PIPELINE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = invoke("import", str(demo_traffic))
    assert result.exit_code == 2 and "SLM_PIPELINE_DATABASE_URL" in result.stderr


def test_import_and_run_with_a_database_url(embedded_home: Path, monkeypatch: pytest.MonkeyPatch, store_url: str,
                                    demo_traffic: Path):
    monkeypatch.setenv("SLM_PIPELINE_DATABASE_URL", store_url)
    first = json.loads(invoke("import", str(demo_traffic), "--json").stdout.strip().splitlines()[-1])
    again = json.loads(invoke("import", str(demo_traffic), "--json").stdout.strip().splitlines()[-1])
    assert again["duplicate"] == again["read"] and again["imported"] == 0 and first["imported"] > 0
    assert invoke("run", "--agent", "travel-planner", "--clusters-per-agent", "0").exit_code == 0


def test_new_encryption_key_prints_a_usable_pair():
    from slm_pipeline.core.crypto import KeyRing

    result = invoke("new-encryption-key", "--id", "2026a")
    assert KeyRing.parse(result.stdout.strip()).active_id == "2026a"


def test_demo_runs_end_to_end(embedded_home: Path, tmp_path: Path, test_catalogue: Path,
                              monkeypatch: pytest.MonkeyPatch):
    # Every step for every agent, as the demo runs them, with the test catalogue's tiny model as the only candidate
    # and the demo's caps tightened through --config (as a user would): this test is about the command, not the
    # model (SmolLM2 is fine-tuned through the same assets in test_assets_finetune, test_e2e_routing, the canaries
    # and the stack), and three SmolLM2 fine-tunes and evaluations took 7-10 minutes of the suite.
    monkeypatch.setenv("SLM_PIPELINE_CATALOGUE", str(test_catalogue))
    caps = tmp_path / "caps.yaml"
    caps.write_text("slm_candidates: {models: [tiny-llama], screen_examples: 2}\n"
                    "finetuned_slm: {evaluate_test: false}\nslm_evaluation: {max_test_calls: 4}\n")
    result = invoke("demo", "--calls", "300", "--seed", "1", "--train-steps", "2", "--no-showcase",
                    "--config", str(caps))
    assert result.exit_code == 0, result.output
    assert "slm-pipeline ui" in result.stdout
    # An expected outcome reads as one line, not as Dagster's RUN_FAILURE and a stack trace.
    assert "RUN_FAILURE" not in result.output and "DagsterAssetCheckFailedError" not in result.output
    assert "slm_evaluation failure" not in result.output and "slm_evaluation not promoted" in result.output
    assert "library warnings and logs:" in result.output
    successes = [line.split(": success")[0] for line in result.stdout.splitlines() if ": success" in line]
    agents = [p for p in successes if ":" not in p and p != "all"]
    clusters = [p for p in successes if ":" in p]  # each agent's largest task cluster, through S4-S6
    assert sorted(agents) == ["data-analyst", "support-bot", "travel-planner"]
    assert sorted(c.split(":")[0] for c in clusters) == sorted(agents)
    # Two training steps promote nothing; each cluster says why, and the routing table keeps them on the LLM.
    assert result.stdout.count("stays on the LLM, not promoted:") == len(clusters)
    assert "all: success  materialised conversion_report, routing_table" in result.stdout
    table = load_routing_table(Lake(Settings().resolved_lake_url))
    assert {r.route for r in table.routes} == {"llm"} and len(table.routes) >= len(clusters)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_signal_stops_the_whole_command_and_its_training_within_seconds(
        embedded_home: Path, tmp_path: Path, test_catalogue: Path, how: str):
    """The real command in its own process group, stopped while it trains: Ctrl-C in a terminal signals the whole
    group (SIGINT), `kill` or a stopping container signals the command alone (SIGTERM), whose training child it
    must stop itself. Either way nothing of the group is left seconds later, and the command says how to go on."""
    import signal
    import time

    caps = tmp_path / "caps.yaml"
    caps.write_text("slm_candidates: {models: [tiny-llama], screen_examples: 2}\n"
                    "finetuned_slm: {evaluate_test: false, save_steps: 5}\n")
    script = shutil.which("slm-pipeline") or str(Path(os.sys.executable).parent / "slm-pipeline")
    env = {**os.environ, "SLM_PIPELINE_CATALOGUE": str(test_catalogue)}
    command = [script, "demo", "--calls", "300", "--seed", "1", "--train-steps", "100000", "--clusters-per-agent",
               "1", "--no-showcase", "--config", str(caps)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    models = Settings().models_dir
    deadline = time.monotonic() + 600
    while not list(models.glob("*/*/*/checkpoints/checkpoint-*")):  # training has run and checkpointed
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no training checkpoint within 10 minutes"
        time.sleep(1)
    stopped_at = time.monotonic()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    took = time.monotonic() - stopped_at
    assert process.returncode == 130, (stdout, stderr)
    assert took < 30, f"stopping took {took:.0f} s"
    assert "interrupted during" in stderr and "the fine-tuning resumes from its last checkpoint" in stderr, stderr
    time.sleep(2)
    with pytest.raises(ProcessLookupError):  # the training process is gone too, not orphaned
        os.killpg(process.pid, 0)


def test_a_signal_stops_the_pipeline_after_the_step_it_interrupts(monkeypatch: pytest.MonkeyPatch):
    import os
    import signal
    import time

    import dagster as dg

    from slm_pipeline import runner

    calls: list[str | None] = []

    def fake_execute(instance, partition, keys, run_config, on_step):  # noqa: ANN001, ANN202
        calls.append(partition)
        if partition == "agent-b":
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill` or a stopping container sends
            time.sleep(10)
        return runner.PartitionRun(partition or "all", "r", True)

    monkeypatch.setattr(runner, "_execute", fake_execute)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runner.PipelineInterrupted) as stopped, runner.stop_on_signals():
        runner.run_pipeline(dg.DagsterInstance.ephemeral(), ["agent-a", "agent-b", "agent-c"], "raw_agent_calls")
    assert calls == ["agent-a", "agent-b"]  # agent-c never started
    assert stopped.value.partition == "agent-b" and [r.agent_id for r in stopped.value.runs] == ["agent-a"]
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back


def test_a_partition_run_that_dagster_reports_interrupted_stops_the_pipeline(monkeypatch: pytest.MonkeyPatch):
    """Inside a Dagster run the signal is Dagster's (DagsterExecutionInterruptedError); the runner stops all the same."""
    from slm_pipeline import runner

    calls: list[str | None] = []

    def fake_execute(instance, partition, keys, run_config, on_step):  # noqa: ANN001, ANN202
        calls.append(partition)
        return runner.PartitionRun(partition or "all", "r", False, interrupted=partition == "agent-a")

    monkeypatch.setattr(runner, "_execute", fake_execute)
    with pytest.raises(runner.PipelineInterrupted) as stopped:
        runner.run_pipeline(dg.DagsterInstance.ephemeral(), ["agent-a", "agent-b"], "raw_agent_calls")
    assert calls == ["agent-a"] and stopped.value.partition == "agent-a"
    runner.stop_requested.clear()
