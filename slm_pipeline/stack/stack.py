"""Bring the local stack up and down; tell its state and the environment that points a shell at it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slm_pipeline.stack import processes
from slm_pipeline.stack.config import StackConfig
from slm_pipeline.stack.databases import database_url, drop_databases, ensure_databases
from slm_pipeline.stack.services import Service, services

REPO = Path(__file__).resolve().parents[2]
Report = Callable[[str], None]


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServiceState:
    name: str
    url: str
    pid: int | None
    running: bool
    waiting_for: str | None  # None: healthy


def _private_file(path: Path, make: Callable[[], str]) -> str:
    """Read a secret file, creating it owner-only the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make())
    return path.read_text().strip()


class Stack:
    """The stack that `config` describes; `Stack.existing()` is the one that `up` last started."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.home = self.config.resolved_home

    @classmethod
    def existing(cls, home: Path | None = None) -> Stack:
        """The stack in `home` (default: SLM_PIPELINE_STACK_HOME) with the ports and names its `up` used."""
        config = StackConfig(**({"home": home} if home else {}))
        state = config.resolved_home / "stack.json"
        if not state.exists():
            raise StackError(f"no stack in {config.resolved_home}: start one with `slm-pipeline stack up`")
        return cls(StackConfig(**json.loads(state.read_text())))

    # -- layout ---------------------------------------------------------------------------------------------
    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    def _pid_file(self, name: str) -> Path:
        return self.home / "run" / f"{name}.json"

    def _passwords(self) -> dict[str, str]:
        """The database roles' passwords: made on the first `up`, kept owner-only in the home."""
        return json.loads(_private_file(self.home / "secrets" / "db_passwords.json", lambda: json.dumps(
            {"pipeline": secrets.token_urlsafe(24), "gateway": secrets.token_urlsafe(24)})))

    def _key_file(self) -> Path:
        from slm_pipeline.core.crypto import new_key

        path = self.home / "secrets" / "encryption.keys"
        _private_file(path, lambda: new_key("stack1") + "\n")
        return path

    def environment(self) -> dict[str, str]:
        """What the pipeline's processes (and a user's shell, `stack env`) need to use this stack."""
        c, passwords = self.config, self._passwords()
        env = {
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_POSTGRES_URL": database_url(c, "dagster", "pipeline", passwords["pipeline"]),
            "SLM_PIPELINE_HOME": str(self.home / "pipeline"),
            "SLM_PIPELINE_DATABASE_URL": database_url(c, "logstore", "pipeline", passwords["pipeline"]),
            "SLM_PIPELINE_MLFLOW_TRACKING_URI": c.url(c.mlflow_port),
            "MLFLOW_TRACKING_URI": c.url(c.mlflow_port),
            "SLM_PIPELINE_SERVING_URL": c.url(c.serving_port, "/v1"),
        }
        if not (os.environ.get("SLM_PIPELINE_ENCRYPTION_KEYS") or os.environ.get("SLM_PIPELINE_ENCRYPTION_KEY_FILE")):
            env["SLM_PIPELINE_ENCRYPTION_KEY_FILE"] = str(self._key_file())
        return env

    def _service_environment(self) -> dict[str, str]:
        c = self.config
        env = {**os.environ, **self.environment(),
               "SLM_PIPELINE_GATEWAY_DATABASE_URL": database_url(c, "logstore", "gateway", self._passwords()["gateway"]),
               "SLM_PIPELINE_GATEWAY_SERVING_URL": c.url(c.serving_port, "/v1"),
               "PYTHONUNBUFFERED": "1"}
        if c.upstream_url:
            env["SLM_PIPELINE_GATEWAY_UPSTREAM_URL"] = c.upstream_url
        return env

    def _services(self, with_secrets: bool = False) -> list[Service]:
        """The services; their environments hold the MLflow store's URL only `with_secrets`."""
        backend = database_url(self.config, "mlflow", "pipeline", self._passwords()["pipeline"]) if with_secrets else ""
        return services(self.config, self.dagster_home / "workspace.yaml", self.home / "mlartifacts", backend)

    def _records(self) -> dict[str, processes.ProcessRecord]:
        found = {}
        for service in self._services():
            path = self._pid_file(service.name)
            if path.exists():
                found[service.name] = processes.ProcessRecord.load(path)
        return found

    # -- up -------------------------------------------------------------------------------------------------
    def _prepare(self, report: Report) -> None:
        from slm_pipeline.core.store import LogStore
        from slm_pipeline.core.store.roles import grant_roles

        self.home.mkdir(parents=True, exist_ok=True)
        state = self.home / "stack.json"  # holds the admin URL (for `down --purge`): owner-only
        state.touch(mode=0o600)
        state.chmod(0o600)
        state.write_text(self.config.model_dump_json(indent=1))
        for made in ensure_databases(self.config, self._passwords()):
            report(f"created {made}")
        env = self.environment()
        with LogStore(env["SLM_PIPELINE_DATABASE_URL"]) as store:  # the schema, as the owning pipeline role
            grant_roles(store, gateway=self.config.role("gateway"))
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        dagster_yaml = REPO / "dagster.yaml"
        if not dagster_yaml.exists():
            raise StackError(f"no dagster.yaml at {dagster_yaml}: run the stack from a checkout of the repository")
        shutil.copy(dagster_yaml, self.dagster_home / "dagster.yaml")
        (self.dagster_home / "workspace.yaml").write_text(
            "# Written by `slm-pipeline stack up`: the code location is the stack's own gRPC server.\n"
            "load_from:\n  - grpc_server:\n"
            f"      host: {self.config.host}\n      port: {self.config.code_server_port}\n"
            "      location_name: slm_pipeline\n")

    def _wait(self, service: Service, record: processes.ProcessRecord) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        waiting = service.check()
        while waiting is not None:
            if not processes.alive(record):
                raise StackError(f"{service.name} exited while starting; the end of {record.log}:\n"
                                 f"{processes.tail(record.log)}")
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} not ready after {self.config.startup_timeout_s:.0f} s: {waiting}; "
                                 f"the end of {record.log}:\n{processes.tail(record.log)}")
            time.sleep(1)
            waiting = service.check()

    def up(self, report: Report = lambda _: None) -> list[ServiceState]:
        """Start what is not running and wait until every service is ready. On failure, stop what this call
        started and raise StackError with the failing service's log."""
        self._prepare(report)
        env, records, started = self._service_environment(), self._records(), []
        try:
            all_services = self._services(with_secrets=True)
            for wave in sorted({s.wave for s in all_services}):
                batch = [s for s in all_services if s.wave == wave]
                for service in batch:
                    record = records.get(service.name)
                    if record is not None and processes.alive(record):
                        report(f"{service.name} already running (pid {record.pid})")
                        continue
                    record = processes.start(service.name, service.command, {**env, **service.env},
                                             self.home / "logs" / f"{service.name}.log", cwd=REPO)
                    started.append(record)
                    record.save(self._pid_file(service.name))
                    records[service.name] = record
                    report(f"started {service.name} (pid {record.pid})")
                for service in batch:
                    self._wait(service, records[service.name])
                    report(f"{service.name} ready: {service.url}")
        except BaseException:
            for record in reversed(started):
                processes.stop(record, self.config.stop_timeout_s)
                self._pid_file(record.name).unlink(missing_ok=True)
            raise
        return self.status()

    # -- down, status ---------------------------------------------------------------------------------------
    def down(self, purge: bool = False, report: Report = lambda _: None) -> None:
        """Stop every service (reverse start order); with `purge`, also drop the databases and the home."""
        records = self._records()
        for service in reversed(self._services()):
            record = records.get(service.name)
            if record is None:
                continue
            report(f"{service.name}: {processes.stop(record, self.config.stop_timeout_s)}")
            self._pid_file(service.name).unlink(missing_ok=True)
        if purge:
            for dropped in drop_databases(self.config):
                report(f"dropped {dropped}")
            shutil.rmtree(self.home, ignore_errors=True)
            report(f"removed {self.home}")

    def status(self) -> list[ServiceState]:
        records = self._records()
        states = []
        for service in self._services():
            record = records.get(service.name)
            running = record is not None and processes.alive(record)
            states.append(ServiceState(service.name, service.url, record.pid if record else None, running,
                                       service.check() if running else "not running"))
        return states
