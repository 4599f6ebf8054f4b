"""The model of the SLM server: one base model, loaded once, with LoRA adapters loaded and unloaded by name.

peft's multi-adapter API keeps every adapter beside the base weights (`PeftModel.from_pretrained` for
the first, `load_adapter` for the others) and switches between them with `set_adapter`; the base
model answers inside `disable_adapter()`. Which adapter is active is state of the whole model, so
generation and every change of adapters hold one lock: the server generates one answer at a time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slm_pipeline.core.evaluate import render_prompt
from slm_pipeline.core.model_loads import exclusive
from slm_pipeline.core.models.loading import load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]  # length: it stopped at max_tokens
    seconds: float


class AdapterNotLoaded(LookupError):
    """The adapter was unloaded (a new routing table) between the request's lookup and its generation."""


class PromptTooLong(ValueError):
    """The rendered prompt does not fit the model's context."""


class Engine:
    """The base model and its adapters; `generate` is greedy and serialised."""

    def __init__(self, name: str, folder: Path, *, dtype: str = "float32", device: str = "cpu",
                 context_length: int | None = None) -> None:
        self.name, self.folder, self.context_length = name, folder, context_length
        self._base, self.tokenizer = load_model(folder, dtype=dtype, device=device)
        self._peft: Any = None  # the PeftModel once an adapter is loaded
        self._adapters: dict[str, Path] = {}  # peft adapter name -> folder
        self._lock = threading.Lock()
        eos = self._base.generation_config.eos_token_id
        self._eos = {t for t in [*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id]
                     if t is not None}

    @property
    def adapters(self) -> dict[str, Path]:
        return dict(self._adapters)

    def load_adapter(self, name: str, folder: Path) -> None:
        """Load a LoRA adapter (a folder with adapter_config.json) under `name`, beside the others."""
        from peft import PeftModel

        with self._lock, exclusive():
            if name in self._adapters:
                return
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._base, folder, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(folder, adapter_name=name)
            self._adapters[name] = folder
        log.info("loaded adapter %s from %s", name, folder)

    def unload_adapter(self, name: str) -> None:
        """Free an adapter's weights; the last one out leaves the plain base model."""
        with self._lock:
            if name not in self._adapters:
                return
            del self._adapters[name]
            if self._adapters:
                self._peft.delete_adapter(name)
            else:  # peft needs an adapter to exist: take the LoRA layers out instead
                self._base = self._peft.unload()
                self._peft = None
        log.info("unloaded adapter %s", name)

    @contextlib.contextmanager
    def _selected(self, adapter: str | None) -> Iterator[Any]:
        if adapter is None:
            if self._peft is None:
                yield self._base
            else:
                with self._peft.disable_adapter():
                    yield self._peft
            return
        if adapter not in self._adapters:
            raise AdapterNotLoaded(adapter)
        self._peft.set_adapter(adapter, inference_mode=True)
        yield self._peft

    def count_tokens(self, prompt: str) -> int:
        with self._lock:
            return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def generate(self, messages: list[dict[str, Any]], max_tokens: int, adapter: str | None = None) -> Generation:
        """The greedy answer to `messages` (rendered with the base's chat template) by `adapter`, or the base."""
        import torch

        with self._lock:  # the tokenizer too: a Rust tokenizer used from two threads can fail ("Already borrowed")
            started = time.perf_counter()
            prompt = render_prompt(self.tokenizer, messages)
            inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            prompt_tokens = int(inputs["input_ids"].shape[1])
            if self.context_length is not None:
                room = self.context_length - prompt_tokens
                if room < 1:
                    raise PromptTooLong(f"the prompt is {prompt_tokens} tokens; {self.name} reads at most "
                                        f"{self.context_length}")
                max_tokens = min(max_tokens, room)
            with self._selected(adapter) as model, torch.inference_mode():
                tokens = model.generate(**inputs.to(model.device), max_new_tokens=max_tokens, do_sample=False,
                                        pad_token_id=self.tokenizer.pad_token_id)
            new = tokens[0, prompt_tokens:].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            seconds = time.perf_counter() - started
        hit_limit = len(new) >= max_tokens and (not new or new[-1] not in self._eos)
        return Generation(text, prompt_tokens, len(new), "length" if hit_limit else "stop", seconds)
