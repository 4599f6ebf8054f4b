"""End to end: the real dagster-webserver and dagster-daemon on Postgres storage.

The repository's own dagster.yaml and workspace.yaml are used. The test launches
`ingest_job` for one agent through the GraphQL API and waits for the daemon to
run it; it also waits for the `new_agent_calls` sensor, evaluated by the daemon,
to add the other agents' partitions and ingest them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from slm_pipeline.core.collect import RAW_TABLE
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "slm_pipeline"
ARTIFACTS = REPO / "test-artifacts" / "e2e_dagster"

ADD_PARTITION = """
mutation AddPartition($name: String!, $key: String!, $repo: RepositorySelector!) {
  addDynamicPartition(partitionsDefName: $name, partitionKey: $key, repositorySelector: $repo) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {ARTIFACTS}")


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def stack(make_pg_database, demo_traffic: Path, tmp_path: Path) -> Iterator[dict]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_POSTGRES_URL": make_pg_database("dagster"),
        "SLM_PIPELINE_DATABASE_URL": make_pg_database("e2e_logstore"),
        "SLM_PIPELINE_HOME": str(tmp_path / "home"),
    }
    with LogStore(env["SLM_PIPELINE_DATABASE_URL"]) as store:
        import_files(store, [demo_traffic], tmp_path / "quarantine")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    workspace = str(REPO / "workspace.yaml")
    commands = {
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        "webserver": [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
    }
    processes = {}
    for name, command in commands.items():
        log = (ARTIFACTS / f"{name}.log").open("wb")
        processes[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
    try:
        _wait(lambda: _up(f"http://127.0.0.1:{port}/server_info"), 180, "dagster-webserver")
        yield {"port": port, "env": env, "dagster_home": dagster_home}
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_graphql_launch_and_daemon_sensor_on_postgres(stack: dict):
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack["port"])
    repo = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    agent = "support-bot"
    added = client._execute(ADD_PARTITION, {"name": "agent", "key": agent, "repo": repo})
    assert added["addDynamicPartition"]["__typename"] in ("AddDynamicPartitionSuccess",
                                                          "DuplicateDynamicPartitionError"), added

    run_id = client.submit_job_execution(
        "ingest_job", repository_location_name=LOCATION, repository_name="__repository__",
        tags={"dagster/partition": agent},
    )
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    status = _wait(lambda: (s := client.get_run_status(run_id)) in terminal and s, 240, f"run {run_id}")
    assert status == dg.DagsterRunStatus.SUCCESS

    env = stack["env"]
    lake = Lake(str(Path(env["SLM_PIPELINE_HOME"]) / "lake"))
    with LogStore(env["SLM_PIPELINE_DATABASE_URL"]) as store:
        agents = store.agents()
        assert lake.read(RAW_TABLE, agent).height == store.count(agent)

    os.environ["DAGSTER_POSTGRES_URL"] = env["DAGSTER_POSTGRES_URL"]
    try:
        with dg.DagsterInstance.from_config(str(stack["dagster_home"])) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            ours = instance.get_run_by_id(run_id)
            assert ours.tags["dagster/partition"] == agent

            def materialized_partitions() -> set[str] | None:
                records = instance.fetch_materializations(dg.AssetKey("raw_agent_calls"), limit=100).records
                partitions = {r.partition_key for r in records}
                return partitions if partitions >= set(agents) else None

            # The daemon evaluates the sensor: it adds the other agents and ingests them.
            assert _wait(materialized_partitions, 300, "the sensor's ingests of every agent", interval=3)
            assert set(instance.get_dynamic_partitions("agent")) == set(agents)
            sensor_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "new_agent_calls"}))
            assert {r.tags["dagster/partition"] for r in sensor_runs} >= set(agents) - {agent}
    finally:
        del os.environ["DAGSTER_POSTGRES_URL"]
