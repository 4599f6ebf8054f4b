"""Quarantine: where bad input goes, each entry with the reason it was set aside.

A quarantine file is JSON Lines, one entry per rejected record (or per file
that held no record), readable by people and by `jq`:

    {"file": "calls.jsonl", "line": 12, "offset": 4096, "reason": "missing_field",
     "field": "request.messages", "message": "...", "record": "<the raw line>"}

(A record over the size limit keeps only its first 4 KiB.)

It is created with owner-only permissions, since a rejected record may carry
the same personal data as an accepted one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import orjson


@dataclass
class QuarantineEntry:
    file: str
    line: int | None
    reason: str
    message: str
    field: str | None = None
    offset: int | None = None
    size_bytes: int | None = None
    record: str | None = None

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}: {self.message}"


@dataclass
class QuarantineFile:
    """An append-only quarantine file, opened lazily on the first entry."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    _handle: IO[bytes] | None = None

    def add(self, entry: QuarantineEntry) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = os.fdopen(fd, "ab")
        body: dict[str, Any] = {k: v for k, v in entry.__dict__.items() if v is not None}
        body["quarantined_at"] = datetime.now(timezone.utc).isoformat()
        self._handle.write(orjson.dumps(body) + b"\n")
        self.counts[entry.reason] = self.counts.get(entry.reason, 0) + 1

    def flush(self) -> None:
        """Make what was added readable now (a long-running writer: the gateway)."""
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def new_quarantine_path(directory: Path, prefix: str = "import") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return directory / f"{prefix}-{stamp}-{os.getpid()}.jsonl"


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
