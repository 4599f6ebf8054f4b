"""`slm-pipeline tools`: an agent's tool definitions, for its calls recorded without them (core/curate/tools.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from slm_pipeline.core.settings import Settings

tools_app = typer.Typer(help="Tool definitions of an agent, for calls traced without them (README, \"Bring your "
                        "traces\").", no_args_is_help=True)
err = Console(stderr=True)


def _lake():  # noqa: ANN202
    from slm_pipeline.core.lake import Lake

    return Lake(Settings().resolved_lake_url)


@tools_app.command("register")
def tools_register(
    file: Annotated[Path, typer.Argument(help="JSON: a list of OpenAI tool definitions, or {\"tools\": [...]}.")],
    agent: Annotated[str, typer.Option(help="The agent these tools belong to.")],
) -> None:
    """Register the agent's tools (replacing earlier ones): S2 completes the agent's calls that were recorded
    without their tools with them; calls that still lack a tool's definition are dropped as tools_unknown."""
    from slm_pipeline.core.curate.tools import ToolListError, register_tools

    try:
        tools = register_tools(_lake(), agent, file)
    except (ToolListError, OSError) as exc:
        err.print(f"[red]cannot register {file}:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    print(f"registered {len(tools)} tool(s) for agent {agent!r}: "
          + ", ".join(t["function"]["name"] for t in tools))


@tools_app.command("show")
def tools_show(agent: Annotated[str, typer.Option(help="The agent.")]) -> None:
    """Print the agent's registered tools as JSON."""
    from slm_pipeline.core.curate.tools import registered_tools

    tools = registered_tools(_lake(), agent)
    if tools is None:
        err.print(f"no tools registered for agent {agent!r}")
        raise typer.Exit(1)
    print(json.dumps(tools, indent=2))
