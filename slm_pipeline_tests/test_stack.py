"""The local stack's parts: detached processes, databases and roles, and a start that fails cleanly.

The whole stack running the pipeline is test_e2e_stack.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from slm_pipeline.stack import Stack, StackConfig, StackError
from slm_pipeline.stack import processes
from slm_pipeline.stack.databases import DatabaseSetupError, database_url, drop_databases, ensure_databases
from slm_pipeline_tests.conftest import ADMIN_URL
from slm_pipeline_tests.servers import free_port

SLM = str(Path(sys.executable).parent / "slm-pipeline")


def _config(tmp_path: Path, **overrides) -> StackConfig:  # noqa: ANN003
    return StackConfig(**{"home": tmp_path / "stack", "admin_url": ADMIN_URL,
                          "database_prefix": f"slm_t_{uuid.uuid4().hex[:8]}", **overrides})


def test_a_stopped_or_reused_pid_is_not_alive_and_stop_escalates_to_sigkill(tmp_path: Path):
    record = processes.start("sleeper", ["sleep", "60"], {}, tmp_path / "sleeper.log", cwd=tmp_path)
    assert processes.alive(record)
    assert not processes.alive(replace(record, start_ticks=record.start_ticks + 1))  # same pid, other process
    assert processes.stop(record, timeout_s=5) == "stopped"
    assert not processes.alive(record) and processes.stop(record, 5) == "not running"

    stubborn = processes.start("stubborn", ["bash", "-c", "trap '' TERM; echo ignoring-$((6*7)); sleep 60 & wait"], {},
                               tmp_path / "stubborn.log", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while "ignoring-42" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGTERM must come after the trap is set
    assert processes.stop(stubborn, timeout_s=1) == "killed after 1 s (it ignores SIGTERM)"
    assert not processes.alive(stubborn)
    assert "bash -c" in (tmp_path / "stubborn.log").read_text()  # each start is headed by its command line


def test_a_service_stops_on_sigterm_even_when_its_starter_blocks_and_ignores_it(tmp_path: Path):
    """Blocked and ignored signals survive fork and exec; a service must not inherit them from whoever started it
    (a supervisor, a test runner, a library that left SIGTERM so)."""
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        record = processes.start("sleeper", ["sleep", "60"], {}, tmp_path / "sleeper.log", cwd=tmp_path)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGTERM, previous)
    assert Path(f"/proc/{record.pid}/cmdline").read_text().split("\0")[0] == "sleep"  # start returns once exec'd
    assert processes.stop(record, timeout_s=5) == "stopped"
    with pytest.raises(FileNotFoundError, match="no-such-service-binary"):
        processes.start("missing", ["no-such-service-binary"], {}, tmp_path / "missing.log", cwd=tmp_path)


def test_databases_and_roles_are_made_once_and_purged(tmp_path: Path):
    config = _config(tmp_path)
    passwords = {"pipeline": "p-" + uuid.uuid4().hex, "gateway": "g-" + uuid.uuid4().hex}
    try:
        made = ensure_databases(config, passwords)
        assert sorted(made) == sorted([f"role {config.role('pipeline')}", f"role {config.role('gateway')}"]
                                      + [f"database {config.database(d)}" for d in ("dagster", "mlflow", "logstore")])
        assert ensure_databases(config, passwords) == []  # idempotent
        with psycopg.connect(database_url(config, "logstore", "pipeline", passwords["pipeline"])) as conn:
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                                 ).fetchone()[0]
            assert owner == config.role("pipeline")
    finally:
        dropped = drop_databases(config)
    assert len(dropped) == 5 and drop_databases(config) == []


def test_an_unreachable_admin_server_is_named_with_what_to_do(tmp_path: Path):
    config = _config(tmp_path, admin_url=f"postgresql://nobody:secret@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(DatabaseSetupError, match="SLM_PIPELINE_STACK_ADMIN_URL") as info:
        ensure_databases(config, {"pipeline": "x", "gateway": "y"})
    assert "secret" not in str(info.value)  # the password is not printed


def test_a_service_that_cannot_start_is_reported_with_its_log_and_the_others_are_stopped(tmp_path: Path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()  # MLflow's port is taken: it exits at once
    config = _config(tmp_path, mlflow_port=busy.getsockname()[1], dagster_port=free_port(),
                     gateway_port=free_port(), serving_port=free_port(), code_server_port=free_port(),
                     startup_timeout_s=120)
    stack = Stack(config)
    try:
        with pytest.raises(StackError, match="mlflow") as info:
            stack.up()
        assert str(config.resolved_home / "logs" / "mlflow.log") in str(info.value)
        assert all(state.waiting_for == "not running" for state in stack.status())
        assert not list((config.resolved_home / "run").glob("*.json"))  # no pid file left behind
        private = [config.resolved_home / "stack.json", *(config.resolved_home / "secrets").iterdir()]
        assert len(private) == 3 and all(p.stat().st_mode & 0o077 == 0 for p in private)  # owner-only
    finally:
        busy.close()
        stack.down(purge=True)


def test_commands_on_a_stack_that_was_never_started_say_how_to_start_one(tmp_path: Path):
    with pytest.raises(StackError, match="stack up"):
        Stack.existing(tmp_path / "nothing")
    done = subprocess.run([SLM, "stack", "status", "--home", str(tmp_path / "nothing")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "slm-pipeline stack up" in done.stderr
