"""Append-only files where sealed call rows wait while the log store is unreachable.

Each gateway process appends to its own file (`spool-<host>-<pid>.jsonl`, owner-only). Replaying
claims a file by renaming it, inserts its rows, then deletes it. Inserts are idempotent on
`call_id`, so a replay cut short (the store fails again, the process dies) is simply run again:
nothing is lost and nothing is stored twice. Files of processes that died are claimed too. Rows
are already encrypted: no plaintext payload reaches the disk.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from slm_pipeline.core.store import StoredCall

log = logging.getLogger(__name__)
_BYTES = ("request_payload", "response_payload")
_TIMES = ("timestamp", "ingested_at")


def encode(row: StoredCall) -> bytes:
    data: dict[str, Any] = dict(row)
    for name in _BYTES:
        data[name] = base64.b64encode(data[name]).decode()
    return orjson.dumps(data) + b"\n"


def decode(line: bytes) -> StoredCall:
    data = orjson.loads(line)
    for name in _BYTES:
        data[name] = base64.b64decode(data[name])
    for name in _TIMES:
        data[name] = datetime.fromisoformat(data[name])
    return StoredCall(**data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._host = socket.gethostname().replace("-", "_")
        self.path = folder / f"spool-{self._host}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()
        self.rows_written = 0

    def append(self, rows: Sequence[StoredCall]) -> None:
        """Write rows durably (fsync) before returning."""
        data = b"".join(encode(row) for row in rows)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.rows_written += len(rows)

    def has_rows(self) -> bool:
        return any(self._claimable())

    def _claimable(self) -> Iterator[Path]:
        for path in sorted(self.folder.glob("spool-*.jsonl")):
            if path == self.path:
                yield path
                continue
            _, host, pid = path.stem.rsplit("-", 2)
            if host != self._host or not pid.isdigit() or not _alive(int(pid)):
                yield path  # another host's file (a shared folder) is only claimed when its name says dead
        yield from sorted(self.folder.glob("replay-*.jsonl"))  # a replay that was cut short

    def replay(self, insert: Callable[[list[StoredCall]], int], batch_size: int = 1000) -> tuple[int, int]:
        """Insert every spooled row; return (rows read, rows inserted). Raises what `insert` raises."""
        read = inserted = 0
        for path in list(self._claimable()):
            if path.name.startswith("spool-"):
                claimed = path.with_name(f"replay-{uuid.uuid4().hex[:12]}.jsonl")
                with self._lock:
                    if not path.exists():
                        continue
                    path.rename(claimed)
                path = claimed
            batch: list[StoredCall] = []
            try:
                handle = path.open("rb")
            except FileNotFoundError:  # another process replayed it meanwhile
                continue
            with handle:
                for number, line in enumerate(handle, 1):
                    try:
                        batch.append(decode(line))
                    except (ValueError, KeyError, TypeError) as exc:  # a line torn by a crash mid-write
                        log.error("spool file %s line %d is unreadable and was skipped: %s", path, number, exc)
                        continue
                    if len(batch) >= batch_size:
                        inserted += insert(batch)
                        read += len(batch)
                        batch = []
            if batch:
                inserted += insert(batch)
                read += len(batch)
            path.unlink(missing_ok=True)
        return read, inserted
