"""Which adapters the server serves: the routing table's champions and challengers, kept in step with it.

Every `slm` route names its champion (a registered model version, the `champion` alias when the
table was published) and the `serving_model` name clients ask for; a route may also name a
challenger the gateway asks in the shadow (`shadow_model`, `shadow_version`). `AdapterSet.sync`
downloads each of them on this server's base model from the MLflow registry (a champion only while
`registry.get_alias` still names the route's version), loads what is new, unloads what left the
table, and records every model it could not serve with the reason. `poll` re-reads the table's
version and syncs when it changed, so new champions arrive without a restart; models that failed
for a reason that may pass (the registry did not answer, the alias moved ahead of the table) are
tried again every `retry_interval_s`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from slm_pipeline.core.lake import Lake
from slm_pipeline.core.refine import registry
from slm_pipeline.core.refine.routing import Route, RoutingTable, load_routing_table, serving_model_name
from slm_pipeline.core.settings import Settings
from slm_pipeline.core.specialist_prompt import PromptForm, SpecialistPrompt
from slm_pipeline.serving.engine import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedAdapter:
    """An adapter the server answers for, by its serving model name."""

    model: str  # what clients put in `model`
    peft_name: str  # its name inside the peft model
    registered_model: str
    version: str
    task_prompt: str
    folder: Path
    agent_id: str
    cluster_id: str
    loaded_at: int
    role: Literal["champion", "challenger"] = "champion"
    prompt_form: PromptForm = "compact"  # as its training data was built (the route's, from dataset.json)
    prompt_tools: tuple[str, ...] = ()

    @property
    def prompt(self) -> SpecialistPrompt:
        """How a request is shown to this adapter: exactly as its training examples were built."""
        return SpecialistPrompt(self.prompt_form, self.task_prompt, self.prompt_tools)


@dataclass(frozen=True)
class SkippedRoute:
    """A champion or challenger of the routing table this server does not serve, and why."""

    model: str
    registered_model: str | None
    version: str | None
    reason: str
    retry: bool  # the reason may pass without a new routing table

    def as_json(self) -> dict[str, str | None]:
        return {"model": self.model, "registered_model": self.registered_model, "version": self.version,
                "reason": self.reason}


def peft_name(model: str, version: str) -> str:
    """An adapter name peft accepts (module-dict keys hold no dots), one per version so that a new
    champion loads beside the old one before the old one goes."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', model)}__v{re.sub(r'[^A-Za-z0-9_]', '_', version)}"


def base_of_routes(table: RoutingTable | None) -> str | None:
    """The base model most SLM routes are on (ties: the first by name); None without SLM routes."""
    bases = [r.base_model for r in (table.routes if table else []) if r.route == "slm" and r.base_model]
    return min(set(bases), key=lambda b: (-bases.count(b), b)) if bases else None


def resolve_route(route: Route, base_model: str, settings: Settings, table_version: int,
                  current: ServedAdapter | None = None) -> ServedAdapter | SkippedRoute:
    """The champion to serve for an `slm` route on `base_model` (downloaded), or why it cannot be served.
    `current`: what is served under the route's name now; kept when it is the same version."""
    name = route.serving_model or serving_model_name(route.agent_id, route.cluster_id)

    def skip(reason: str, retry: bool = False) -> SkippedRoute:
        return SkippedRoute(name, route.registered_model, route.version, reason, retry)

    if route.base_model != base_model:
        return skip(_other_base(route.base_model, base_model))
    if problem := _incomplete(route, route.version):
        return skip(problem)
    assert route.registered_model and route.version and route.task_prompt
    if current and (current.registered_model, current.version) == (route.registered_model, route.version):
        return replace(current, task_prompt=route.task_prompt, prompt_form=route.prompt_form,
                       prompt_tools=tuple(route.prompt_tools or ()))
    try:
        champion = registry.get_alias(route.registered_model, settings=settings)
    except Exception as exc:
        return skip(f"the MLflow registry did not answer: {exc.__class__.__name__}: {exc}", retry=True)
    if champion is None:
        return skip(f"{route.registered_model} has no champion in the MLflow registry ({settings.resolved_mlflow_uri})",
                    retry=True)
    if champion.version != route.version:
        return skip(f"the registry's champion is v{champion.version} but routing table v{table_version} names "
                    f"v{route.version}; republish the routing table (materialise routing_table)", retry=True)
    return _fetch(name, route, champion, "champion", settings, skip)


def resolve_challenger(route: Route, base_model: str, settings: Settings,
                       current: ServedAdapter | None = None) -> ServedAdapter | SkippedRoute | None:
    """The challenger a route names for the shadow (`shadow_model`, `shadow_version`), or why it cannot be
    served; None when the route names none. Its base model is the version's `base_model` tag."""
    name, version = route.shadow_model, route.shadow_version
    if not name or not version:
        return None

    def skip(reason: str, retry: bool = False) -> SkippedRoute:
        return SkippedRoute(name, route.registered_model, version, reason, retry)

    if problem := _incomplete(route, version):
        return skip(problem)
    assert route.registered_model and route.task_prompt
    if current and (current.registered_model, current.version) == (route.registered_model, version):
        return replace(current, task_prompt=route.task_prompt, prompt_form=route.prompt_form,
                       prompt_tools=tuple(route.prompt_tools or ()))
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient(settings.resolved_mlflow_uri).get_model_version(route.registered_model, version)
    except MlflowException as exc:
        return skip(f"v{version} of {route.registered_model} is not in the MLflow registry: {exc}", retry=True)
    except Exception as exc:
        return skip(f"the MLflow registry did not answer: {exc.__class__.__name__}: {exc}", retry=True)
    tags = dict(found.tags or {})
    base = tags.get("base_model") or route.base_model
    if base != base_model:
        return skip(_other_base(base, base_model))
    challenger = registry.Champion(route.registered_model, version, found.run_id, base, tags.get("adapter"), tags)
    return _fetch(name, route, challenger, "challenger", settings, skip)


