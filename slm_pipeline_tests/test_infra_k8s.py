"""The Kubernetes deployment, checked offline with the tools that will read it.

* infra/helm/values.yaml (official Dagster chart): the run launcher part, translated the way the chart's instance
  ConfigMap template does (helm/dagster/templates/helpers/instance/_run-launcher.tpl and friends), must pass
  dagster-k8s's own K8sRunLauncher config schema, and the instance it renders must pass dagster's.
* The GPU `dagster-k8s/config` tags (slm_pipeline/core/k8s_gpu.py) of finetuned_slm, slm_evaluation and
  retrain_job, merged by dagster-k8s into the Job it would create for a run or a step, must give a pod that
  requests the GPU, tolerates the GPU taint and selects GPU nodes; that Job and every manifest under infra/
  must be valid Kubernetes 1.30 objects (kubernetes-validate, bundled JSON schemas, strict: no unknown field).
* The DeepSpeed hostfiles parse with DeepSpeed's own parser, and DeepSpeed's launcher, run with the Job's command
  line (its process start faked), starts each node's ranks; the ZeRO configs pass transformers' processing.
* The vLLM Deployment runs `vllm serve` with the flags of infra/vllm/serve.sh.

No network: every socket connection fails in this module.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import socket
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HELM, K8S = ROOT / "infra" / "helm", ROOT / "infra" / "k8s"
VALUES, SECRETS = HELM / "values.yaml", HELM / "secrets.example.yaml"
VLLM, TRAIN = K8S / "vllm-multilora.yaml", K8S / "deepspeed" / "train-multinode.yaml"
HOSTFILE = K8S / "deepspeed" / "hostfile.example"
K8S_VERSION = "1.30"
RELEASE, NAMESPACE = "dagster", "dagster"  # `helm install dagster dagster/dagster -n dagster`
# The subchart's `dagster.fullname`: the release name does not contain its chart name, so both.
SUBCHART_FULLNAME = f"{RELEASE}-dagster-user-deployments"
GPU = "nvidia.com/gpu"

# The chart's values schema (helm/dagster/schema/schema/charts/dagster/subschema/run_launcher.py, concurrency.py):
# the keys it accepts, so that a misspelt key fails here rather than being silently ignored by the chart.
CHART_K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig"}
CHART_RUN_K8S_CONFIG_KEYS = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig",
                             "jobMetadata"}
CHART_CONCURRENCY_KEYS = {"enabled": None, "pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
                          "runs": {"maxConcurrentRuns", "tagConcurrencyLimits"}}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("test_infra_k8s runs offline: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml")) + [SECRETS]


def find(path: Path, kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in documents(path) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def validate_k8s(obj: dict[str, Any]) -> None:
    """Strict validation against the Kubernetes schemas bundled with kubernetes-validate (no download)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj['kind']} {obj.get('metadata', {}).get('name')}: {exc}") from None


# ------------------------------------------------------------------------------------------------------ YAML


def test_every_yaml_file_parses():
    files = sorted(p for d in (HELM, K8S) for p in d.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert {VALUES, SECRETS, VLLM, TRAIN} <= set(files)
    for path in files:
        docs = documents(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(ROOT)))
def test_manifests_are_valid_kubernetes_objects(path: Path):
    for doc in documents(path):
        validate_k8s(doc)


