"""A production-like stack on one machine, without Docker: every service as a process of its own.

`slm-pipeline stack up` creates the Postgres databases and roles (Dagster, MLflow, log store), then starts
an MLflow tracking server on Postgres, the Dagster code location (gRPC), `dagster-webserver` and
`dagster-daemon` on the repository's `dagster.yaml`, the logging gateway and the SLM server, and waits until
each answers its health check. `slm-pipeline stack down` stops them (SIGTERM, then SIGKILL after a grace
period). State (pids, logs, secrets, the Dagster home, the lake) lives in one folder,
`SLM_PIPELINE_STACK_HOME` (default `.slm_pipeline/stack`). Dagster-free apart from the processes it starts.
"""

from slm_pipeline.stack.config import StackConfig
from slm_pipeline.stack.stack import Stack, StackError

__all__ = ["Stack", "StackConfig", "StackError"]
