"""Champions in the MLflow model registry: alias `champion`, and `previous-champion` for rollback.

Each task cluster has one registered model (`slm-<agent>-<cluster>`, created by S5); its versions
are the fine-tuned adapters. Promotion moves the `champion` alias; the version that held it
keeps `previous-champion`, so `rollback` is one alias swap. A cluster that a reclustering merges
away or retires loses both aliases (`retire`), with the reason as a tag.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slm_pipeline.core.settings import Settings

CHAMPION = "champion"
PREVIOUS = "previous-champion"


@dataclass(frozen=True)
class Champion:
    registered_model: str
    version: str
    run_id: str | None
    base_model: str | None
    adapter: str | None
    tags: dict[str, str]


def _client(settings: Settings | None):
    from mlflow import MlflowClient

    return MlflowClient((settings or Settings()).resolved_mlflow_uri)


def get_alias(registered_model: str, alias: str = CHAMPION, settings: Settings | None = None) -> Champion | None:
    """The version holding `alias`, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        version = _client(settings).get_model_version_by_alias(registered_model, alias)
    except MlflowException:
        return None
    tags = dict(version.tags or {})
    return Champion(registered_model, str(version.version), version.run_id, tags.get("base_model"),
                    tags.get("adapter"), tags)


def promote(registered_model: str, version: str, reason: str, settings: Settings | None = None) -> Champion | None:
    """Give `version` the champion alias; the previous champion keeps `previous-champion`. Returns it."""
    client = _client(settings)
    previous = get_alias(registered_model, CHAMPION, settings)
    if previous is not None and previous.version != str(version):
        client.set_registered_model_alias(registered_model, PREVIOUS, previous.version)
    client.set_registered_model_alias(registered_model, CHAMPION, str(version))
    client.set_model_version_tag(registered_model, str(version), "promoted_at",
                                 datetime.now(timezone.utc).isoformat(timespec="seconds"))
    client.set_model_version_tag(registered_model, str(version), "promotion_reason", reason[:5000])
    return previous


def rollback(registered_model: str, settings: Settings | None = None) -> Champion:
    """Swap `champion` and `previous-champion`; returns the champion after the swap."""
    client = _client(settings)
    current, previous = get_alias(registered_model, CHAMPION, settings), get_alias(registered_model, PREVIOUS, settings)
    if previous is None:
        raise LookupError(f"{registered_model} has no {PREVIOUS!r} version to roll back to")
    client.set_registered_model_alias(registered_model, CHAMPION, previous.version)
    if current is not None:
        client.set_registered_model_alias(registered_model, PREVIOUS, current.version)
    restored = get_alias(registered_model, CHAMPION, settings)
    assert restored is not None
    return restored


def retire(registered_model: str, reason: str, settings: Settings | None = None) -> Champion | None:
    """Take the `champion` and `previous-champion` aliases off a cluster that no longer exists (merged into
    another, or gone in a reclustering), so nothing serves or rolls back to it, and say why on the
    registered model (tags `retired`, `retired_at`). Its versions stay for the record. Returns the
    champion it had; None, touching nothing, when it had none (never promoted, or retired already)."""
    client = _client(settings)
    champion = get_alias(registered_model, CHAMPION, settings)
    if champion is None:
        return None
    client.delete_registered_model_alias(registered_model, CHAMPION)
    if get_alias(registered_model, PREVIOUS, settings) is not None:
        client.delete_registered_model_alias(registered_model, PREVIOUS)
    client.set_registered_model_tag(registered_model, "retired", reason[:5000])
    retired_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    client.set_registered_model_tag(registered_model, "retired_at", retired_at)
    return champion


def download_adapter(version: Champion, settings: Settings | None = None) -> Path:
    """A local folder with the version's adapter (and tokenizer), fetched from the artifact store."""
    import mlflow

    settings = settings or Settings()
    target = settings.cache_dir / "champions" / version.registered_model / f"v{version.version}"
    if (target / "adapter_config.json").is_file() or (target / "config.json").is_file():
        return target
    source = _client(settings).get_model_version_download_uri(version.registered_model, version.version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        fetched = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=staging,
                                                           tracking_uri=settings.resolved_mlflow_uri))
        os.replace(fetched, target)
    return target
