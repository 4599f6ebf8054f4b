"""Ctrl-C and SIGTERM of a long-lived command stop its whole process tree (the UI, its daemon, their runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from slm_pipeline.core.train.launch import free_port

TREE = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "time.sleep(600)"])  # a grandchild that ignores SIGTERM, as a stuck run would
print("ready", flush=True)
time.sleep(600)
"""
RUNNER = "import sys; from slm_pipeline.process_tree import run_process_tree; sys.exit(run_process_tree(sys.argv[1:], grace_seconds=2))"


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_command_and_every_descendant(signum: int):
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, sys.executable, "-c", TREE], stdout=subprocess.PIPE,
                              text=True)
    assert runner.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while len(_descendants(runner.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = _descendants(runner.pid)
    assert len(tree) >= 2
    runner.send_signal(signum)
    assert runner.wait(timeout=30) == 130
    assert _wait_gone(tree, 5) == []  # the SIGTERM-ignoring grandchild was killed too


def test_ctrl_c_of_the_ui_stops_the_webserver_the_daemon_and_the_code_server(embedded_home: Path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(embedded_home / "dagster")}
    ui = subprocess.Popen([sys.executable, "-m", "slm_pipeline.cli", "ui", "--port", str(port)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while True:
        assert ui.poll() is None, ui.stdout.read()
        assert time.monotonic() < deadline, "the UI did not start within 240 s"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    names = " ".join(" ".join(p.cmdline()) for p in _descendants(ui.pid))
    assert "dagster-daemon" in names or "daemon" in names, names
    tree = _descendants(ui.pid)
    ui.send_signal(signal.SIGINT)
    output, _ = ui.communicate(timeout=40)
    assert ui.returncode == 130, output
    assert _wait_gone(tree, 10) == []
    assert "stopped the Dagster UI" in output
