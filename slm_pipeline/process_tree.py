"""Running a long-lived command (the Dagster UI and daemon) so that Ctrl-C or SIGTERM stops all of it.

`dagster dev` starts the web server, the daemon, code servers, and the runs those launch, in
processes of their own. `run_process_tree` starts the command in its own process group and,
on SIGINT or SIGTERM, asks the whole tree to stop (SIGTERM to the command, then to every
descendant that is left) and kills what is still there after `grace_seconds`.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

import psutil


def stop_tree(pid: int, grace_seconds: float = 5.0) -> list[int]:
    """Stop a process and all its descendants within about 2 × `grace_seconds`; the pids that had to be killed."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]  # before any exits and its children are re-parented
    except psutil.NoSuchProcess:
        return []
    try:
        root.terminate()
    except psutil.NoSuchProcess:
        pass
    _, alive = psutil.wait_procs([root], timeout=grace_seconds)
    for process in family:
        try:
            family.extend(p for p in process.children(recursive=True) if p not in family)
        except psutil.NoSuchProcess:
            continue
    for process in family[1:]:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace_seconds)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in alive]


def run_process_tree(command: Sequence[str], env: Mapping[str, str] | None = None,
                     grace_seconds: float = 5.0) -> int:
    """Run `command` until it ends (its exit code) or until SIGINT/SIGTERM (then its whole tree stops; 130)."""
    process = subprocess.Popen(list(command), env=dict(env) if env is not None else None, start_new_session=True)
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while process.poll() is None and not stop.is_set():
            time.sleep(0.2)
        if stop.is_set():
            stop_tree(process.pid, grace_seconds)
            process.wait()
            return 130
        return process.returncode
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
