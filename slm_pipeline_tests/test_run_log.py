"""The console of `slm-pipeline run`/`demo` shows the project's own lines; library output goes to the run log."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from slm_pipeline.core.settings import Settings
from slm_pipeline.run_log import NOISY_LOGGERS, send_library_output_to_log


@pytest.fixture
def restored_loggers(monkeypatch: pytest.MonkeyPatch):
    for key in ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(key, raising=False)  # what send_library_output_to_log sets is undone afterwards
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).filters[:], logging.getLogger(n).propagate)
             for n in NOISY_LOGGERS}
    yield
    for name, (handlers, filters, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.filters, logger.propagate = handlers, filters, propagate
    logging.captureWarnings(False)


def test_a_handler_a_library_adds_after_the_rerouting_never_reaches_the_console(
        embedded_home: Path, restored_loggers):
    path = send_library_output_to_log(Settings())
    # what DeepSpeed does when it is imported: its own stdout handler on its logger, then the accelerator line
    console = io.StringIO()
    logger = logging.getLogger("DeepSpeed")
    logger.addHandler(logging.StreamHandler(console))
    logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
    logging.getLogger("transformers.modeling_utils").warning("a library's own warning")
    for handler in logging.getLogger("DeepSpeed").handlers:
        handler.flush()
    assert console.getvalue() == ""
    written = path.read_text()
    assert "DeepSpeed: Setting accelerator to CPU" in written and "a library's own warning" in written
