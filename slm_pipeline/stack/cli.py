"""`slm-pipeline stack up|down|status|env`: the production-like local stack."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from slm_pipeline.stack.config import StackConfig
from slm_pipeline.stack.databases import DatabaseSetupError
from slm_pipeline.stack.stack import Stack, StackError

stack_app = typer.Typer(
    help="A production-like stack on this machine, without Docker: Postgres databases, MLflow, the Dagster "
         "code location, webserver and daemon, the gateway and the SLM server, each a process of its own.",
    no_args_is_help=True,
)
err = Console(stderr=True)
out = Console()

Home = Annotated[Optional[Path], typer.Option(help="State folder of the stack (default: SLM_PIPELINE_STACK_HOME, "
                                                   "else .slm_pipeline/stack).")]


def _existing(home: Path | None) -> Stack:
    try:
        return Stack.existing(home)
    except StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _print_status(stack: Stack) -> bool:
    table = Table("service", "pid", "state", "address")
    healthy = True
    for state in stack.status():
        healthy &= state.waiting_for is None
        label = "[green]ready[/green]" if state.waiting_for is None else f"[yellow]{state.waiting_for}[/yellow]"
        table.add_row(state.name, str(state.pid or ""), label, state.url)
    out.print(table)
    return healthy


@stack_app.command("up")
def up(
    home: Home = None,
    admin_url: Annotated[Optional[str], typer.Option(
        help="Postgres role that may create databases and roles (default: SLM_PIPELINE_STACK_ADMIN_URL, "
             "else postgresql://postgres@127.0.0.1:5432/postgres).")] = None,
    database_prefix: Annotated[Optional[str], typer.Option(
        help="Prefix of the databases and roles (default slm_stack).")] = None,
    upstream: Annotated[Optional[str], typer.Option(
        help="The LLM the gateway forwards to, with its /v1 (default: SLM_PIPELINE_GATEWAY_UPSTREAM_URL, "
             "else OpenAI; its key from SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY).")] = None,
    dagster_port: Annotated[Optional[int], typer.Option(help="dagster-webserver (default 3000).")] = None,
    mlflow_port: Annotated[Optional[int], typer.Option(help="MLflow server (default 5000).")] = None,
    gateway_port: Annotated[Optional[int], typer.Option(help="Gateway (default 8080).")] = None,
    serving_port: Annotated[Optional[int], typer.Option(help="SLM server (default 8100).")] = None,
    code_server_port: Annotated[Optional[int], typer.Option(help="Dagster code location, gRPC (default 4266).")
                                ] = None,
) -> None:
    """Create what is missing (databases, roles, secrets), start what is not running, wait until all are ready.

    Safe to run again. Stop with `slm-pipeline stack down`."""
    given = {"home": home, "admin_url": admin_url, "database_prefix": database_prefix, "upstream_url": upstream,
             "dagster_port": dagster_port, "mlflow_port": mlflow_port, "gateway_port": gateway_port,
             "serving_port": serving_port, "code_server_port": code_server_port}
    stack = Stack(StackConfig(**{k: v for k, v in given.items() if v is not None}))
    try:
        stack.up(report=lambda line: err.print(line))
    except (StackError, DatabaseSetupError) as exc:
        err.print(f"[red]the stack did not start:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_status(stack)
    c = stack.config
    out.print(f"Dagster UI {c.url(c.dagster_port)} · MLflow {c.url(c.mlflow_port)} · "
              f"agents' base_url {c.url(c.gateway_port, '/v1')} (keys: `slm-pipeline keys create`)\n"
              f"Point a shell at this stack: eval \"$(slm-pipeline stack env --home {stack.home})\"")


@stack_app.command("down")
def down(
    home: Home = None,
    purge: Annotated[bool, typer.Option(
        help="Also drop the stack's databases and roles and delete its folder (all its data).")] = False,
) -> None:
    """Stop every service of the stack: SIGTERM, then SIGKILL after a grace period."""
    stack = _existing(home)
    stack.down(purge=purge, report=lambda line: err.print(line))


@stack_app.command("status")
def status(home: Home = None) -> None:
    """Each service's process and health; exit status 1 unless all are ready."""
    if not _print_status(_existing(home)):
        raise typer.Exit(1)


@stack_app.command("env")
def env(home: Home = None) -> None:
    """Print `export` lines that point `slm-pipeline` and `dagster` commands at the stack.

    Use it as eval "$(slm-pipeline stack env)", e.g. to import traffic or create agent keys."""
    for name, value in _existing(home).environment().items():
        print(f"export {name}={shlex.quote(value)}")
