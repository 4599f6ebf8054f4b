from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.refine import registry
from slm_pipeline.core.refine.routing import (
    Route,
    RoutingTable,
    RoutingThresholds,
    load_routing_table,
    publish_routing_table,
)
from slm_pipeline.core.settings import Settings


def _table(route: str = "llm") -> RoutingTable:
    return RoutingTable([Route("a1", "c001", "lookup order", route, "why", version="1" if route == "slm" else None)],
                        RoutingThresholds(), "http://127.0.0.1:8100/v1")


def test_a_new_version_only_when_a_route_changes_and_every_version_is_kept(tmp_path: Path):
    lake = Lake(str(tmp_path / "lake"))
    assert load_routing_table(lake) is None
    first, changed = publish_routing_table(lake, _table())
    assert changed and first.version == 1
    again, changed = publish_routing_table(lake, _table())
    assert not changed and again.version == 1 and again.fingerprint == first.fingerprint
    second, changed = publish_routing_table(lake, _table("slm"))
    assert changed and second.version == 2
    assert load_routing_table(lake).route_for("a1", "c001").route == "slm"
    assert load_routing_table(lake, version=1).route_for("a1", "c001").route == "llm"
    assert load_routing_table(lake).route_for("a1", "c999") is None


def test_promote_keeps_the_previous_champion_and_rollback_swaps_them(embedded_home: Path, tmp_path: Path):
    settings = Settings()
    client = mlflow.MlflowClient(settings.resolved_mlflow_uri)
    client.create_registered_model("slm-a1-c001")
    for _ in range(2):
        client.create_model_version("slm-a1-c001", str(tmp_path), tags={"base_model": "smollm2-135m-instruct"})
    assert registry.get_alias("slm-a1-c001") is None and registry.get_alias("slm-unknown") is None
    assert registry.promote("slm-a1-c001", "1", "first") is None
    previous = registry.promote("slm-a1-c001", "2", "better")
    assert previous.version == "1"
    champion = registry.get_alias("slm-a1-c001")
    assert champion.version == "2" and champion.base_model == "smollm2-135m-instruct"
    assert champion.tags["promotion_reason"] == "better"
    assert registry.get_alias("slm-a1-c001", registry.PREVIOUS).version == "1"
    assert registry.rollback("slm-a1-c001").version == "1"
    assert registry.get_alias("slm-a1-c001", registry.PREVIOUS).version == "2"


def test_rollback_without_a_previous_champion_says_so(embedded_home: Path, tmp_path: Path):
    client = mlflow.MlflowClient(Settings().resolved_mlflow_uri)
    client.create_registered_model("slm-a1-c002")
    client.create_model_version("slm-a1-c002", str(tmp_path))
    registry.promote("slm-a1-c002", "1", "first")
    with pytest.raises(LookupError, match="no 'previous-champion' version to roll back to"):
        registry.rollback("slm-a1-c002")
