"""Markdown for Dagster metadata and reports: tables (without a pandas dependency) and inline images."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import polars as pl


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def frame_to_markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


def png_markdown(png: bytes, title: str) -> str:
    """An image inline (a data URI), as Dagster's UI shows Markdown metadata."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
