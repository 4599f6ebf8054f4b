"""Detached service processes: started in a session of their own, remembered in a pid file, stopped by group.

A pid file holds the pid and the process's start time (from /proc), so a later `down` never signals an
unrelated process that happens to reuse the pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat
    command: list[str]
    log: str

    @classmethod
    def load(cls, path: Path) -> ProcessRecord:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the fields after the command name, from field 3 on


def _start_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields else -1


def alive(record: ProcessRecord) -> bool:
    """The recorded process still runs (a zombie or a different process under the same pid does not count)."""
    fields = _stat(record.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == record.start_ticks


# A blocked or ignored signal survives fork and exec: a service started by a process that blocks or ignores
# SIGTERM (a supervisor, a test runner, a library that left it so) would not stop on SIGTERM. The service
# is exec'd through this shim, which unblocks every signal and puts the stopping ones back to their defaults.
_CLEAN_SIGNALS_EXEC = (
    "import os, signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_SETMASK, [])\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def start(name: str, command: list[str], env: dict[str, str], log: Path, cwd: Path) -> ProcessRecord:
    """Start `command` in a session of its own, with default signal handling whatever this process's is."""
    if shutil.which(command[0], path=env.get("PATH", os.defpath)) is None and not Path(command[0]).is_file():
        raise FileNotFoundError(f"{name}: {command[0]!r} is not an executable on the service's PATH")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen([sys.executable, "-c", _CLEAN_SIGNALS_EXEC, *command], cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # Return once the command itself runs: a SIGTERM that reached the shim while it still ignored it (as
    # inherited) would be lost, and the service would not stop.
    deadline = time.monotonic() + 30
    while process.poll() is None and _in_shim(process.pid):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name}: the start shim did not exec {command[0]!r} within 30 s (killed); "
                               f"see {log}, and check the machine's load")
        time.sleep(0.01)
    return ProcessRecord(name, process.pid, _start_ticks(process.pid), command, str(log))


def _in_shim(pid: int) -> bool:
    """The process still runs the shim (its command line holds the shim's code, or is empty while an exec is under
    way), not yet the command."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return not cmdline or _CLEAN_SIGNALS_EXEC.encode() in cmdline


def sigterm_handling(status: Path) -> dict[str, bool]:
    """Whether SIGTERM is blocked and ignored, in the kernel's view: a /proc status file (`/proc/<pid>/status`,
    `/proc/thread-self/status`). Both flags False when the file is gone."""
    try:
        fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
    except OSError:
        return {"blocks": False, "ignores": False}
    bit = 1 << (signal.SIGTERM - 1)
    return {what: bool(int(fields.get(field, "0"), 16) & bit) for what, field in (("blocks", "SigBlk"),
                                                                                    ("ignores", "SigIgn"))}


def _term_handling(pid: int) -> str:
    """Why a process may not stop on SIGTERM ('' when it neither blocks nor ignores it)."""
    return ", ".join(f"it {what} SIGTERM" for what, yes in sigterm_handling(Path(f"/proc/{pid}/status")).items()
                     if yes)


def _reap(pid: int) -> None:
    try:  # when this process started it (a failed `up`); otherwise init reaps it
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(record: ProcessRecord, timeout_s: float) -> str:
    """SIGTERM to the process group, SIGKILL after `timeout_s`; returns how it ended."""
    if not alive(record):
        return "not running"
    os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not alive(record):
            return "stopped"
        time.sleep(0.2)
    why = _term_handling(record.pid)
    os.killpg(record.pid, signal.SIGKILL)
    for _ in range(50):
        _reap(record.pid)
        if not alive(record):
            break
        time.sleep(0.1)
    return f"killed after {timeout_s:.0f} s" + (f" ({why})" if why else "")


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