def test_validation_catches_a_misspelt_field():
    deployment = find(VLLM, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health"}}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate_k8s(deployment)


# ------------------------------------------------------------------------------------------------ Helm values


def chart_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def fullname(values: dict[str, Any]) -> str:
    """The chart's `dagster.fullname` (the release name when it contains the chart's name)."""
    override = values.get("global", {}).get("fullnameOverride") or values.get("fullnameOverride")
    return override or (RELEASE if "dagster" in RELEASE else f"{RELEASE}-dagster")


def chart_run_launcher(values: dict[str, Any]) -> dict[str, Any]:
    """`run_launcher.config` as the chart's template dagsterYaml.runLauncher.k8s renders it."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    glob = values.get("global", {})
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": glob.get("serviceAccountName") or values.get("serviceAccount", {}).get("name")
        or fullname(values),
        "dagster_home": glob.get("dagsterHome", "/opt/dagster/dagster_home"),
        "instance_config_map": f"{fullname(values)}-instance",
        "postgres_password_secret": glob.get("postgresqlSecretName") or f"{fullname(values)}-postgresql-secret",
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if "image" in k8s:
        config["job_image"] = f"{k8s['image']['repository']}:{k8s['image']['tag']}"
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = [c["name"] for c in k8s["envConfigMaps"] if "name" in c]
    if k8s.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"] if "name" in s]
    for chart_key, key in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                           ("labels", "labels"), ("resources", "resources"), ("securityContext", "security_context"),
                           ("schedulerName", "scheduler_name")):
        if k8s.get(chart_key):
            config[key] = k8s[chart_key]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if k8s.get("runK8sConfig"):
        names = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                 "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
                 "jobMetadata": "job_metadata"}
        config["run_k8s_config"] = {names[k]: v for k, v in k8s["runK8sConfig"].items() if v}
    return config


def chart_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of the instance's dagster.yaml (configmap-instance.yaml) that our values decide."""
    pg = values["postgresql"]
    postgres = {"postgres_db": {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {})}}
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    names = {"maxConcurrentRuns": "max_concurrent_runs", "tagConcurrencyLimits": "tag_concurrency_limits",
             "dequeueIntervalSeconds": "dequeue_interval_seconds", "dequeueNumWorkers": "dequeue_num_workers",
             "dequeueUseThreads": "dequeue_use_threads"}
    concurrency = values["concurrency"]
    pools, runs = concurrency.get("pools", {}), concurrency.get("runs", {})
    instance: dict[str, Any] = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": postgres},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": postgres},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": postgres},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": chart_run_launcher(values)},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {names[k]: v for k, v in queued.items() if v is not None}},
        "run_monitoring": {"enabled": daemon["runMonitoring"]["enabled"],
                           "start_timeout_seconds": daemon["runMonitoring"]["startTimeoutSeconds"],
                           "poll_interval_seconds": daemon["runMonitoring"]["pollIntervalSeconds"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    if concurrency.get("enabled"):
        instance["concurrency"] = {
            "pools": {key: pools[chart] for chart, key in (("defaultLimit", "default_limit"),
                      ("granularity", "granularity"), ("opGranularityRunBuffer", "op_granularity_run_buffer"))
                      if pools.get(chart) is not None},
            "runs": {**({"max_concurrent_runs": runs["maxConcurrentRuns"]} if "maxConcurrentRuns" in runs else {}),
                     **({"tag_concurrency_limits": runs["tagConcurrencyLimits"]}
                        if runs.get("tagConcurrencyLimits") else {})},
        }
    return instance


def process(config_type, value: dict[str, Any]) -> dict[str, Any]:
    from dagster._config import process_config

    result = process_config(config_type, value)
    assert result.success, "\n".join(error.message for error in result.errors)
    return result.value


def test_values_use_only_keys_the_chart_knows():
    values = chart_values()
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(k8s) <= CHART_K8S_RUN_LAUNCHER_KEYS, set(k8s) - CHART_K8S_RUN_LAUNCHER_KEYS
    assert set(k8s.get("runK8sConfig", {})) <= CHART_RUN_K8S_CONFIG_KEYS
    concurrency = values["concurrency"]
    assert set(concurrency) <= set(CHART_CONCURRENCY_KEYS)
    for part in ("pools", "runs"):
        assert set(concurrency.get(part, {})) <= CHART_CONCURRENCY_KEYS[part], part
    # The chart refuses run limits both in `concurrency.runs` and in the queued run coordinator's config.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert not ({"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued))


def test_values_run_launcher_is_a_valid_k8s_run_launcher_config():
    from dagster_k8s import K8sRunLauncher

    values = chart_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    config = process(K8sRunLauncher.config_type(), chart_run_launcher(values))
    assert config["env_secrets"] == ["slm-pipeline-secrets"] and config["env_config_maps"] == ["slm-pipeline-env"]
    assert config["image_pull_policy"] in ("IfNotPresent", "Always")
    assert config["postgres_password_secret"] == "dagster-postgresql-secret"
    assert config["run_k8s_config"]["job_spec_config"]["backoffLimit"] == 0  # camelCase, as in the chart

    # A misspelt launcher key is refused by dagster-k8s (the chart would pass it through into dagster.yaml).
    from dagster._config import process_config

    assert not process_config(K8sRunLauncher.config_type(), {**config, "env_secret": ["x"]}).success


def test_values_render_a_valid_instance(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config_schema, validate_concurrency_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresRunStorage

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")
    values = chart_values()
    instance = chart_instance(values)
    process(dagster_instance_config_schema(), instance)
    validate_concurrency_config(instance)
    process(PostgresRunStorage.config_type(), instance["run_storage"]["config"])
    process(QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"])
    assert instance["concurrency"]["pools"]["default_limit"] >= 1
    assert instance["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "dagster/partition"
    # External Postgres, with the password from our own Secret.
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False


def test_values_user_code_deployment_serves_our_definitions():
    values = chart_values()
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module] and deployment["port"] == 4000
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    # The GPU settings are strings (Kubernetes env values) that k8s_gpu accepts.
    from slm_pipeline.core.k8s_gpu import gpu_run_tags

    assert all(isinstance(v, str) for v in deployment["env"].values())
    assert gpu_run_tags(deployment["env"])


def test_every_secret_and_config_map_the_deployment_names_is_in_the_example():
    values = chart_values()
    secrets = {d["metadata"]["name"]: d for d in documents(SECRETS) if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"]: d for d in documents(SECRETS) if d["kind"] == "ConfigMap"}
    assert "postgresql-password" in secrets[values["global"]["postgresqlSecretName"]]["stringData"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for source in launcher["envSecrets"] + deployment["envSecrets"]:
        assert source["name"] in secrets
    for source in launcher["envConfigMaps"] + deployment["envConfigMaps"]:
        assert source["name"] in config_maps
    pipeline = secrets["slm-pipeline-secrets"]["stringData"]
    assert {"SLM_PIPELINE_ENCRYPTION_KEYS", "SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY", "SLM_PIPELINE_DATABASE_URL",
            "SLM_PIPELINE_MLFLOW_TRACKING_URI"} <= set(pipeline)
    assert "MLFLOW_BACKEND_STORE_URI" in secrets["mlflow-server"]["stringData"]
    for path in (VLLM, TRAIN):
        for doc in documents(path):
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            spec = doc["spec"]["template"]["spec"]
            for container in spec["containers"] + spec.get("initContainers", []):
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets
                    else:
                        assert source["configMapRef"]["name"] in config_maps


# ------------------------------------------------------------------------------------------------- GPU tags


FAKE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """A K8sRunLauncher configured as the chart configures it (a fake kubeconfig instead of the in-cluster one)."""
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    config = process(K8sRunLauncher.config_type(), chart_run_launcher(chart_values()))
    return K8sRunLauncher.from_config_value(None, {**config, "load_incluster_config": False,
                                                   "kubeconfig_file": str(kubeconfig)})


@pytest.fixture(scope="module")
def defs():
    from slm_pipeline.definitions import defs

    return defs


def user_image() -> str:
    [deployment] = chart_values()["dagster-user-deployments"]["deployments"]
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def code_location_container_context(values: dict[str, Any]) -> dict[str, Any]:
    """What the chart puts on the code server (DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT) for its runs
    (dagster-user-deployments helper dagsterUserDeployments.k8sContainerContext)."""
    [deployment] = values["dagster-user-deployments"]["deployments"]
    subchart = SUBCHART_FULLNAME
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        # The chart turns a dict `env` into this ConfigMap.
        "env_config_maps": [f"{subchart}-{deployment['name']}-user-env"]
        + [c["name"] for c in deployment.get("envConfigMaps", []) if "name" in c],
        "namespace": NAMESPACE, "service_account_name": f"{subchart}-user-deployments"}
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [c["name"] for c in deployment["envSecrets"] if "name" in c]
    for chart_key, key in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"),
                           ("resources", "resources"), ("schedulerName", "scheduler_name")):
        if deployment.get(chart_key):
            k8s[key] = deployment[chart_key]
    if isinstance(deployment.get("env"), list):
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


def k8s_job(launcher, run_tags: dict[str, str], step_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job dagster-k8s creates for a run (K8sRunLauncher) or, given step tags, a step (k8s_job_executor),
    of a run launched from our code location."""
    import sys

    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config
    from kubernetes.client import ApiClient

    values = chart_values()
    origin = RepositoryPythonOrigin(
        executable_path=sys.executable, code_pointer=ModuleCodePointer("slm_pipeline.definitions", "defs"),
        container_image=user_image(), container_context=code_location_container_context(values))
    run = DagsterRun(job_name="retrain_job", run_id="0123abcd-0000-0000-0000-000000000000", tags=run_tags,
                     job_code_origin=JobPythonOrigin("retrain_job", origin))
    if step_tags is None:  # K8sRunLauncher._launch_k8s_job_with_args
        context = launcher.get_container_context_for_run(run)
        name, component = "dagster-run-0123abcd", "run_worker"
    else:  # K8sStepHandler._get_container_context: the run's context without run tags, then the op's tags
        context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
            K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
        name, component = "dagster-step-0123abcd", "step_worker"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=user_image(), run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"], job_name=name, pod_name=name, component=component,
        user_defined_k8s_config=context.run_k8s_config, labels={"dagster/job": "retrain_job"})
    return ApiClient().sanitize_for_serialization(job)


def assert_gpu_pod(job: dict[str, Any], gpus: str = "1") -> None:
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"][GPU] == gpus
    assert container["resources"]["requests"]["memory"] == "32Gi"  # the tag's, over the launcher's 4Gi
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert_run_pod_basics(job)
    validate_k8s(job)


def assert_run_pod_basics(job: dict[str, Any]) -> None:
    """What every run or step pod gets from the run launcher and the code location."""
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"secretRef": {"name": "slm-pipeline-secrets"}} in container["envFrom"]
    assert {"configMapRef": {"name": "slm-pipeline-env"}} in container["envFrom"]
    # The user deployment's `env` (the GPU settings among it) reaches the run through the chart's ConfigMap.
    assert {"configMapRef": {"name": f"{SUBCHART_FULLNAME}-slm-pipeline-user-env"}} in container["envFrom"]
    assert {"name": "slm-pipeline-home", "mountPath": "/var/lib/slm_pipeline"} in container["volumeMounts"]
    assert {"name": "slm-pipeline-home", "persistentVolumeClaim": {"claimName": "slm-pipeline-home"}} \
        in pod["volumes"]
    assert container["image"] == user_image() and container["imagePullPolicy"] == "IfNotPresent"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert pod["serviceAccountName"] == f"{SUBCHART_FULLNAME}-user-deployments"


def test_gpu_tags_of_the_gpu_assets_parse_with_dagster_k8s(defs):
    from dagster_k8s.job import get_user_defined_k8s_config

    from slm_pipeline.assets.finetune import finetuned_slm
    from slm_pipeline.assets.refine import slm_evaluation

    for asset in (finetuned_slm, slm_evaluation):
        config = get_user_defined_k8s_config(asset.op.tags)
        assert config.container_config["resources"]["limits"][GPU] == "1"
        assert config.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}
    config = get_user_defined_k8s_config(defs.resolve_job_def("retrain_job").tags)
    assert config.container_config["resources"]["limits"][GPU] == "1"


def test_retrain_run_pod_requests_a_gpu(launcher, defs):
    assert_gpu_pod(k8s_job(launcher, dict(defs.resolve_job_def("retrain_job").tags)))


def test_gpu_step_pods_request_a_gpu(launcher):
    from slm_pipeline.assets.finetune import finetuned_slm
    from slm_pipeline.assets.refine import slm_evaluation

    for asset in (finetuned_slm, slm_evaluation):
        assert_gpu_pod(k8s_job(launcher, run_tags={}, step_tags=dict(asset.op.tags)))


def test_cpu_runs_get_no_gpu(launcher, defs):
    for name in ("ingest_job", "refresh_job", "publish_job"):
        job = k8s_job(launcher, dict(defs.resolve_job_def(name).tags))
        pod = job["spec"]["template"]["spec"]
        assert GPU not in pod["containers"][0]["resources"]["limits"] and "tolerations" not in pod
        # The run launcher's resources: the code location sets none that would replace them.
        assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"},
                                                     "limits": {"memory": "8Gi"}}
        assert_run_pod_basics(job)
        validate_k8s(job)


def test_gpu_settings_from_the_environment(launcher):
    from slm_pipeline.core.k8s_gpu import TAG, gpu_run_tags, gpu_step_tags

    assert gpu_step_tags({"SLM_PIPELINE_K8S_GPUS": "0"}) == {} == gpu_run_tags({"SLM_PIPELINE_K8S_GPUS": "0"})
    # With the k8s_job_executor the steps hold the GPUs, the run pod none.
    assert gpu_run_tags({"SLM_PIPELINE_K8S_RUN_GPUS": "0"}) == {} and gpu_step_tags({"SLM_PIPELINE_K8S_RUN_GPUS": "0"})
    env = {"SLM_PIPELINE_K8S_GPUS": "2", "SLM_PIPELINE_K8S_GPU_RESOURCE": "amd.com/gpu",
           "SLM_PIPELINE_K8S_GPU_NODE_SELECTOR": "pool=gpu, accelerator=mi300x", "SLM_PIPELINE_K8S_SHM_SIZE": ""}
    tags = {TAG: json.dumps(gpu_step_tags(env)[TAG])}
    pod = k8s_job(launcher, run_tags={}, step_tags=tags)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"pool": "gpu", "accelerator": "mi300x"}
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "dshm" not in json.dumps(pod)
    assert "nodeSelector" not in k8s_job(launcher, {}, {TAG: json.dumps(gpu_step_tags(
        {"SLM_PIPELINE_K8S_GPU_NODE_SELECTOR": ""})[TAG])})["spec"]["template"]["spec"]
    for bad in ({"SLM_PIPELINE_K8S_GPUS": "one"}, {"SLM_PIPELINE_K8S_GPUS": "-1"},
                {"SLM_PIPELINE_K8S_GPU_NODE_SELECTOR": "nvidia.com/gpu.present"}):
        with pytest.raises(ValueError, match="SLM_PIPELINE_K8S"):
            gpu_step_tags(bad)


# ------------------------------------------------------------------------------------------------- DeepSpeed


def test_example_hostfile_parses_with_deepspeed():
    from deepspeed.launcher.runner import fetch_hostfile

    hosts = fetch_hostfile(str(HOSTFILE))
    assert hosts and all(slots >= 1 for slots in hosts.values())


def train_parts() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return find(TRAIN, "Job"), find(TRAIN, "Service"), find(TRAIN, "ConfigMap")


def deepspeed_argv(job: dict[str, Any], index: int) -> list[str]:
    """The Job's `deepspeed ...` command line as pod `index` runs it (its shell variables expanded)."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].replace("\\\n", " ")
    [line] = [line for line in script.splitlines() if line.strip().startswith("exec deepspeed")]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e} | {"JOB_COMPLETION_INDEX": str(index)}
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    return shlex.split(line)[2:]


def test_multinode_job_hostfile_names_its_pods():
    from deepspeed.launcher.runner import _parse_hostfile, parse_args

    from slm_pipeline.core.train.launch import ENTRY_MODULE

    job, service, config_map = train_parts()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    nodes = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == nodes >= 2
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    [container] = pod["containers"]
    gpus = int(container["resources"]["limits"][GPU])
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "hostfile"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "hostfile"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]

    hosts = _parse_hostfile(config_map["data"]["hostfile"].splitlines())
    names = [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}" for i in range(nodes)]
    assert list(hosts) == names and set(hosts.values()) == {gpus}

    args = parse_args(deepspeed_argv(job, 1))
    assert args.hostfile == f"{mount['mountPath']}/hostfile" and args.no_ssh and args.node_rank == 1
    assert args.master_addr == names[0] and args.module and args.no_local_rank
    assert args.user_script == ENTRY_MODULE and len(args.user_args) == 1 and args.user_args[0].endswith("spec.json")
    assert {"containerPort": args.master_port, "name": "rendezvous"} in container["ports"]
    # Each rank runs `python -m slm_pipeline.training_process <user_args>`: the spec path is its argument.
    import slm_pipeline.training_process as training_process

    with pytest.raises(FileNotFoundError, match=re.escape(args.user_args[0])):
        training_process.main(args.user_args)


def test_deepspeed_launcher_starts_each_nodes_ranks(tmp_path, monkeypatch):
    """DeepSpeed's runner, given the Job's command line, launches the local ranks of that node (no SSH)."""
    import deepspeed.launcher.runner as runner

    job, _, config_map = train_parts()
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(config_map["data"]["hostfile"])
    started: list[list[str]] = []

    class FakeProcess:
        returncode = 0

        def __init__(self, cmd, env=None):
            started.append(cmd)

        def wait(self):
            return 0

    def no_ssh(*args, **kwargs):
        raise AssertionError("the launcher tried SSH")

    monkeypatch.setattr(runner.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(runner.subprocess, "check_call", no_ssh)
    monkeypatch.setattr(runner.subprocess, "check_output", no_ssh)
    for index in range(job["spec"]["completions"]):
        argv = deepspeed_argv(job, index)
        argv[argv.index("--hostfile") + 1] = str(hostfile)
        runner.main(argv)
        cmd = started[-1]
        assert cmd[1:4] == ["-u", "-m", "deepspeed.launcher.launch"] and f"--node_rank={index}" in cmd
        assert "--module" in cmd and "--no_local_rank" in cmd and "slm_pipeline.training_process" in cmd
        [world] = [a.split("=", 1)[1] for a in cmd if a.startswith("--world_info=")]
        assert json.loads(base64.urlsafe_b64decode(world)) == {
            host: list(range(slots)) for host, slots in runner._parse_hostfile(hostfile.read_text().splitlines())
            .items()}


@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_pass_transformers_processing(name: str, stage: int):
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    from slm_pipeline.core.train.config import DEEPSPEED_CONFIGS

    raw = json.loads(DEEPSPEED_CONFIGS[name].read_text())
    assert raw["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        assert raw[key] == "auto", key  # the Trainer's values, so the TrainConfig stays the one source
    args = SimpleNamespace(world_size=16, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                           max_grad_norm=1.0, learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999,
                           adam_epsilon=1e-8, weight_decay=0.0, save_on_each_node=False, fp16=False,
                           fp16_full_eval=False, bf16=True, bf16_full_eval=False)
    try:
        config = HfTrainerDeepSpeedConfig(str(DEEPSPEED_CONFIGS[name]))
        assert (config.is_zero2(), config.is_zero3()) == (stage == 2, stage == 3)
        config.trainer_config_process(args)
        assert config.mismatches == []
        assert config.config["train_batch_size"] == 16 * 4 * 2 and config.config["bf16"]["enabled"] is True
        if stage == 3:  # the adapter/model is saved whole, not as shards
            assert config.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save") is True
    finally:
        unset_hf_deepspeed_config()


# ------------------------------------------------------------------------------------------------------ vLLM


def vllm_flags(script: str) -> tuple[set[str], dict[str, str]]:
    """The `--flags` of serve.sh's `args=(serve ...)` / `args+=(...)` arrays, and the values of some."""
    arrays = re.findall(r"args\+?=\((.*?)\)\s*$", script, flags=re.S | re.M)
    assert arrays, "no args=( ... ) array"
    text = " ".join(arrays)
    values = {flag: value for flag, value in re.findall(r"(--[a-z-]+)\s+([^\s\"$-][^\s]*)", text)}
    port = re.search(r"--port\D*(\d+)", text)
    return set(re.findall(r"--[a-z][a-z0-9-]*", text)), {**values, "--port": port.group(1) if port else ""}


def test_vllm_deployment_serves_like_serve_sh():
    serve_flags, serve_values = vllm_flags((ROOT / "infra" / "vllm" / "serve.sh").read_text())
    deployment, service = find(VLLM, "Deployment"), find(VLLM, "Service")
    pod = deployment["spec"]["template"]["spec"]
    [vllm] = pod["containers"]
    script = vllm["args"][0]
    flags, values = vllm_flags(script)
    assert flags == serve_flags
    assert {"--enable-lora", "--lora-modules", "--max-lora-rank", "--enable-auto-tool-choice"} <= flags
    assert values["--tool-call-parser"] == serve_values["--tool-call-parser"] == "hermes"
    assert "exec vllm" in script
    # The port vLLM listens on is the container's, the Service's and the probes' (GET /health).
    port = int(values["--port"])
    assert port == int(serve_values["--port"])
    assert {"name": "http", "containerPort": port} in vllm["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert vllm["resources"]["limits"][GPU] == "1"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # The export writes where vLLM reads: the same volume at the same path (lora-modules.txt has absolute paths).
    [export] = pod["initContainers"]
    assert export["command"][:3] == ["python", "-m", "slm_pipeline.serving.export"]
    target = export["command"][3]
    assert f"TARGET={target}" in script
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (export, vllm)}
    assert mounts["export"]["slm-vllm"] == mounts["vllm"]["slm-vllm"] == target
    [claim] = [v for v in pod["volumes"] if v["name"] == "slm-vllm"]
    assert claim["persistentVolumeClaim"]["claimName"] == find(VLLM, "PersistentVolumeClaim")["metadata"]["name"]
