from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl
import pytest

from slm_pipeline.core.lake import Lake, LakeReadError


def frame(start: int, stop: int) -> pl.DataFrame:
    return pl.DataFrame({"seq": list(range(start, stop)), "call_id": [f"c{i}" for i in range(start, stop)]})


@pytest.mark.parametrize("url", ["local", "memory"])
def test_append_read_and_watermark_on_any_fsspec_url(url: str, tmp_path: Path):
    lake = Lake(str(tmp_path / "lake") if url == "local" else f"memory://lake-{uuid.uuid4().hex}")
    assert lake.read("t", "a1") is None and lake.watermark("t", "a1") == 0
    lake.append("t", "a1", frame(1, 4), 1, 3)
    lake.append("t", "a1", frame(4, 6), 4, 5)
    lake.append("t", "a2", frame(9, 10), 9, 9)
    assert lake.watermark("t", "a1") == 5 and lake.watermark("t", "a2") == 9
    assert lake.read("t", "a1")["seq"].to_list() == [1, 2, 3, 4, 5]
    assert lake.read("t", "a1", columns=["call_id"]).columns == ["call_id"]
    assert [Path(f).name for f in lake.files("t", "a1")] == ["part-000000000001-000000000003.parquet",
                                                           "part-000000000004-000000000005.parquet"]


def test_hive_layout_reads_as_one_dataset(tmp_path: Path):
    lake = Lake(str(tmp_path))
    lake.append("t", "a1", frame(1, 3), 1, 2)
    lake.append("t", "a2", frame(3, 4), 3, 3)
    dataset = pl.scan_parquet(str(tmp_path / "t" / "**" / "*.parquet"), hive_partitioning=True).collect()
    assert sorted(dataset["agent_id"].unique().to_list()) == ["a1", "a2"] and dataset.height == 3


def test_leftover_temporary_files_are_ignored(tmp_path: Path):
    lake = Lake(str(tmp_path))
    lake.append("t", "a1", frame(1, 3), 1, 2)
    (tmp_path / "t" / "agent_id=a1" / ".tmp-dead.parquet").write_bytes(b"half a file")
    assert lake.watermark("t", "a1") == 2 and lake.read("t", "a1").height == 2


def test_a_corrupted_file_is_named_in_the_error(tmp_path: Path):
    lake = Lake(str(tmp_path))
    lake.append("t", "a1", frame(1, 3), 1, 2)
    path = lake.append("t", "a1", frame(3, 5), 3, 4)
    Path(path).write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LakeReadError) as info:
        lake.read("t", "a1")
    assert "part-000000000003-000000000004.parquet" in str(info.value)
    assert "re-materialise t for agent 'a1'" in str(info.value)


def test_reading_only_the_newest_files_that_hold_enough_rows(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for first in (1, 11, 21):
        lake.append("t", "a1", pl.DataFrame({"seq": list(range(first, first + 10))}), first, first + 9)
    assert lake.read("t", "a1", latest_rows=5)["seq"].to_list() == list(range(21, 31))
    assert lake.read("t", "a1", latest_rows=11)["seq"].to_list() == list(range(11, 31))
    assert lake.read("t", "a1", latest_rows=1000).height == 30
    assert lake.read("t", "nobody", latest_rows=5) is None
