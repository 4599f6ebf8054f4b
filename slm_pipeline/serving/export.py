"""Export the champion adapters for vLLM: a folder per serving model name, and the arguments that name them.

    python -m slm_pipeline.serving.export TARGET [--base-model NAME]

reads the current routing table, resolves its champions and shadow challengers on the base model
exactly as `slm-pipeline serve` does (a champion must still hold the registry's alias), and writes:

    TARGET/adapters/<model name>/      each one's LoRA adapter (adapter_config.json + weights)
    TARGET/lora-modules.txt            one `--lora-modules` JSON value per line: name, path, base_model_name
    TARGET/vllm.json                   the base model (catalogue name, and the Hub id or folder to serve),
                                       the --max-lora-rank the adapters need, the routes skipped and why

Adapters of routes no longer in the table are removed from TARGET/adapters. `infra/vllm/serve.sh`
runs this, then `vllm serve` with these values.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.models.catalogue import CatalogueError, load_catalogue
from slm_pipeline.core.refine.routing import load_routing_table
from slm_pipeline.core.settings import Settings
from slm_pipeline.serving.adapters import SkippedRoute, base_of_routes, resolve_table
from slm_pipeline.serving.config import DEFAULT_BASE_MODEL

VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


@dataclass
class VllmExport:
    base_model: str  # the catalogue name: vLLM's --served-model-name, and each adapter's base_model_name
    base: str  # what to pass `vllm serve`: the Hub id, else the local weights folder
    max_lora_rank: int
    lora_modules: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    routing_table_version: int | None = None


def _rank(folder: Path) -> int:
    config = json.loads((folder / "adapter_config.json").read_text())
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def export_for_vllm(target: Path, base_model: str | None = None, settings: Settings | None = None) -> VllmExport:
    """Copy the champion adapters of the current routing table under `target` and describe them for vLLM."""
    settings = settings or Settings()
    table = load_routing_table(Lake(settings.resolved_lake_url))
    base_model = base_model or base_of_routes(table) or DEFAULT_BASE_MODEL
    entry = load_catalogue(settings.catalogue).get(base_model)
    base = entry.source.hub_id or entry.source.local_path or base_model
    adapters_dir = target / "adapters"
    adapters_dir.mkdir(parents=True, exist_ok=True)
    export = VllmExport(base_model, base, VLLM_MAX_LORA_RANKS[0],
                        routing_table_version=table.version if table else None)
    ranks = []
    for outcome in resolve_table(table, base_model, settings):
        if isinstance(outcome, SkippedRoute):
            export.skipped.append(outcome.as_json())
            continue
        destination = adapters_dir / outcome.model
        staging = adapters_dir / f".{outcome.model}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(outcome.folder, staging)
        shutil.rmtree(destination, ignore_errors=True)
        staging.rename(destination)
        ranks.append(_rank(destination))
        export.lora_modules.append({"name": outcome.model, "path": str(destination.resolve()),
                                    "base_model_name": base_model})
    for stale in adapters_dir.iterdir():
        if stale.is_dir() and stale.name not in {m["name"] for m in export.lora_modules}:
            shutil.rmtree(stale)
    needed = max(ranks, default=0)
    export.max_lora_rank = next((r for r in VLLM_MAX_LORA_RANKS if r >= needed), VLLM_MAX_LORA_RANKS[-1])
    (target / "lora-modules.txt").write_text("".join(json.dumps(m) + "\n" for m in export.lora_modules))
    (target / "vllm.json").write_text(json.dumps(export.__dict__, indent=2))
    return export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slm_pipeline.serving.export", description=__doc__.split("\n")[0])
    parser.add_argument("target", type=Path, help="Folder to write adapters/, lora-modules.txt and vllm.json to.")
    parser.add_argument("--base-model", help="Catalogue name of the base model (default: the routes' base).")
    args = parser.parse_args(argv)
    try:
        export = export_for_vllm(args.target, args.base_model)
    except (KeyError, CatalogueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    for skipped in export.skipped:
        print(f"skipped {skipped['model']}: {skipped['reason']}", file=sys.stderr)
    print(f"exported {len(export.lora_modules)} adapter(s) on {export.base_model} ({export.base}) to {args.target}; "
          f"--max-lora-rank {export.max_lora_rank}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
