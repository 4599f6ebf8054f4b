"""What `slm-pipeline run` and `demo` show: the project's own lines on the console, the rest in the run's log.

Third-party deprecation, preview and accelerator warnings (Dagster's PreviewWarning,
transformers' FutureWarnings, DeepSpeed's "Setting accelerator to CPU", ...) and library
log records go to `$SLM_PIPELINE_HOME/logs/run-<time>.log`; each training process writes its
own `train.log` in its run folder. The Dagster UI keeps every event of every run.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from slm_pipeline.core.settings import Settings

NOISY_LOGGERS = ("py.warnings", "DeepSpeed", "deepspeed", "transformers", "torch", "datasets", "accelerate", "trl",
                 "peft", "mlflow", "alembic", "httpx", "urllib3", "filelock", "huggingface_hub", "sentence_transformers")


_handlers: list[logging.Handler] = []


class _ToRunLog(logging.Filter):
    """Sends a library's records to the run log and stops them there, before any handler the library adds
    itself sees them (DeepSpeed, for one, adds a stdout handler to its logger when it is imported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in _handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
        return False


_DIVERT = _ToRunLog()


def reroute_library_loggers() -> None:
    """Point the libraries' loggers at the run log (again: MLflow, for one, sets its own up when imported)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = list(_handlers)
        logger.propagate = False
        if _DIVERT not in logger.filters:
            logger.addFilter(_DIVERT)


def send_library_output_to_log(settings: Settings) -> Path:
    """Route warnings and library log records to a new run log file; the path (the CLI prints it)."""
    folder = settings.resolved_home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    _handlers[:] = [handler]
    reroute_library_loggers()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers' own stderr handler, here and in children
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' loading and saving bars
    return path
