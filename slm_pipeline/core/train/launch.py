"""The command line that starts a training process: plain Python, or the deepspeed launcher over N ranks."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

ENTRY_MODULE = "slm_pipeline.training_process"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_command(spec_path: Path, processes: int = 1, launcher: str = "auto") -> list[str]:
    """`launcher`: python (one process), deepspeed (N ranks on this node), or auto (deepspeed when N > 1)."""
    if launcher == "auto":
        launcher = "deepspeed" if processes > 1 else "python"
    if launcher == "python":
        if processes != 1:
            raise ValueError("launcher=python runs one process; use launcher=deepspeed for several")
        return [sys.executable, "-m", ENTRY_MODULE, str(spec_path)]
    if launcher != "deepspeed":
        raise ValueError(f"unknown launcher {launcher!r}: python, deepspeed or auto")
    deepspeed = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if deepspeed is None:
        raise FileNotFoundError("the deepspeed launcher is not installed: pip install deepspeed")
    return [deepspeed, "--num_gpus", str(processes), "--master_port", str(free_port()), "--no_local_rank",
            "--module", ENTRY_MODULE, str(spec_path)]
