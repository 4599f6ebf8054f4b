"""GPU pods on Kubernetes: the `dagster-k8s/config` tag of the steps and runs that need an accelerator.

dagster-k8s reads the tag `dagster-k8s/config` (a JSON object) and merges it into the Job it creates:
the K8sRunLauncher reads it from a job's run tags (one pod per run), the `k8s_job_executor` from an op's
(an asset's) `op_tags` (one pod per step). Anywhere else (`slm-pipeline run`, `dagster dev`, the tests) the
tag is inert. Settings, read when the Definitions load (in the user code deployment), with their defaults:

    SLM_PIPELINE_K8S_GPUS=1                  GPUs per training/evaluation pod (`resources.limits`); 0: no tag
    SLM_PIPELINE_K8S_RUN_GPUS=<K8S_GPUS>     GPUs of the retrain_job's run pod; set 0 with the k8s_job_executor,
                                             where the step pods hold the GPUs and the run pod only orchestrates
    SLM_PIPELINE_K8S_GPU_RESOURCE=nvidia.com/gpu
                                             extended resource name (amd.com/gpu on AMD); also the taint tolerated
    SLM_PIPELINE_K8S_GPU_NODE_SELECTOR=nvidia.com/gpu.present=true
                                             `key=value[,key=value]` node labels (NVIDIA GPU feature discovery's
                                             label by default; e.g. cloud.google.com/gke-accelerator=nvidia-l4);
                                             empty: no node selector
    SLM_PIPELINE_K8S_GPU_CPU=4               CPU request
    SLM_PIPELINE_K8S_GPU_MEMORY=32Gi         memory request and limit (weights load in host memory first)
    SLM_PIPELINE_K8S_SHM_SIZE=8Gi            size of the in-memory /dev/shm (NCCL and DataLoader workers need
                                             more than the container default of 64Mi); empty: none
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

TAG = "dagster-k8s/config"
DEFAULTS = {
    "SLM_PIPELINE_K8S_GPUS": "1",
    "SLM_PIPELINE_K8S_GPU_RESOURCE": "nvidia.com/gpu",
    "SLM_PIPELINE_K8S_GPU_NODE_SELECTOR": "nvidia.com/gpu.present=true",
    "SLM_PIPELINE_K8S_GPU_CPU": "4",
    "SLM_PIPELINE_K8S_GPU_MEMORY": "32Gi",
    "SLM_PIPELINE_K8S_SHM_SIZE": "8Gi",
}


def _setting(env: Mapping[str, str], name: str) -> str:
    return env.get(name, DEFAULTS[name]).strip()


def _gpus(value: str, name: str) -> int:
    try:
        gpus = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number of GPUs") from None
    if gpus < 0:
        raise ValueError(f"{name}={value!r}: expected 0 or more GPUs")
    return gpus


def node_selector(value: str) -> dict[str, str]:
    """`a=b,c=d` -> {"a": "b", "c": "d"}; an empty string selects no labels."""
    labels = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, label = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"SLM_PIPELINE_K8S_GPU_NODE_SELECTOR: {item!r} is not key=value")
        labels[key.strip()] = label.strip()
    return labels


def gpu_pod_config(gpus: int, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `dagster-k8s/config` value of a pod with `gpus` accelerators (snake_case, as dagster-k8s takes it)."""
    env = os.environ if env is None else env
    resource = _setting(env, "SLM_PIPELINE_K8S_GPU_RESOURCE")
    memory, cpu, shm = (_setting(env, f"SLM_PIPELINE_K8S_{n}") for n in ("GPU_MEMORY", "GPU_CPU", "SHM_SIZE"))
    requests = {key: value for key, value in (("cpu", cpu), ("memory", memory)) if value}
    limits = {resource: str(gpus), **({"memory": memory} if memory else {})}
    container: dict[str, Any] = {"resources": {"requests": requests, "limits": limits}}
    pod: dict[str, Any] = {
        # GPU node pools are usually tainted `<resource>:NoSchedule` so that only pods that ask for one land there
        "tolerations": [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}],
    }
    if selector := node_selector(_setting(env, "SLM_PIPELINE_K8S_GPU_NODE_SELECTOR")):
        pod["node_selector"] = selector
    if shm:
        pod["volumes"] = [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": shm}}]
        container["volume_mounts"] = [{"name": "dshm", "mount_path": "/dev/shm"}]
    return {"container_config": container, "pod_spec_config": pod}


def gpu_step_tags(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`op_tags` of an asset that trains or runs models (read by the k8s_job_executor); {} with 0 GPUs."""
    env = os.environ if env is None else env
    gpus = _gpus(_setting(env, "SLM_PIPELINE_K8S_GPUS"), "SLM_PIPELINE_K8S_GPUS")
    return {TAG: gpu_pod_config(gpus, env)} if gpus else {}


def gpu_run_tags(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run `tags` of a job that trains (read by the K8sRunLauncher); {} with 0 GPUs."""
    env = os.environ if env is None else env
    value = env.get("SLM_PIPELINE_K8S_RUN_GPUS", "").strip() or _setting(env, "SLM_PIPELINE_K8S_GPUS")
    gpus = _gpus(value, "SLM_PIPELINE_K8S_RUN_GPUS")
    return {TAG: gpu_pod_config(gpus, env)} if gpus else {}
