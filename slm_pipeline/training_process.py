"""The training process: `python -m slm_pipeline.training_process SPEC.json`.

The same entry point runs alone or on every rank under `deepspeed --module` (or torchrun).
Launched by the `finetuned_slm` asset through Dagster Pipes, rank 0 streams its log lines
and per-step metrics back to Dagster; the other ranks train silently. Exit codes:
0 done, 3 diverged (NaN loss), 4 out of memory, 5 learned nothing (no answer token carried
loss, or the loss did not fall: nothing is saved or registered), 130 interrupted (SIGINT or
SIGTERM; a rerun resumes from the last checkpoint), 1 any other failure; the reason is also
written to `<output_dir>/failure.json` and, by the asset, to the MLflow run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path

from slm_pipeline.core.train.config import TrainSpec
from slm_pipeline.core.train.run import PrintReporter, TrainingFailed, rank, train

EXIT_CODES = {"diverged": 3, "out_of_memory": 4, "learned_nothing": 5, "interrupted": 130, "failed": 1}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


TRAIN_LOG_ENV = "SLM_PIPELINE_TRAIN_LOG"


def console_to_log(path: Path):  # noqa: ANN201 - a text stream
    """Send everything this process writes to stdout and stderr (third-party warnings, progress bars, prints)
    to `path`, and return a stream to the original stdout for the project's own progress lines."""
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    console = io.TextIOWrapper(os.fdopen(os.dup(1), "wb", buffering=0), line_buffering=True)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return console


class ConsoleReporter(PrintReporter):
    def __init__(self, console) -> None:  # noqa: ANN001 - a text stream
        self.console = console

    def log(self, message: str) -> None:
        print(message, file=self.console, flush=True)


class PipesReporter:
    """Log lines and metrics to Dagster through Pipes (rank 0 only), and to the console."""

    def __init__(self, pipes, console=None) -> None:  # noqa: ANN001 - a dagster_pipes.PipesContext, a stream
        self.pipes, self.console = pipes, console or sys.stdout

    def log(self, message: str) -> None:
        print(message, file=self.console, flush=True)
        self.pipes.log.info(message)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.pipes.report_custom_message({"step": step, **values})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slm_pipeline.training_process",
                                     description="Fine-tune one task cluster's SLM from a TrainSpec JSON file.")
    parser.add_argument("spec", type=Path, help="TrainSpec JSON (see slm_pipeline/core/train/config.py)")
    args, _ = parser.parse_known_args(argv)  # launchers may add their own flags
    spec = TrainSpec.model_validate_json(args.spec.read_text())
    output = Path(spec.output_dir)
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped run (Ctrl-C, SIGTERM) ends as `interrupted`
    console = console_to_log(Path(os.environ[TRAIN_LOG_ENV])) if os.environ.get(TRAIN_LOG_ENV) else sys.stdout
    with ExitStack() as stack:
        reporter: PrintReporter | PipesReporter = ConsoleReporter(console)
        if rank() == 0:
            from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

            if os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):  # launched by Dagster
                reporter = PipesReporter(stack.enter_context(open_dagster_pipes()), console)
        try:
            report = train(spec, reporter)
        except TrainingFailed as exc:
            status, message = exc.status, str(exc)
        except KeyboardInterrupt as exc:
            status, message = "interrupted", f"training was interrupted ({exc or 'SIGINT'})"
        except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason
            status, message = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        else:
            if rank() == 0:
                # the machine-readable result: on stdout, which is train.log when launched by the pipeline
                print(json.dumps({"report": str(output / "report.json"), "steps": report.get("global_step")}),
                      flush=True)
            return 0
        if rank() == 0:
            output.mkdir(parents=True, exist_ok=True)
            (output / "failure.json").write_text(json.dumps({"status": status, "message": message}))
            reporter.log(f"training {status}: {message}")
        return EXIT_CODES[status]
    return 1


if __name__ == "__main__":
    sys.exit(main())
