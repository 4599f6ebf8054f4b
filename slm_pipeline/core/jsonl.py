"""Reading JSON Lines defensively: bounded line length, exact line numbers and offsets."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_CHUNK = 1 << 20
EXCERPT_BYTES = 4096


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    offset: int  # byte offset of the line's start (in the uncompressed stream)
    data: bytes  # without the line break; only the first EXCERPT_BYTES when `oversized`
    size: int  # bytes in the line, without the break
    oversized: bool = False


def open_binary(path: Path) -> IO[bytes]:
    """Open a .jsonl file, or a gzip-compressed .jsonl.gz, for reading bytes."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_lines(stream: IO[bytes], max_bytes: int) -> Iterator[Line]:
    """Yield every line of `stream`; a line over `max_bytes` is skipped over, never held in memory."""
    number = 0
    offset = 0
    while True:
        data = stream.readline(max_bytes + 1)
        if not data:
            return
        number += 1
        start = offset
        if len(data) > max_bytes and not data.endswith(b"\n"):
            size = len(data)
            while True:  # skip to the end of this line in bounded chunks
                rest = stream.readline(_CHUNK)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            offset += size
            size -= 1 if rest.endswith(b"\n") else 0
            yield Line(number, start, data[:EXCERPT_BYTES], size, oversized=True)
            continue
        offset += len(data)
        data = data.rstrip(b"\r\n")
        yield Line(number, start, data, len(data))
