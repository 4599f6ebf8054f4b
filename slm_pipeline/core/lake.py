"""The lake: Parquet datasets per table and agent, on a local folder or any fsspec URL.

Layout (Hive-style, so Spark, DuckDB and polars read it as one dataset):

    <lake>/<table>/agent_id=<agent>/part-<first seq>-<last seq>.parquet
    <lake>/<table>/agent_id=<agent>/cluster_id=<cluster>/data.parquet   (per task cluster, from S4 on)

Append-only tables (the raw calls) are written once per batch, under a temporary
name first, and never rewritten; the highest `last seq` in a partition is its
watermark, so a run that failed half-way leaves nothing behind that the next run
would duplicate. Derived tables (curated calls, ...) are rewritten whole as
`data.parquet`, again through a temporary name, so readers see the old or the new
version, never half of one.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import fsspec
import polars as pl

_PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet$")
_WHOLE = "data.parquet"


def cluster_partition(agent_id: str, cluster_id: str) -> str:
    """The partition of per-cluster tables: `<table>/agent_id=<agent>/cluster_id=<cluster>/`."""
    return f"{agent_id}/cluster_id={cluster_id}"


class LakeReadError(RuntimeError):
    """A lake file that cannot be read; the message names it and says what to do."""


class Lake:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def partition_path(self, table: str, agent_id: str) -> str:
        return f"{self.root}/{table}/agent_id={agent_id}"

    def partition_url(self, table: str, agent_id: str) -> str:
        return f"{self.url}/{table}/agent_id={agent_id}"

    def files(self, table: str, agent_id: str) -> list[str]:
        folder = self.partition_path(table, agent_id)
        if not self.fs.exists(folder):
            return []
        names = self.fs.ls(folder, detail=False)
        whole = [p for p in names if p.rsplit("/", 1)[-1] == _WHOLE]
        parts = sorted((p for p in names if _PART.search(p)), key=lambda p: _PART.search(p).group(1))  # type: ignore[union-attr]
        return whole + parts

    def watermark(self, table: str, agent_id: str) -> int:
        """The highest source `seq` already in the partition (0 when empty)."""
        return max((int(m.group(2)) for p in self.files(table, agent_id) if (m := _PART.search(p))), default=0)

    def append(self, table: str, agent_id: str, frame: pl.DataFrame, first_seq: int, last_seq: int) -> str:
        """Write `frame` (rows `first_seq`..`last_seq`) as a new file of the partition; return its path."""
        return self._write(table, agent_id, frame, f"part-{first_seq:012d}-{last_seq:012d}.parquet")

    def write(self, table: str, agent_id: str, frame: pl.DataFrame) -> str:
        """Replace the partition's content with `frame` (for tables recomputed whole)."""
        path = self._write(table, agent_id, frame, _WHOLE)
        for stale in self.files(table, agent_id):
            if stale != path:
                self.fs.rm(stale)
        return path

    def _write(self, table: str, agent_id: str, frame: pl.DataFrame, name: str) -> str:
        folder = self.partition_path(table, agent_id)
        self.fs.makedirs(folder, exist_ok=True)
        final = f"{folder}/{name}"
        temporary = f"{folder}/.tmp-{uuid.uuid4().hex}.parquet"
        with self.fs.open(temporary, "wb") as handle:
            frame.write_parquet(handle, compression="zstd", statistics=True)
        self.fs.mv(temporary, final)
        return final

    def put_file(self, table: str, agent_id: str, name: str, data: bytes) -> str:
        """Store a non-tabular artifact (a model file, a plot) in the partition's folder, atomically."""
        folder = self.partition_path(table, agent_id)
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open(temporary, "wb") as handle:
            handle.write(data)
        self.fs.mv(temporary, f"{folder}/{name}")
        return f"{folder}/{name}"

    def _newest(self, paths: list[str], rows: int) -> list[str]:
        """The shortest tail of `paths` (oldest first) whose files hold at least `rows` rows."""
        import pyarrow.parquet as pq

        held = 0
        for start in range(len(paths) - 1, -1, -1):
            with self.fs.open(paths[start], "rb") as handle:
                held += pq.ParquetFile(handle).metadata.num_rows
            if held >= rows:
                return paths[start:]
        return paths

    def get_file(self, table: str, agent_id: str, name: str) -> bytes | None:
        path = f"{self.partition_path(table, agent_id)}/{name}"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return handle.read()

    def read(self, table: str, agent_id: str, columns: list[str] | None = None, *, latest_rows: int | None = None
             ) -> pl.DataFrame | None:
        """The whole partition as one frame, or None when it has no file yet. With `latest_rows`, only its
        newest files, enough of them to hold that many rows (sensors look at recent traffic this way)."""
        frames = []
        paths = self.files(table, agent_id)
        if latest_rows is not None:
            paths = self._newest(paths, latest_rows)
        for path in paths:
            try:
                with self.fs.open(path, "rb") as handle:
                    frames.append(pl.read_parquet(handle, columns=columns))
            except Exception as exc:  # polars and pyarrow raise several kinds for a damaged file
                raise LakeReadError(
                    f"{self.fs.unstrip_protocol(path)} is not a readable Parquet file ({type(exc).__name__}: {exc}). "
                    f"Move it out of the lake and re-materialise {table} for agent {agent_id!r}."
                ) from exc
        if not frames:
            return None
        return pl.concat(frames, how="vertical_relaxed")