def _other_base(theirs: str | None, ours: str) -> str:
    return (f"its base model is {theirs}; this server serves {ours} (run another `slm-pipeline serve "
            f"--base-model {theirs}` for it)")


def _incomplete(route: Route, version: str | None) -> str | None:
    if not route.registered_model or not version:
        return "the route names no registered model version; republish the routing table"
    if not route.task_prompt:
        return ("the route has no task prompt to render requests with; rebuild the cluster's task dataset and "
                "republish the routing table")
    return None


def _fetch(name: str, route: Route, version: registry.Champion, role: Literal["champion", "challenger"],
           settings: Settings, skip: Callable[..., SkippedRoute]) -> ServedAdapter | SkippedRoute:
    try:
        folder = registry.download_adapter(version, settings)
    except Exception as exc:
        return skip(f"its adapter could not be downloaded: {exc.__class__.__name__}: {exc}", retry=True)
    if not (folder / "adapter_config.json").is_file():
        return skip(f"v{version.version} is not a LoRA adapter (no adapter_config.json in {folder}): a full "
                    "fine-tune cannot share the base model")
    assert route.task_prompt
    return ServedAdapter(name, peft_name(name, version.version), version.registered_model, version.version,
                         route.task_prompt, folder, route.agent_id, route.cluster_id, int(time.time()), role,
                         route.prompt_form, tuple(route.prompt_tools or ()))


def resolve_table(table: RoutingTable | None, base_model: str, settings: Settings,
                  current: dict[str, ServedAdapter] | None = None) -> list[ServedAdapter | SkippedRoute]:
    """Every champion and challenger of the table: to serve on `base_model`, or skipped with the reason."""
    current = current or {}
    outcomes: list[ServedAdapter | SkippedRoute] = []
    for route in table.routes if table else []:
        if route.route == "slm":
            name = route.serving_model or serving_model_name(route.agent_id, route.cluster_id)
            outcomes.append(resolve_route(route, base_model, settings, table.version if table else 0,
                                          current.get(name)))
        challenger = resolve_challenger(route, base_model, settings,
                                        current.get(route.shadow_model or ""))
        if challenger is not None:
            outcomes.append(challenger)
    return outcomes


class AdapterSet:
    """The adapters loaded in `engine`, kept equal to the routing table's champions and challengers on its base."""

    def __init__(self, engine: Engine, lake: Lake, settings: Settings, *, retry_interval_s: float = 60.0) -> None:
        self.engine, self.lake, self.settings = engine, lake, settings
        self.retry_interval_s = retry_interval_s
        self.served: dict[str, ServedAdapter] = {}
        self.skipped: dict[str, SkippedRoute] = {}
        self.table_version: int | None = None  # the version applied; None: no table published yet
        self.last_sync = 0.0
        self.last_error: str | None = None
        self._sync_lock = threading.Lock()

    def poll(self) -> bool:
        """Re-read the routing table; sync when its version changed or a retry is due. True if it synced."""
        table = load_routing_table(self.lake)
        version = table.version if table else None
        due = (any(s.retry for s in self.skipped.values())
               and time.monotonic() - self.last_sync >= self.retry_interval_s)
        if version == self.table_version and not due:
            return False
        self.sync(table)
        return True

    def sync(self, table: RoutingTable | None) -> None:
        """Serve exactly the table's champions and challengers on this base model: load what is new, unload
        what is gone."""
        with self._sync_lock:
            wanted: dict[str, ServedAdapter] = {}
            skipped: dict[str, SkippedRoute] = {}
            for outcome in resolve_table(table, self.engine.name, self.settings, self.served):
                if isinstance(outcome, SkippedRoute):
                    skipped[outcome.model] = outcome
                    if self.skipped.get(outcome.model) != outcome:
                        log.warning("not serving %s: %s", outcome.model, outcome.reason)
                else:
                    wanted[outcome.model] = outcome
            for name, adapter in list(wanted.items()):
                if adapter.peft_name in self.engine.adapters:
                    continue
                try:
                    self.engine.load_adapter(adapter.peft_name, adapter.folder)
                except Exception as exc:  # a corrupt download, an adapter for other shapes, ...
                    del wanted[name]
                    skipped[name] = SkippedRoute(name, adapter.registered_model, adapter.version,
                                                 f"its adapter in {adapter.folder} does not load on "
                                                 f"{self.engine.name}: {exc.__class__.__name__}: {exc}", False)
                    log.warning("not serving %s: %s", name, skipped[name].reason)
            self.served, self.skipped = wanted, skipped  # requests see the new set from here on
            keep = {a.peft_name for a in wanted.values()}
            for gone in [n for n in self.engine.adapters if n not in keep]:
                self.engine.unload_adapter(gone)
            self.table_version = table.version if table else None
            self.last_sync = time.monotonic()
            log.info("routing table v%s: serving %d adapter(s) on %s, %d route(s) skipped", self.table_version,
                     len(wanted), self.engine.name, len(skipped))
