"""The stack's services: the command that starts each, and the check that says it is ready."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from slm_pipeline.stack.config import StackConfig

HealthCheck = Callable[[], "str | None"]
"""Returns None when the service is ready, else what it is waiting for."""

LOCATION = "slm_pipeline"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    url: str  # what `stack status` shows people
    check: HealthCheck
    wave: int  # services of a wave start together, after the previous wave is ready
    env: dict[str, str] = field(default_factory=dict)  # its own variables (secrets stay off the command line)


def http_check(url: str) -> HealthCheck:
    def check() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return None if response.status == 200 else f"{url} answered {response.status}"
        except urllib.error.HTTPError as exc:
            return f"{url} answered {exc.code}"
        except OSError as exc:
            return f"{url} does not answer ({getattr(exc, 'reason', exc)})"
    return check


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


_LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


def location_check(graphql_url: str) -> HealthCheck:
    """The webserver answers and has loaded the code location from the gRPC server."""
    def check() -> str | None:
        try:
            entries = graphql(graphql_url, _LOCATIONS)["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            return f"{graphql_url} does not answer ({exc})"
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry is None or entry["loadStatus"] != "LOADED":
            return f"code location {LOCATION!r} is loading"
        if entry["locationOrLoadError"]["__typename"] == "PythonError":
            return f"code location {LOCATION!r} failed to load: {entry['locationOrLoadError']['message']}"
        return None
    return check


def daemon_check(graphql_url: str) -> HealthCheck:
    """Every required daemon (scheduler, sensors, run queue, monitoring) has sent a recent heartbeat."""
    def check() -> str | None:
        try:
            statuses = graphql(graphql_url, _DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            return f"{graphql_url} does not answer ({exc})"
        waiting = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
        return f"daemons without a heartbeat yet: {', '.join(waiting)}" if waiting else None
    return check


def grpc_check(host: str, port: int) -> HealthCheck:
    def check() -> str | None:
        done = subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-h", host, "-p", str(port)],
                              capture_output=True, text=True, timeout=60)
        return None if done.returncode == 0 else f"gRPC server on {host}:{port} is not serving yet"
    return check


def services(config: StackConfig, workspace: Path, artifacts: Path, backend_store_url: str) -> list[Service]:
    """The stack's services in start order."""
    host = config.host
    graphql_url = config.url(config.dagster_port, "/graphql")
    slm = str(BIN / "slm-pipeline")
    return [
        Service("mlflow", [str(BIN / "mlflow"), "server", "--artifacts-destination", artifacts.as_uri(),
                           "--serve-artifacts", "--host", host, "--port", str(config.mlflow_port), "--workers", "1"],
                config.url(config.mlflow_port), http_check(config.url(config.mlflow_port, "/health")), wave=0,
                env={"MLFLOW_BACKEND_STORE_URI": backend_store_url}),
        Service("code-server", [str(BIN / "dagster"), "code-server", "start", "-m", "slm_pipeline.definitions",
                                "--location-name", LOCATION, "-h", host, "-p", str(config.code_server_port)],
                f"grpc://{host}:{config.code_server_port}", grpc_check(host, config.code_server_port), wave=0),
        Service("gateway", [slm, "gateway", "--host", host, "--port", str(config.gateway_port)],
                config.url(config.gateway_port, "/v1"), http_check(config.url(config.gateway_port, "/healthz")),
                wave=0),
        Service("slm-server", [slm, "serve", "--host", host, "--port", str(config.serving_port)],
                config.url(config.serving_port, "/v1"), http_check(config.url(config.serving_port, "/healthz")),
                wave=0),
        Service("dagster-webserver", [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", host,
                                      "-p", str(config.dagster_port)],
                config.url(config.dagster_port), location_check(graphql_url), wave=1),
        Service("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                "(no port: schedules, sensors, run queue)", daemon_check(graphql_url), wave=1),
    ]
