"""The lake: Parquet datasets per table and agent, on a local folder or any fsspec URL.

Layout (Hive-style, so Spark, DuckDB and polars read it as one dataset):

    <lake>/<table>/agent_id=<agent>/part-<first seq>-<last seq>.parquet

Files are written once, under a temporary name first, and never rewritten;
the highest `last seq` in a partition is its watermark, so a run that failed
half-way leaves nothing behind that the next run would duplicate.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import fsspec
import polars as pl

_PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet$")


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
        names = [p for p in self.fs.ls(folder, detail=False) if _PART.search(p)]
        return sorted(names, key=lambda p: _PART.search(p).group(1))  # type: ignore[union-attr]

    def watermark(self, table: str, agent_id: str) -> int:
        """The highest source `seq` already in the partition (0 when empty)."""
        return max((int(_PART.search(p).group(2)) for p in self.files(table, agent_id)), default=0)  # type: ignore[union-attr]

    def append(self, table: str, agent_id: str, frame: pl.DataFrame, first_seq: int, last_seq: int) -> str:
        """Write `frame` (rows `first_seq`..`last_seq`) as a new file of the partition; return its path."""
        folder = self.partition_path(table, agent_id)
        self.fs.makedirs(folder, exist_ok=True)
        final = f"{folder}/part-{first_seq:012d}-{last_seq:012d}.parquet"
        temporary = f"{folder}/.tmp-{uuid.uuid4().hex}.parquet"
        with self.fs.open(temporary, "wb") as handle:
            frame.write_parquet(handle, compression="zstd", statistics=True)
        self.fs.mv(temporary, final)
        return final

    def read(self, table: str, agent_id: str, columns: list[str] | None = None) -> pl.DataFrame | None:
        """The whole partition as one frame, or None when it has no file yet."""
        frames = []
        for path in self.files(table, agent_id):
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
